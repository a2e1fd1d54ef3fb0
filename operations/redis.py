"""Redis + Sentinel: one master, its replicas and three Sentinels in the active
datacenter; every other DC's data nodes are ``replica-priority 0`` replicas of the active
DC's master (bootstrapped so, then re-pointed by the active DC's Sentinels only) and its
Sentinels stay stopped (see docs/components/redis.md).

TLS only: the plaintext ports are 0, clients must present a certificate chaining to
the platform root (``tls-auth-clients yes``), replication and Sentinel speak TLS too.
Three ACL users (``default`` for applications and operators, ``replication``,
``sentinel``) carry passwords from the encrypted secrets.

What plinth writes and what it leaves to the daemons (they rewrite their own files):

* the systemd drop-ins (settings fixed at start: ports, TLS files, ACL file, I/O
  threads) and ``users.acl`` are ours, rewritten on every run;
* ``redis.conf`` and ``sentinel.conf`` are written once, at bootstrap, with the master
  that the Sentinels (or, for a new cell, the model) name at that moment; afterwards
  they belong to Redis and Sentinel: replication and monitoring settings are changed at
  runtime (``CONFIG SET`` + ``CONFIG REWRITE``, ``SENTINEL SET``), never by rewriting the
  file, so a deploy never undoes a failover;
* a node whose running process differs from the drop-in (or from the installed package
  version) is restarted by :func:`rolling_restart`: replicas, then Sentinels one by
  one with ``SENTINEL CKQUORUM`` passing, then ``SENTINEL FAILOVER``, then the old
  master, each step gated on the live cluster.

Passwords reach the hosts only inside uploaded files (compared by checksum) and root-only
files that ``redis-cli`` reads (``REDISCLI_AUTH``): never in an argument, a log or a plan.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Generator
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackage
from pyinfra.facts.files import FindInFile
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

from facts.base import ContainerRuntime
from facts.redis import (
    RedisReplication,
    ReplicationState,
    SentinelReport,
    SentinelState,
    SentinelView,
    cell_problems,
    parse_replication,
    parse_sentinels,
    replication_command,
    sentinel_command,
)
from plinth.certificates import CertificateSpec
from plinth.context import HostContext, read_secrets
from plinth.model import RedisSettings
from plinth.reasons import explain_change
from plinth.render import render_template
from plinth.rolling import note, refuse, run, wait_for
from plinth.topology.redis import AUTH_DIR, RedisInput

REDIS_CONF = "/etc/redis/redis.conf"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
ACL_FILE = "/etc/redis/users.acl"
REDIS_UNIT = "redis-server.service"
SENTINEL_UNIT = "redis-sentinel.service"
DROP_IN = "/etc/systemd/system/{unit}.d/plinth.conf"
READY_WAIT_SECONDS = 90
PEERS_WAIT_SECONDS = 30
SECRET_NAMES = {
    "default": "redis-default-password",
    "replication": "redis-replication-password",
    "sentinel": "redis-sentinel-password",
}


class Passwords:
    """The three Redis passwords; ``repr`` never shows them (FunctionCommand arguments
    are printed in debug logs)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, user: str) -> str:
        return self._values[user]

    def __repr__(self) -> str:
        return "<redis passwords>"

    def acl_hashes(self) -> dict[str, str]:
        """SHA-256 of each password: ``users.acl`` stores hashes, not the passwords."""
        return {user: hashlib.sha256(pw.encode()).hexdigest() for user, pw in self._values.items()}


def static_settings(spec: RedisInput) -> dict[str, str]:
    """Settings fixed at start, as ``CONFIG GET`` reports them on a data node."""
    tls = spec.redis_tls
    if tls is None:
        return {}
    return {
        "port": "0",
        "tls-port": str(spec.settings.port),
        "tls-cert-file": tls.chain_path,
        "tls-key-file": tls.key_path,
        "tls-ca-cert-file": tls.ca_path,
        "tls-auth-clients": "yes",
        "tls-replication": "yes",
        "aclfile": ACL_FILE,
        "io-threads": str(spec.settings.io_threads),
    }


