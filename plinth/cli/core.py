"""Core commands: validate, preview, up, outputs."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach the core commands to the top-level group."""
