"""Options several commands share, spelled once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def progress_option(shows: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--progress auto|plain|json|off`` (stderr); ``shows`` says what the command reports."""
    return click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(["auto", "plain", "json", "off"]),
        default="auto",
        show_default=True,
        help=f"Progress on stderr: {shows}. A live line on a terminal (auto), a line per "
        "step (plain, for CI logs; auto when not a terminal), JSON events, or none.",
    )