def runtime_settings(settings: RedisSettings, replica_priority: int) -> dict[str, str]:
    """Settings changed with ``CONFIG SET`` (values as ``CONFIG GET`` prints them)."""
    return {
        "min-replicas-to-write": str(settings.min_replicas_to_write),
        "min-replicas-max-lag": str(settings.min_replicas_max_lag),
        "maxmemory": str(settings.maxmemory_mb * 1024 * 1024),
        "maxmemory-policy": settings.maxmemory_policy,
        "replica-priority": str(replica_priority),
    }


def sentinel_settings(settings: RedisSettings) -> dict[str, str]:
    """Monitoring parameters changed with ``SENTINEL SET`` (names as ``SENTINEL MASTER``
    prints them)."""
    return {
        "quorum": str(settings.quorum),
        "down-after-milliseconds": str(settings.down_after_milliseconds),
        "failover-timeout": str(settings.failover_timeout_milliseconds),
        "parallel-syncs": str(settings.parallel_syncs),
    }


def setting_difference(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    """The settings of ``wanted`` whose live value differs (missing counts as different)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def command_line(spec: RedisInput, tls: CertificateSpec, port: int, data_node: bool) -> str:
    """Arguments of the drop-in's ``ExecStart`` (no secrets)."""
    args = [
        ("bind", spec.address),
        # Outgoing connections (replication, Sentinel) leave from the node's own address:
        # the address Sentinel and the master record, and the certificate names.
        ("bind-source-addr", spec.address),
        ("port", "0"),
        ("tls-port", str(port)),
        ("tls-cert-file", tls.chain_path),
        ("tls-key-file", tls.key_path),
        ("tls-ca-cert-file", tls.ca_path),
        ("tls-auth-clients", "yes"),
        ("tls-replication", "yes"),
    ]
    if data_node:
        args += [("aclfile", ACL_FILE), ("io-threads", str(spec.settings.io_threads))]
    return " ".join(f"--{key} {shlex.quote(value)}" for key, value in args)


def render_redis_conf(
    spec: RedisInput, passwords: Passwords, master: tuple[str, int] | None
) -> str:
    return render_template(
        "redis/etc/redis/redis.conf.j2",
        marker=spec.marker,
        settings=spec.settings,
        replication_password=passwords["replication"],
        replica_priority=spec.replica_priority,
        master=master,
    )


def render_sentinel_conf(spec: RedisInput, passwords: Passwords, master: tuple[str, int]) -> str:
    return render_template(
        "redis/etc/redis/sentinel.conf.j2",
        marker=spec.marker,
        settings=spec.settings,
        sentinel_password=passwords["sentinel"],
        master_name=spec.master_name,
        master=master,
    )


def read_passwords(context: HostContext) -> Passwords:
    """The Redis passwords from the environment's encrypted secrets."""
    return Passwords(read_secrets(context, SECRET_NAMES))


# --- reading the cell live (execute time) -------------------------------------------


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


def _upload(target: Any, text: str, path: str, mode: str) -> bool:
    candidate = f"{path}.plinth-candidate"
    if not target.put_file(StringIO(text), candidate, print_output=False, print_input=False):
        return False
    ok, _, _ = run(
        target,
        f"chown redis:redis {shlex.quote(candidate)} && chmod {mode} {shlex.quote(candidate)} "
        f"&& mv -f {shlex.quote(candidate)} {shlex.quote(path)}",
    )
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
    if not _upload(host, render_redis_conf(spec, passwords, master), REDIS_CONF, "640"):
        return refuse(host, f"could not write {REDIS_CONF}")
    role = f"replica of {master[0]}" if master else "master"
    if spec.upstream is not None:
        role += f" (dc {spec.upstream.datacenter}, replica-priority 0)"
    note(host, f"redis.conf bootstrapped ({role})")
    return True


def _bootstrap_sentinel(state: Any, host: Any, spec: RedisInput, passwords: Passwords) -> bool:
    """Execute-time: write sentinel.conf monitoring the master the cell has right now."""
    master = current_master(host, spec) or (spec.redis_nodes[0], spec.settings.port)
    if not _upload(host, render_sentinel_conf(spec, passwords, master), SENTINEL_CONF, "640"):
        return refuse(host, f"could not write {SENTINEL_CONF}")
    note(host, f"sentinel.conf bootstrapped, monitoring {spec.master_name} at {master[0]}")
    return True


def _bootstrapped(spec: RedisInput, path: str) -> bool:
    lines = host.get_fact(FindInFile, path=path, pattern=spec.marker, interpolate_variables=False)
    return bool(lines)


@operation()
def bootstrap_config(
    spec: RedisInput, passwords: Passwords, sentinel: bool
) -> Generator[FunctionCommand, None, None]:
    """Write redis.conf (or sentinel.conf) once; leave a bootstrapped file to its daemon.

    The master is looked up when the operation runs (Sentinels first, then the data
    nodes): a node replaced after a failover joins the current master.
    """
    path = SENTINEL_CONF if sentinel else REDIS_CONF
    if _bootstrapped(spec, path):
        host.noop(f"{path} bootstrapped: owned by {'Sentinel' if sentinel else 'Redis'} now")
        return
    explain_change(f"{path}: bootstrap (Debian's default file)")
    callback = _bootstrap_sentinel if sentinel else _bootstrap_redis
    yield FunctionCommand(callback, (spec, passwords), {})


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
    yield StringCommand(
        f"for i in $(seq {READY_WAIT_SECONDS}); do {check} && exit 0; sleep 1; done; "
        f'echo "error: {what} on {spec.name} not ready after {READY_WAIT_SECONDS} s; '
        f'see journalctl -u {SENTINEL_UNIT if sentinel else REDIS_UNIT}" >&2; exit 1'
    )


@operation(is_idempotent=False)
def users_reloaded(spec: RedisInput) -> Generator[StringCommand, None, None]:
    """After ``users.acl`` changed on a running node: ``ACL LOAD`` and the replication
    password a replica presents (``masterauth``, read from the root-only file)."""
    if not _running(REDIS_UNIT):
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


# --- rolling restart ------------------------------------------------------------------


def installed_version() -> str | None:
    """Upstream version of the installed redis-server package (``5:7.0.15-1~deb12u1`` →
    ``7.0.15``)."""
    package = host.get_fact(DebPackage, package="redis-server")
    if not package:
        return None
    version = str(package.get("version", ""))
    return version.split(":", 1)[-1].split("-", 1)[0] or None


@dataclass(frozen=True)
class RollPlan:
    """What a roll would restart, read from the live cell."""

    data_nodes: tuple[str, ...]
    sentinels: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.data_nodes or self.sentinels)

    def describe(self) -> str:
        parts = [f"redis {', '.join(self.data_nodes)}"] if self.data_nodes else []
        parts += [f"sentinel {', '.join(self.sentinels)}"] if self.sentinels else []
        return "; ".join(parts)


