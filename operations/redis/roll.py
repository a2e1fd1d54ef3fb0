"""The rolling restart, performed: each step :func:`.decide.next_step` gives is done over
TLS from the host running the roll, its effect waited for, the cell read again and the
next step asked for. Nothing here decides what comes next.

A serial operation: the first host to run it rolls the whole cell, the others then find
nothing pending.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation
from pyinfra.facts.deb import DebPackage

from facts.redis import RedisReplication, SentinelState, SentinelView, cell_problems
from operations.redis.decide import (
    Done,
    Failover,
    Observed,
    Pending,
    Refuse,
    RestartOldMaster,
    RestartReplica,
    RestartSentinel,
    RollProgress,
    RollSpec,
    Start,
    Step,
    back_after_restart,
    caught_up,
    healthy,
    moved_from,
    next_step,
    package_version,
    roll_plan,
    run_id,
)
from operations.redis.live import read_replication, read_sentinels
from operations.redis.settings import READY_WAIT_SECONDS
from plinth.reasons import explain_change
from plinth.rolling import note, refuse, run, wait_for
from plinth.topology.redis import RedisInput


def installed_version(spec: RedisInput) -> str | None:
    """Upstream version of the installed server package of the release
    (:attr:`.KeyValueStore.version_package`), as the daemon reports its own
    (:func:`.decide.package_version`)."""
    package = host.get_fact(DebPackage, package=spec.store.version_package)
    if not package:
        return None
    return package_version(str(package.get("version", "")))


def read(target: Any, spec: RedisInput) -> Observed:
    """One reading of the cell: the data nodes, then the Sentinels."""
    return Observed(read_replication(target, spec), read_sentinels(target, spec))


def _gated_roll(state: Any, host: Any, spec: RedisInput, version: str | None) -> bool:
    """Execute-time: restart the pending nodes as :func:`.decide.next_step` says, one step
    after the other."""
    roll = RollSpec.of(spec, version)
    done = RollProgress()
    started = time.monotonic()
    seen = read(host, spec)
    # Each step restarts a node not restarted before or fails over once: the loop ends.
    while True:
        step = next_step(seen, roll, done)
        if isinstance(step, Done):
            if done.plan is None:
                note(host, "redis: no node needs a restart")
            else:
                note(host, f"redis: rolling restart done in {time.monotonic() - started:.1f} s")
            return True
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        if isinstance(step, Pending):
            started = time.monotonic()
        elif isinstance(step, Start):
            assert done.plan is not None  # Start follows Pending
            note(host, f"redis: rolling restart of {done.plan.describe()}")
        elif not _perform(host, spec, roll, step, seen):
            return False
        done = done.after(step)
        if not done.finished:  # after the last step the roll ends without reading again
            seen = read(host, spec)


def _perform(host: Any, spec: RedisInput, roll: RollSpec, step: Step, seen: Observed) -> bool:
    """Do ``step``, decided on ``seen``, and wait for its effect. False once refused
    (logged)."""
    if isinstance(step, RestartReplica):
        return _restart_data_node(host, spec, roll, step.address, "replica", seen)
    if isinstance(step, RestartOldMaster):
        return _restart_data_node(host, spec, roll, step.address, "old master", seen)
    if isinstance(step, RestartSentinel):
        return _restart_sentinel(host, spec, roll, step.address, seen)
    assert isinstance(step, Failover)
    return _failover(host, spec, roll, step)


def _shutdown(host: Any, spec: RedisInput, address: str, sentinel: bool) -> None:
    """Stop the daemon with its own SHUTDOWN; systemd starts it again (Restart=always).
    The connection closes under redis-cli: its exit status says nothing."""
    user = "sentinel" if sentinel else "default"
    run(host, f"{spec.redis_cli(address, 'SHUTDOWN', user=user)} || true")


def _back(
    host: Any, spec: RedisInput, roll: RollSpec, address: str, before: str | None, sentinel: bool
) -> bool:
    """Wait until ``address`` runs a new process (run_id changed) and the cell is healthy."""

    def probe() -> bool:
        return back_after_restart(read(host, spec), roll, address, before, sentinel)

    return bool(
        wait_for(probe, READY_WAIT_SECONDS, waiting_for=f"{address} back and the cell healthy")[0]
    )


def _restart_data_node(
    host: Any, spec: RedisInput, roll: RollSpec, address: str, what: str, seen: Observed
) -> bool:
    before = run_id(seen, address, sentinel=False)
    note(host, f"redis: restarting {what} {address}")
    started = time.monotonic()
    _shutdown(host, spec, address, sentinel=False)
    if not _back(host, spec, roll, address, before, False):
        return refuse(host, f"redis {address} did not come back healthy; stopping here")
    note(host, f"redis: {address} back and linked in {time.monotonic() - started:.1f} s")
    return True


def _restart_sentinel(
    host: Any, spec: RedisInput, roll: RollSpec, address: str, seen: Observed
) -> bool:
    before = run_id(seen, address, sentinel=True)
    note(host, f"redis: restarting sentinel {address} (CKQUORUM passes)")
    _shutdown(host, spec, address, sentinel=True)
    if not _back(host, spec, roll, address, before, True):
        return refuse(host, f"sentinel {address} did not rejoin; stopping here")
    return True


def _cli(
    host: Any, spec: RedisInput, address: str, *args: str, user: str = "default"
) -> tuple[bool, list[str]]:
    ok, out, err = run(host, spec.redis_cli(address, *args, user=user))
    return ok and not any(line.startswith(("ERR", "NOPERM")) for line in out), out + err


def _failover(host: Any, spec: RedisInput, roll: RollSpec, step: Failover) -> bool:
    """Move the master away from ``step.old`` without losing an acknowledged write.

    ``SENTINEL FAILOVER`` alone is not coordinated: the old master keeps accepting
    writes until Sentinel demotes it, and those are lost. So writes are paused on the
    old master first (clients block, nothing is acknowledged), the failover starts once
    every replica has the master's last offset, the old master is demoted as soon as
    the Sentinels name the new one, and only then are writes released (the blocked
    clients get READONLY and follow Sentinel to the new master).
    """
    old = step.old
    pause_ms = str(2 * spec.settings.failover_timeout_milliseconds)
    ok, out = _cli(host, spec, old, "CLIENT", "PAUSE", pause_ms, "WRITE")
    if not ok:
        return refuse(host, f"CLIENT PAUSE on {old} refused: {' '.join(out)[-300:]}")
    try:
        moved = _paused_failover(host, spec, step)
    finally:
        _cli(host, spec, old, "CLIENT", "UNPAUSE")
    if not moved:
        return False

    def settled() -> bool:
        return healthy(read(host, spec), roll)

    if not wait_for(
        settled, READY_WAIT_SECONDS, waiting_for=f"the cell healthy after the failover from {old}"
    )[0]:
        return refuse(host, f"cell not healthy after the failover away from {old}")
    return True


def _paused_failover(host: Any, spec: RedisInput, step: Failover) -> bool:
    old = step.old

    def replicas_caught_up() -> bool:
        return caught_up(read_replication(host, spec), old)

    if not wait_for(replicas_caught_up, 10, interval=0.2)[0]:
        return refuse(host, f"replicas of {old} did not catch up; nothing was changed")
    note(host, f"redis: SENTINEL FAILOVER {spec.master_name} (from {old})")
    ok, out = _cli(
        host, spec, step.sentinel, "SENTINEL", "FAILOVER", spec.master_name, user="sentinel"
    )
    if not ok or "OK" not in out:
        return refuse(host, f"SENTINEL FAILOVER refused: {' '.join(out)[-300:]}")

    def moved() -> tuple[str, int] | None:
        return moved_from(read_sentinels(host, spec), old)

    new, waited = wait_for(
        moved,
        READY_WAIT_SECONDS,
        interval=0.2,
        waiting_for=f"Sentinel to move the master from {old}",
    )
    if new is None:
        return refuse(host, f"failover away from {old} did not settle; stopping here")
    # Demote the old master now (Sentinel would, seconds later) so that no write is
    # accepted there once the pause ends.
    _cli(host, spec, old, "REPLICAOF", new[0], str(new[1]))
    _cli(host, spec, old, "CONFIG", "REWRITE")
    note(host, f"redis: master is now {new[0]} ({waited:.1f} s after FAILOVER)")
    return True


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
    version = installed_version(spec)
    plan = roll_plan(spec, state, view, version)
    if not plan:
        host.noop("no node needs a restart")
        return
    explain_change(f"pending restart: {plan.describe()}")
    problems = cell_problems(state, view, spec.upstream_addresses)
    if problems:
        explain_change(f"cell not healthy now ({'; '.join(problems)}): the roll will refuse")
    yield FunctionCommand(_gated_roll, (spec, version), {})
