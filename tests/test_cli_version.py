"""``plinth --version`` and shell completion of environment and stack names."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from click.testing import CliRunner

from plinth.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    installed = importlib.metadata.version("plinth")
    assert result.stdout == f"plinth {installed}\n"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    # an installed plinth older than the checkout needs a `pip install -e .` again
    assert installed == declared


def complete(words: str) -> list[str]:
    """What bash completion offers after ``words`` (click's bash_complete protocol)."""
    args = words.split()
    current = len(args) if words.endswith(" ") else len(args) - 1
    result = CliRunner().invoke(
        main,
        [],
        prog_name="plinth",
        env={"_PLINTH_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(current)},
    )
    assert result.exit_code == 0
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_environment_and_stack_names_complete_from_the_inventory(project: Path) -> None:
    (project / "inventory" / "broken.yaml").write_text("datacenters: [\n")
    assert complete("plinth validate ex") == ["example-prod"]
    assert complete("plinth pki init ") == ["broken", "example-prod"]
    assert complete("plinth up example-prod") == [
        "example-prod",
        "example-prod-dc1",
        "example-prod-dc2",
    ]
    assert complete("plinth status example-prod-dc2") == ["example-prod-dc2"]
    assert complete("plinth preview b") == ["broken"]  # its stacks cannot be read: none offered