def roll_plan(
    spec: RedisInput,
    state: ReplicationState | None,
    view: SentinelView | None,
    version: str | None,
) -> RollPlan:
    data = state.pending_restart(static_settings(spec), version) if state else []
    sentinels = []
    if view is not None:
        for s in view.sentinels:
            if s.up and version and s.version and s.version != version:
                sentinels.append(f"{s.address} (runs {s.version}, {version} installed)")
    return RollPlan(tuple(data), tuple(sentinels))


def _address(entry: str) -> str:
    return entry.split(" ", 1)[0]


class _Roll:
    """The choreography, run from one host against every node over TLS."""

    def __init__(self, host: Any, spec: RedisInput, version: str | None) -> None:
        self.host = host
        self.spec = spec
        self.version = version

    def read(self) -> tuple[ReplicationState | None, SentinelView | None]:
        return read_replication(self.host, self.spec), read_sentinels(self.host, self.spec)

    def gate(self, what: str) -> tuple[ReplicationState, SentinelView] | None:
        state, view = self.read()
        problems = cell_problems(state, view, self.spec.upstream_addresses)
        if problems or state is None or view is None:
            refuse(self.host, f"{what} refused: {'; '.join(problems)}; nothing was changed")
            return None
        return state, view

    def shutdown(self, address: str, sentinel: bool) -> None:
        """Stop the daemon with its own SHUTDOWN; systemd starts it again (Restart=always).
        The connection closes under redis-cli: its exit status says nothing."""
        user = "sentinel" if sentinel else "default"
        run(self.host, f"{self.spec.redis_cli(address, 'SHUTDOWN', user=user)} || true")

    def healthy_after_restart(self, address: str, before: str | None, sentinel: bool) -> bool:
        """Wait until ``address`` runs a new process (run_id changed) and the cell is healthy."""

        def probe() -> bool:
            state, view = self.read()
            upstream = self.spec.upstream_addresses
            if state is None or view is None or cell_problems(state, view, upstream):
                return False
            if sentinel:
                now = next((s.run_id for s in view.sentinels if s.address == address), None)
            else:
                node = state.node(address)
                now = node.run_id if node else None
            return now is not None and now != before

        return bool(wait_for(probe, READY_WAIT_SECONDS)[0])

    def restart_data_node(self, address: str, what: str) -> bool:
        gated = self.gate(f"restart of {what} {address}")
        if gated is None:
            return False
        node = gated[0].node(address)
        note(self.host, f"redis: restarting {what} {address}")
        started = time.monotonic()
        self.shutdown(address, sentinel=False)
        if not self.healthy_after_restart(address, node.run_id if node else None, False):
            return refuse(self.host, f"redis {address} did not come back healthy; stopping here")
        note(self.host, f"redis: {address} back and linked in {time.monotonic() - started:.1f} s")
        return True

    def restart_sentinel(self, address: str) -> bool:
        gated = self.gate(f"restart of sentinel {address}")
        if gated is None:
            return False
        before = next((s.run_id for s in gated[1].sentinels if s.address == address), None)
        note(self.host, f"redis: restarting sentinel {address} (CKQUORUM passes)")
        self.shutdown(address, sentinel=True)
        if not self.healthy_after_restart(address, before, True):
            return refuse(self.host, f"sentinel {address} did not rejoin; stopping here")
        return True

    def cli(self, address: str, *args: str, user: str = "default") -> tuple[bool, list[str]]:
        ok, out, err = run(self.host, self.spec.redis_cli(address, *args, user=user))
        return ok and not any(line.startswith(("ERR", "NOPERM")) for line in out), out + err

    def failover(self, old: str) -> bool:
        """Move the master away from ``old`` without losing an acknowledged write.

        ``SENTINEL FAILOVER`` alone is not coordinated: the old master keeps accepting
        writes until Sentinel demotes it, and those are lost. So writes are paused on the
        old master first (clients block, nothing is acknowledged), the failover starts once
        every replica has the master's last offset, the old master is demoted as soon as
        the Sentinels name the new one, and only then are writes released (the blocked
        clients get READONLY and follow Sentinel to the new master).
        """
        gated = self.gate(f"failover away from {old}")
        if gated is None:
            return False
        _, view = gated
        pause_ms = str(2 * self.spec.settings.failover_timeout_milliseconds)
        ok, out = self.cli(old, "CLIENT", "PAUSE", pause_ms, "WRITE")
        if not ok:
            return refuse(self.host, f"CLIENT PAUSE on {old} refused: {' '.join(out)[-300:]}")
        try:
            moved = self._paused_failover(old, view)
        finally:
            self.cli(old, "CLIENT", "UNPAUSE")
        if not moved:
            return False

        def settled() -> bool:
            state, current = self.read()
            return (
                state is not None
                and current is not None
                and not cell_problems(state, current, self.spec.upstream_addresses)
            )

        if not wait_for(settled, READY_WAIT_SECONDS)[0]:
            return refuse(self.host, f"cell not healthy after the failover away from {old}")
        return True

    def _paused_failover(self, old: str, view: SentinelView) -> bool:
        def caught_up() -> bool:
            state = read_replication(self.host, self.spec)
            master = state.node(old) if state else None
            return bool(
                master
                and master.replicas
                and all(link.offset >= master.offset for link in master.replicas)
            )

        if not wait_for(caught_up, 10, interval=0.2)[0]:
            return refuse(self.host, f"replicas of {old} did not catch up; nothing was changed")
        note(self.host, f"redis: SENTINEL FAILOVER {self.spec.master_name} (from {old})")
        ok, out = self.cli(
            view.sentinels[0].address,
            "SENTINEL", "FAILOVER", self.spec.master_name, user="sentinel",
        )  # fmt: skip
        if not ok or "OK" not in out:
            return refuse(self.host, f"SENTINEL FAILOVER refused: {' '.join(out)[-300:]}")

        def moved() -> tuple[str, int] | None:
            current = read_sentinels(self.host, self.spec)
            master = current.master if current else None
            return master if master and master[0] != old else None

        new, waited = wait_for(moved, READY_WAIT_SECONDS, interval=0.2)
        if new is None:
            return refuse(self.host, f"failover away from {old} did not settle; stopping here")
        # Demote the old master now (Sentinel would, seconds later) so that no write is
        # accepted there once the pause ends.
        self.cli(old, "REPLICAOF", new[0], str(new[1]))
        self.cli(old, "CONFIG", "REWRITE")
        note(self.host, f"redis: master is now {new[0]} ({waited:.1f} s after FAILOVER)")
        return True

    def __call__(self) -> bool:
        state, view = self.read()
        plan = roll_plan(self.spec, state, view, self.version)
        if not plan:
            note(self.host, "redis: no node needs a restart")
            return True
        started = time.monotonic()
        gated = self.gate(f"rolling restart of {plan.describe()}")
        if gated is None:
            return False
        state, _ = gated
        master = state.master
        old_master = master.address if master else None
        pending = [_address(entry) for entry in plan.data_nodes]
        note(self.host, f"redis: rolling restart of {plan.describe()}")
        for address in pending:
            if address != old_master and not self.restart_data_node(address, "replica"):
                return False
        for entry in plan.sentinels:
            if not self.restart_sentinel(_address(entry)):
                return False
        if old_master in pending:
            if not self.failover(old_master):
                return False
            if not self.restart_data_node(old_master, "old master"):
                return False
        note(self.host, f"redis: rolling restart done in {time.monotonic() - started:.1f} s")
        return True


