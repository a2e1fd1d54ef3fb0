"""``python -m plinth``: the CLI (the lab runs `status` in a fresh process with it)."""

from plinth.cli import main

main()
