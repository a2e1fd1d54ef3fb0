"""The release roll, performed: members on another Patroni release, one at a time, as
:func:`.decide.next_upgrade_step` says; each restarted by stopping its Patroni (which
stops PostgreSQL) and starting it under plinth's unit, never by a new Patroni adopting a
running postmaster.

Deciding reads every member's ``/patroni``, which takes a moment: each action is gated
once more, on a fresh reading, right before it is taken.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Generator
from functools import partial
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.api.exceptions import NoHostError

from facts.patroni import (
    PatroniCluster,
    PatroniClusterState,
    parse_patroni_cluster,
    patroni_cluster_command,
)
from operations.patroni.decide import (
    Done,
    Refuse,
    RestartLeader,
    RestartReplica,
    RollProgress,
    RollSpec,
    Step,
    Switchover,
    Wait,
    next_upgrade_step,
)
from operations.patroni.rest import cluster_fact, gate, member_api, post, read_cluster
from operations.patroni.roll import wait_out
from operations.patroni.settings import (
    READY_WAIT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    PatroniInput,
)
from plinth.reasons import explain_change
from plinth.rolling import connector_arguments, note, refuse, run, wait_for


def _member_apis(spec: PatroniInput, cluster: PatroniClusterState) -> dict[str, str]:
    return {m.name: member_api(spec, m.name, cluster) for m in cluster.members}


def release_versions(spec: PatroniInput, cluster: PatroniClusterState) -> dict[str, str | None]:
    """Prepare time: each member's Patroni release from its own ``/patroni`` (facts)."""
    versions: dict[str, str | None] = {}
    for name, api in _member_apis(spec, cluster).items():
        seen: PatroniClusterState | None = host.get_fact(
            PatroniCluster,
            ca=spec.tls.ca_path,
            cert=spec.tls.chain_path,
            key=spec.tls.key_path,
            api=api,
        )
        versions[name] = seen.local_version if seen else None
    return versions


def _read_versions(
    executing: Any, spec: PatroniInput
) -> tuple[PatroniClusterState | None, dict[str, str | None]]:
    """Execute time: the cluster and each member's release, read right now."""
    cluster = read_cluster(executing, spec)
    if cluster is None:
        return None, {}
    versions: dict[str, str | None] = {}
    for name, api in _member_apis(spec, cluster).items():
        tls = spec.tls
        ok, out, _ = run(
            executing, patroni_cluster_command(tls.ca_path, tls.chain_path, tls.key_path, api)
        )
        seen = parse_patroni_cluster(out) if ok else None
        versions[name] = seen.local_version if seen else None
    return cluster, versions


def _ask_upgrade(
    executing: Any, spec: PatroniInput, roll: RollSpec, done: RollProgress
) -> tuple[Step, PatroniClusterState | None]:
    """Read the cluster and every member's release now; the next step of the release roll."""
    cluster, versions = _read_versions(executing, spec)
    return next_upgrade_step(cluster, versions, roll, done), cluster


def restart_command(data_dir: str, bin_dir: str) -> str:
    """Stop Patroni, which stops PostgreSQL on its way out, then start it on the new unit.

    A postmaster still running after the stop (Patroni killed at the stop timeout) is
    stopped cleanly with ``pg_ctl``: a new Patroni must start PostgreSQL itself, never
    adopt a running one (on these machines the PID file's start time can disagree with the
    process's and the member then loops on "crashed").
    """
    q = shlex.quote
    pg_ctl_path = q(f"{bin_dir}/pg_ctl")
    pg_ctl = f"cd / && runuser -u postgres -- {pg_ctl_path} -D {q(data_dir)}"
    return (
        "set -e; systemctl stop patroni.service; "
        f"if {pg_ctl} status >/dev/null 2>&1; then "
        f"{pg_ctl} stop -m fast -w -t {STOP_TIMEOUT_SECONDS}; fi; "
        "systemctl daemon-reload; systemctl start patroni.service"
    )


def _member_host(state: Any, executing: Any, name: str) -> Any:
    """The pyinfra host of member ``name`` if this run is connected to it, else None."""
    if name == executing.name:
        return executing
    try:
        target = state.inventory.get_host(name)
    except NoHostError:
        return None
    return target if getattr(target, "connected", False) else None