def _gated_roll(state: Any, host: Any, spec: RedisInput, version: str | None) -> bool:
    return _Roll(host, spec, version)()


@operation(is_idempotent=False)
def rolling_restart(spec: RedisInput) -> Generator[FunctionCommand, None, None]:
    """Restart the nodes whose running process differs from the drop-in or the installed
    package: replicas one at a time, Sentinels one at a time (``CKQUORUM`` passing),
    ``SENTINEL FAILOVER``, the old master. Every step is gated on the live cell; a cell
    with a node down is refused with the reason and nothing is restarted.

    Run it ``_serial=True``: the first host rolls the whole cell, the others then find
    nothing pending.
    """
    state = host.get_fact(
        RedisReplication,
        tls=spec.cli("default"),
        addresses=spec.redis_nodes,
        port=spec.settings.port,
    )
    if state is None or not any(n.up for n in state.nodes):
        host.noop("no running cell")
        return
    view = (
        host.get_fact(
            SentinelState,
            tls=spec.cli("sentinel"),
            addresses=spec.cell_sentinels,
            port=spec.settings.sentinel_port,
            master=spec.master_name,
        )
        if spec.cell_sentinels
        else SentinelView(())
    )
    version = installed_version()
    plan = roll_plan(spec, state, view, version)
    if not plan:
        host.noop("no node needs a restart")
        return
    explain_change(f"pending restart: {plan.describe()}")
    problems = cell_problems(state, view, spec.upstream_addresses)
    if problems:
        explain_change(f"cell not healthy now ({'; '.join(problems)}): the roll will refuse")
    yield FunctionCommand(_gated_roll, (spec, version), {})


