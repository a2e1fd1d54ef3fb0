"""Shell completion of environment and stack names (click's own mechanism).

Enabled by the operator's shell, e.g. ``eval "$(_PLINTH_COMPLETE=bash_source plinth)"``
(see README.md). Completing must stay instant and must never fail loudly: names come
from ``inventory/*.yaml`` and, for stacks, the datacenter names read from those files
without validating them.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml
from click.shell_completion import CompletionItem

from plinth.stacks import environment_file, known_environments


def _datacenter_names(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text())
        return [str(dc["name"]) for dc in data["datacenters"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []  # a broken file is for `plinth validate` to report, not completion


def complete_environments(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Environment names: ``inventory/<name>.yaml``."""
    return [CompletionItem(n) for n in known_environments() if n.startswith(incomplete)]


def complete_stacks(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Environments and their stacks ``<env>-<dc>``; only files that can match are read."""
    names: list[str] = []
    for environment in known_environments():
        if not (environment.startswith(incomplete) or incomplete.startswith(environment)):
            continue
        names.append(environment)
        dcs = _datacenter_names(environment_file(environment))
        names += [f"{environment}-{dc}" for dc in dcs]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]
