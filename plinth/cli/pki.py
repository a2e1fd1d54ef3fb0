"""``plinth pki ...`` and ``plinth secrets ...``."""

from __future__ import annotations

import click


@click.group()
def pki() -> None:
    """The platform PKI: offline root, per-DC intermediates, leaves issued on the hosts."""


@click.group()
def secrets() -> None:
    """Encrypted secrets stored beside the environment."""
