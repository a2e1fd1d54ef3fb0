"""One node converged: its daemon started and answering, its ACL users reloaded, its
runtime settings (``CONFIG SET``) and its Sentinel's parameters (``SENTINEL SET``)."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.systemd import SystemdStatus

from facts.redis import RedisReplication, SentinelReport, SentinelState
from operations.redis.settings import (
    PEERS_WAIT_SECONDS,
    READY_WAIT_SECONDS,
    runtime_settings,
    sentinel_settings,
    setting_difference,
)
from plinth.reasons import explain_change
from plinth.topology.redis import AUTH_DIR, RedisInput


def _running(unit: str) -> bool:
    return bool(host.get_fact(SystemdStatus).get(unit))


@operation()
def started(unit: str) -> Generator[StringCommand, None, None]:
    """Start ``unit`` where it is not running (a running one is rolled, not restarted)."""
    if _running(unit):
        host.noop(f"{unit} is running")
        return
    yield StringCommand("systemctl", "start", unit)


def _local_sentinel(spec: RedisInput) -> SentinelReport | None:
    """This host's Sentinel as it sees itself (None when it does not answer)."""
    view = host.get_fact(
        SentinelState,
        tls=spec.cli("sentinel"),
        addresses=(spec.address,),
        port=spec.settings.sentinel_port,
        master=spec.master_name,
    )
    return view.sentinels[0] if view is not None and view.sentinels else None


@operation()
def answering(spec: RedisInput, sentinel: bool) -> Generator[StringCommand, None, None]:
    """Wait until the local daemon answers over TLS (a replica: its master link is up;
    a Sentinel: it monitors the master set)."""
    if sentinel:
        mine = _local_sentinel(spec)
        if mine is not None and mine.master is not None and mine.quorum_ok:
            host.noop(f"sentinel monitors {spec.master_name} at {mine.master[0]}, quorum OK")
            return
        probe = spec.redis_cli(
            spec.address, "SENTINEL", "CKQUORUM", spec.master_name, user="sentinel"
        )
        # A new Sentinel finds its peers through their hello messages (every 2 s): wait
        # until it sees all of them, or at least a quorum after PEERS_WAIT_SECONDS.
        check = (
            f'out="$({probe} 2>/dev/null)"; case "$out" in "OK {len(spec.sentinels)} usable"*) '
            f"exit 0;; OK*) [ $i -ge {PEERS_WAIT_SECONDS} ] && exit 0;; esac; false"
        )
    else:
        state = host.get_fact(
            RedisReplication,
            tls=spec.cli("default"),
            addresses=(spec.address,),
            port=spec.settings.port,
        )
        node = state.nodes[0] if state is not None and state.nodes else None
        if node is not None and node.up and (node.role == "master" or node.master_link_up):
            host.noop(f"redis is {node.role}")
            return
        probe = spec.redis_cli(spec.address, "INFO", "replication")
        check = f"{probe} 2>/dev/null | grep -Eq '^(role:master|master_link_status:up)'"
    what = "sentinel" if sentinel else "redis"
    unit = spec.store.sentinel_unit if sentinel else spec.store.server_unit
    yield StringCommand(
        f"for i in $(seq {READY_WAIT_SECONDS}); do {check} && exit 0; sleep 1; done; "
        f'echo "error: {what} on {spec.name} not ready after {READY_WAIT_SECONDS} s; '
        f'see journalctl -u {unit}" >&2; exit 1'
    )


@operation(is_idempotent=False)
def users_reloaded(spec: RedisInput) -> Generator[StringCommand, None, None]:
    """After ``users.acl`` changed on a running node: ``ACL LOAD`` and the replication
    password a replica presents (``masterauth``, read from the root-only file)."""
    if not _running(spec.store.server_unit):
        host.noop("redis not running yet")
        return
    cli = spec.redis_cli
    yield StringCommand(f"{cli(spec.address, 'ACL', 'LOAD')} | grep -qx OK")
    yield StringCommand(
        f"{cli(spec.address, '-x', 'CONFIG', 'SET', 'masterauth')} "
        f"< {AUTH_DIR}/replication.auth | grep -qx OK && "
        f"{cli(spec.address, 'CONFIG', 'REWRITE')} | grep -qx OK"
    )


@operation()
def runtime_config(spec: RedisInput) -> Generator[StringCommand, None, None]:
    """Bring the node's runtime settings to the model: ``CONFIG SET`` + ``CONFIG REWRITE``
    (Redis writes them into its own file, keeping its ``replicaof``)."""
    state = host.get_fact(
        RedisReplication,
        tls=spec.cli("default"),
        addresses=(spec.address,),
        port=spec.settings.port,
    )
    mine = state.nodes[0] if state is not None and state.nodes else None
    if mine is None or not mine.up:
        host.noop("redis not answering yet: its bootstrap file has the model's settings")
        return
    change = setting_difference(
        mine.settings, runtime_settings(spec.settings, spec.replica_priority)
    )
    if not change:
        host.noop("runtime settings match the model")
        return
    explain_change("CONFIG SET " + ", ".join(f"{k}={v}" for k, v in change.items()))
    pairs = [item for kv in change.items() for item in kv]
    yield StringCommand(
        f"{spec.redis_cli(spec.address, 'CONFIG', 'SET', *pairs)} | grep -qx OK && "
        f"{spec.redis_cli(spec.address, 'CONFIG', 'REWRITE')} | grep -qx OK"
    )


@operation()
def monitoring_config(spec: RedisInput) -> Generator[StringCommand, None, None]:
    """Bring this Sentinel's parameters for the master set to the model (``SENTINEL SET``;
    Sentinel records them in its own file). Each Sentinel is set on its own host."""
    mine = _local_sentinel(spec)
    if mine is None or mine.master is None:
        host.noop("sentinel not monitoring yet: its bootstrap file has the model's settings")
        return
    change = setting_difference(mine.settings, sentinel_settings(spec.settings))
    if not change:
        host.noop("sentinel parameters match the model")
        return
    explain_change("SENTINEL SET " + ", ".join(f"{k}={v}" for k, v in change.items()))
    for key, value in change.items():
        command = spec.redis_cli(
            spec.address, "SENTINEL", "SET", spec.master_name, key, value, user="sentinel"
        )
        yield StringCommand(f"{command} | grep -qx OK")
