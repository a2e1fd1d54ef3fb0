"""``redis.conf`` and ``sentinel.conf`` (the release's names: :attr:`.RedisInput.store`),
written once at bootstrap with the master the cell has at that moment; afterwards they
belong to Redis and Sentinel."""

from __future__ import annotations

import shlex
from collections.abc import Generator
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation
from pyinfra.facts.files import FindInFile

from operations.redis.live import current_master
from operations.redis.settings import (
    Passwords,
    render_redis_conf,
    render_sentinel_conf,
)
from plinth.reasons import explain_change
from plinth.releases import KeyValueStore
from plinth.rolling import note, refuse, run
from plinth.topology.redis import RedisInput


def upload_command(store: KeyValueStore, candidate: str, path: str, mode: str) -> str:
    """The uploaded ``candidate`` made the daemon's ``path``: its user's, ``mode``."""
    q = shlex.quote
    return (
        f"chown {q(store.user)}:{q(store.group)} {q(candidate)} && chmod {mode} {q(candidate)} "
        f"&& mv -f {q(candidate)} {q(path)}"
    )


def _upload(target: Any, store: KeyValueStore, text: str, path: str, mode: str) -> bool:
    candidate = f"{path}.plinth-candidate"
    if not target.put_file(StringIO(text), candidate, print_output=False, print_input=False):
        return False
    ok, _, _ = run(target, upload_command(store, candidate, path, mode))
    return ok


def bootstrap_master(spec: RedisInput, found: tuple[str, int] | None) -> tuple[str, int] | None:
    """The ``replicaof`` target written at bootstrap (None: this node starts as master).

    ``found`` is the master the cell has now (:func:`current_master`; in a following DC,
    the active DC's cell). Without one, the model decides: the (active) DC's first node.
    A node of a following DC is always a replica, even if the active DC does not answer.
    """
    cell = spec.upstream_cell()
    master = found or (cell.redis_nodes[0], spec.settings.port)
    return None if master[0] == spec.address else master


def _bootstrap_redis(state: Any, host: Any, spec: RedisInput, passwords: Passwords) -> bool:
    """Execute-time: write redis.conf following the master the cell has right now (in a
    following DC: the active DC's master)."""
    master = bootstrap_master(spec, current_master(host, spec.upstream_cell()))
    store = spec.store
    path = store.server_config
    if not _upload(host, store, render_redis_conf(spec, passwords, master), path, "640"):
        return refuse(host, f"could not write {path}")
    role = f"replica of {master[0]}" if master else "master"
    if spec.upstream is not None:
        role += f" (dc {spec.upstream.datacenter}, replica-priority 0)"
    note(host, f"{store.server_config_name} bootstrapped ({role})")
    return True


def _bootstrap_sentinel(state: Any, host: Any, spec: RedisInput, passwords: Passwords) -> bool:
    """Execute-time: write sentinel.conf monitoring the master the cell has right now."""
    master = current_master(host, spec) or (spec.redis_nodes[0], spec.settings.port)
    store = spec.store
    path = store.sentinel_config
    if not _upload(host, store, render_sentinel_conf(spec, passwords, master), path, "640"):
        return refuse(host, f"could not write {path}")
    note(
        host,
        f"{store.sentinel_config_name} bootstrapped, monitoring {spec.master_name} at {master[0]}",
    )
    return True


def _bootstrapped(spec: RedisInput, path: str) -> bool:
    lines = host.get_fact(FindInFile, path=path, pattern=spec.marker, interpolate_variables=False)
    return bool(lines)


@operation()
def bootstrap_config(
    spec: RedisInput, passwords: Passwords, sentinel: bool
) -> Generator[FunctionCommand, None, None]:
    """Write redis.conf (or sentinel.conf; the release's files) once; leave a bootstrapped
    file to its daemon.

    The master is looked up when the operation runs (Sentinels first, then the data
    nodes): a node replaced after a failover joins the current master.
    """
    path = spec.store.sentinel_config if sentinel else spec.store.server_config
    if _bootstrapped(spec, path):
        owner = "Sentinel" if sentinel else spec.store.product
        host.noop(f"{path} bootstrapped: owned by {owner} now")
        return
    explain_change(f"{path}: bootstrap (Debian's default file)")
    callback = _bootstrap_sentinel if sentinel else _bootstrap_redis
    yield FunctionCommand(callback, (spec, passwords), {})
