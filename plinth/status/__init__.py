"""``plinth status``: each DC's cells, edge and VIPs, read live from its hosts.

The status layer reads the model, ``plinth.topology`` and ``facts``, never ``operations``
(``tests/test_layers.py``): :mod:`plinth.status.collect` reads a stack, :mod:`.render`
prints it, :mod:`.health` judges it and waits for it.
"""

from __future__ import annotations

from plinth.status.collect import (
    add_standby_lag,
    collect,
    collect_all,
    host_certificate,
    patroni_api,
)
from plinth.status.health import Unhealthy, healthy, wait_healthy
from plinth.status.render import render

__all__ = [
    "Unhealthy",
    "add_standby_lag",
    "collect",
    "collect_all",
    "healthy",
    "host_certificate",
    "patroni_api",
    "render",
    "wait_healthy",
]
