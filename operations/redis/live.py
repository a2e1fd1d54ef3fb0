"""The cell read live at execute time (from operation callbacks, right before a step),
with the same commands and parsers as the facts."""

from __future__ import annotations

from typing import Any

from facts.redis import (
    ReplicationState,
    SentinelView,
    parse_replication,
    parse_sentinels,
    replication_command,
    sentinel_command,
)
from plinth.rolling import run
from plinth.topology.redis import RedisInput


def read_replication(target: Any, spec: RedisInput) -> ReplicationState | None:
    command = replication_command(spec.cli("default"), spec.redis_nodes, spec.settings.port)
    ok, out, _ = run(target, command, timeout=60)
    return parse_replication(out) if ok else None


def read_sentinels(target: Any, spec: RedisInput) -> SentinelView | None:
    if not spec.cell_sentinels:
        return SentinelView(())
    command = sentinel_command(
        spec.cli("sentinel"), spec.cell_sentinels, spec.settings.sentinel_port, spec.master_name
    )
    ok, out, _ = run(target, command, timeout=60)
    return parse_sentinels(out) if ok else None


def current_master(target: Any, spec: RedisInput) -> tuple[str, int] | None:
    """The master the cell has now: the one the Sentinels agree on, else the only master
    with replicas; None for a cell that does not run yet."""
    view = read_sentinels(target, spec)
    if view is not None and view.master is not None:
        return view.master
    state = read_replication(target, spec)
    if state is not None:
        serving = [n for n in state.masters if n.replicas]
        if len(serving) == 1:
            return (serving[0].address, spec.settings.port)
    return None
