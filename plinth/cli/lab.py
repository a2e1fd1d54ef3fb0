"""``plinth lab ...``: the containerised test inventory (owned by plinth.lab)."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """The lab: the platform on local systemd containers reached over SSH."""