# --- composition ----------------------------------------------------------------------


def _auth_files(passwords: Passwords) -> None:
    files.directory(name="Redis credentials directory", path=AUTH_DIR, mode="700", user="root")
    for user in SECRET_NAMES:
        files.put(
            name=f"redis-cli password of the {user} user (root only)",
            src=StringIO(passwords[user]),
            dest=f"{AUTH_DIR}/{user}.auth",
            mode="600",
            user="root",
            group="root",
        )


def _drop_in(unit: str, arguments: str) -> Any:
    container = host.get_fact(ContainerRuntime) != "none"
    return files.put(
        name=f"{unit}: settings fixed at start (drop-in)",
        src=StringIO(
            render_template(
                f"redis/etc/systemd/system/{unit}.d/plinth.conf.j2",
                arguments=arguments,
                container=container,
            )
        ),
        dest=DROP_IN.format(unit=unit),
        mode="644",
        create_remote_dir=True,
    )


@deploy("Redis")
def redis_node(spec: RedisInput, passwords: Passwords) -> None:
    """The DC's Redis data node and/or Sentinel on this host (see the module docstring).

    + passwords: from :func:`read_passwords`; they only reach files on the host
    """
    _auth_files(passwords)
    redis_unit = None
    if spec.redis_tls is not None:
        acl = files.put(
            name="Redis ACL users (password hashes)",
            src=StringIO(
                render_template("redis/etc/redis/users.acl.j2", hashes=passwords.acl_hashes())
            ),
            dest=ACL_FILE,
            mode="640",
            user="redis",
            group="redis",
        )
        redis_unit = _drop_in(
            REDIS_UNIT, command_line(spec, spec.redis_tls, spec.settings.port, data_node=True)
        )
    sentinel_unit = None
    if spec.sentinel_tls is not None:
        sentinel_unit = _drop_in(
            SENTINEL_UNIT,
            command_line(spec, spec.sentinel_tls, spec.settings.sentinel_port, data_node=False),
        )
    systemd.daemon_reload(
        name="systemd reloaded for the Redis drop-ins",
        _if=lambda: any(u is not None and u.did_change() for u in (redis_unit, sentinel_unit)),
    )
    if spec.redis_tls is not None:
        bootstrap_config(
            name="redis.conf bootstrapped", spec=spec, passwords=passwords, sentinel=False
        )
        systemd.service(
            name="redis enabled at boot", service=REDIS_UNIT, running=None, enabled=True
        )
        redis_started = started(name="redis started", unit=REDIS_UNIT)
        answering(name="redis answering over TLS", spec=spec, sentinel=False)
        users_reloaded(
            name="Redis ACL users reloaded",
            spec=spec,
            _if=lambda: acl.did_change() and not redis_started.did_change(),
        )
        runtime_config(name="Redis runtime settings (CONFIG SET)", spec=spec)
    if spec.sentinel_tls is not None and spec.upstream is not None:
        # A following DC's Sentinels would form a cell of their own around a master that
        # is really a replica of the active DC: they stay stopped (and their file is not
        # bootstrapped) until an operator makes this DC the active one (see the takeover
        # runbook in docs/components/redis.md).
        systemd.service(
            name=f"sentinel stopped: this DC follows {spec.upstream.datacenter}",
            service=SENTINEL_UNIT,
            running=False,
            enabled=False,
        )
    elif spec.sentinel_tls is not None:
        bootstrap_config(
            name="sentinel.conf bootstrapped", spec=spec, passwords=passwords, sentinel=True
        )
        systemd.service(
            name="sentinel enabled at boot", service=SENTINEL_UNIT, running=None, enabled=True
        )
        started(name="sentinel started", unit=SENTINEL_UNIT)
        answering(name="sentinel monitoring the master set", spec=spec, sentinel=True)
        monitoring_config(name="Sentinel parameters (SENTINEL SET)", spec=spec)
    if spec.redis_tls is not None:
        rolling_restart(
            name="Redis restarts rolled (replicas, Sentinels, failover, old master)",
            spec=spec,
            _serial=True,
        )


__all__ = [
    "Passwords",
    "read_passwords",
    "redis_node",
]