def _restart_member(state: Any, executing: Any, spec: PatroniInput, member: str) -> bool:
    target = _member_host(state, executing, member)
    if target is None:
        return refuse(
            executing,
            f"Patroni upgrade of {member} refused: {member} is not part of this run "
            "(--limit?); run the deploy on the whole stack",
        )
    if gate(executing, spec, f"Patroni upgrade of {member}") is None:
        return False
    note(executing, f"Patroni upgrade: restarting {member} on {spec.settings.version}")
    arguments = connector_arguments(executing)
    arguments["_timeout"] = STOP_TIMEOUT_SECONDS + 120
    ok, output = target.run_shell_command(
        StringCommand(restart_command(spec.data_dir, spec.bin_dir)), print_output=False, **arguments
    )
    if not ok:
        tail = " ".join(list(output.stderr_lines)[-3:])
        return refuse(executing, f"restart of Patroni on {member} failed: {tail}")

    def back() -> bool:
        cluster, versions = _read_versions(executing, spec)
        me = cluster.member(member) if cluster else None
        return bool(
            cluster is not None
            and me is not None
            and versions.get(member) == spec.settings.version
            and not cluster.problems(spec.members, spec.settings.maximum_lag_on_failover)
        )

    if not wait_for(
        back, READY_WAIT_SECONDS, waiting_for=f"{member} back on Patroni {spec.settings.version}"
    )[0]:
        return refuse(
            executing,
            f"{member} is not back running/streaming on Patroni {spec.settings.version} "
            f"after {READY_WAIT_SECONDS} s; stopping here (journalctl -u patroni on {member})",
        )
    return True


def _switchover(executing: Any, spec: PatroniInput, leader: str, candidate: str) -> bool:
    gated = gate(executing, spec, f"switchover {leader} -> {candidate}")
    if gated is None:
        return False
    note(executing, f"Patroni upgrade: switchover {leader} -> {candidate}")
    body = {"leader": leader, "candidate": candidate}
    if not post(executing, spec, member_api(spec, leader, gated), "/switchover", body):
        return refuse(executing, f"switchover {leader} -> {candidate} failed")

    def settled() -> bool:
        cluster = read_cluster(executing, spec)
        return bool(
            cluster is not None
            and cluster.leader is not None
            and cluster.leader.name == candidate
            and not cluster.problems(spec.members, spec.settings.maximum_lag_on_failover)
        )

    if not wait_for(settled, 120, waiting_for=f"switchover to {candidate} to settle")[0]:
        return refuse(executing, f"switchover to {candidate} did not settle; stopping here")
    return True


def _release_roll(state: Any, host: Any, spec: PatroniInput) -> bool:
    """Execute-time: perform the step :func:`.decide.next_upgrade_step` gives, read the
    cluster again, ask again.

    Whichever member runs this first rolls the whole cluster (the operation is serial and
    reaches the other members over this run's connections); the others find nothing left.
    """
    roll = RollSpec.of(spec)
    started = time.monotonic()
    done = RollProgress()
    # Each member is restarted at most once and a switchover happens once: the bound
    # only stops a plan that does not converge.
    for _ in range(2 * len(spec.members) + 4):
        step, seen = _ask_upgrade(host, spec, roll, done)
        if isinstance(step, Done):
            if done.restarted:
                took = time.monotonic() - started
                names = ", ".join(sorted(done.restarted))
                note(host, f"Patroni upgrade done in {took:.1f} s ({names})")
            else:
                note(host, f"every member runs Patroni {spec.settings.version}")
            return True
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        done = done.after(step, seen)
        if isinstance(step, Wait):
            if wait_out(step, partial(_ask_upgrade, host, spec, roll, done)) is None:
                return refuse(host, step.refusal)
            continue
        if isinstance(step, Switchover):
            if not _switchover(host, spec, step.leader, step.candidate):
                return False
            continue
        assert isinstance(step, RestartReplica | RestartLeader)
        if not _restart_member(state, host, spec, step.member):
            return False
    return refuse(host, "Patroni upgrade did not converge; stopping here")


@operation(is_idempotent=False)
def release_rolled(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Every member on Patroni ``components.patroni.version``: replicas one at a time, a
    switchover to an upgraded (synchronous) standby, the old leader last; each member
    stopped through Patroni and started under plinth's unit, behind live gates.

    Run it ``_serial=True`` after :func:`patroni_installed` (which only installs): the
    first member to run it rolls the whole cluster. A new cluster (nothing running)
    starts on the wanted release and has nothing to roll.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster: members start on the wanted release")
        return
    versions = release_versions(spec, cluster)
    wanted = spec.settings.version
    stale = sorted(
        name for name, version in versions.items() if name in spec.members and version != wanted
    )
    if not stale:
        host.noop(f"every running member runs Patroni {wanted}")
        return
    old = ", ".join(f"{name} ({versions.get(name) or 'unknown'})" for name in stale)
    explain_change(f"Patroni {old} -> {wanted}: replicas, switchover, old leader")
    yield FunctionCommand(_release_roll, (spec,), {})
