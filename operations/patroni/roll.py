"""The rolling restart, performed: each step :func:`.decide.next_restart_step` gives is
sent to Patroni's REST API, its effect waited for, the cluster read again and the next
step asked for. Nothing here decides what comes next.

A serial operation: the first member to run it rolls the whole cluster, the others find
nothing left. The release roll (:mod:`.release`) is performed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation

from facts.patroni import PatroniClusterState
from operations.patroni.converge import PATCHED_SCOPES
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
    every_member_flagged,
    next_restart_step,
)
from operations.patroni.rest import (
    cluster_fact,
    member_api,
    pending_config_patch,
    post,
    read_cluster,
    wait_healthy,
)
from operations.patroni.settings import PatroniInput
from plinth.reasons import explain_change
from plinth.rolling import note, refuse, wait_for

RESTART_PENDING = {"restart_pending": True}
"""``POST /restart`` body: Patroni restarts the member only if it still needs it."""


def wait_out(
    waiting: Wait, ask: Callable[[], tuple[Step, PatroniClusterState | None]]
) -> tuple[Step, PatroniClusterState | None] | None:
    """Ask again every second until the decision is no longer ``waiting``: the new step
    and the reading it was decided on, or None once ``waiting.seconds`` passed."""

    def moved_on() -> tuple[Step, PatroniClusterState | None] | None:
        step, seen = ask()
        return None if step == waiting else (step, seen)

    return wait_for(moved_on, waiting.seconds, waiting_for=waiting.refusal)[0]


# ---- the restart roll: PostgreSQL's pending_restart ----


def _ask_restart(
    executing: Any, spec: PatroniInput, roll: RollSpec, done: RollProgress
) -> tuple[Step, PatroniClusterState | None]:
    """Read the cluster now; the next step of the rolling restart."""
    seen = read_cluster(executing, spec)
    return next_restart_step(seen, roll, done), seen


def _roll(state: Any, host: Any, spec: PatroniInput, after_patch: bool) -> bool:
    """Execute-time: restart members with ``pending_restart`` as
    :func:`.decide.next_restart_step` says, one step after the other.

    Whichever member runs this first does the whole roll (the operation is serial); the
    others then find nothing pending.
    """
    roll = RollSpec.of(spec)
    if after_patch:
        # Each member flags pending_restart on its own next loop after a PATCH, so one
        # flagged member says nothing about the others: a replica not yet flagged would be
        # skipped, become the switchover candidate, and need a second switchover later.
        # A restart-requiring parameter concerns every member; wait (bounded) for all.
        def all_flagged() -> bool:
            return every_member_flagged(read_cluster(host, spec))

        wait_for(
            all_flagged,
            2 * spec.settings.loop_wait + 4,
            waiting_for="every member to report the pending restart",
        )
    done = RollProgress()
    step, seen = _ask_restart(host, spec, roll, done)
    if isinstance(step, Done):
        note(host, "no member needs a restart")
        return True
    assert seen is not None  # a first reading that did not answer is Done
    started = time.monotonic()
    pending = sorted(m.name for m in seen.members if m.pending_restart)
    note(host, f"rolling restart of {', '.join(pending)}")
    # Each step restarts a member not restarted before, or hands over once, or waits
    # (bounded): the loop ends.
    while not isinstance(step, Done):
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        done = done.after(step, seen)
        if isinstance(step, Wait):
            found = wait_out(step, partial(_ask_restart, host, spec, roll, done))
            if found is None:
                return refuse(host, step.refusal)
            step, seen = found
            continue
        # A step to perform is only ever decided on a reading that answered.
        assert seen is not None
        if not _perform_restart_step(host, spec, step, seen):
            return False
        step, seen = _ask_restart(host, spec, roll, done)
    note(host, f"rolling restart done in {time.monotonic() - started:.1f} s")
    return True


def _perform_restart_step(
    host: Any, spec: PatroniInput, step: Step, seen: PatroniClusterState
) -> bool:
    """``POST`` the step to the member it concerns, then wait until the cluster is fit
    again (a switchover: with the candidate leading). False once refused (logged)."""
    if isinstance(step, Switchover):
        leader, candidate = step.leader, step.candidate
        note(host, f"switchover {leader} -> {candidate}")
        api = member_api(spec, leader, seen)
        if not post(host, spec, api, "/switchover", {"leader": leader, "candidate": candidate}):
            return refuse(host, f"switchover {leader} -> {candidate} failed")
        after = wait_healthy(host, spec)
        if after is None or after.leader is None or after.leader.name != candidate:
            return refuse(host, f"switchover to {candidate} did not settle; stopping here")
        return True
    if isinstance(step, RestartReplica):
        member = step.member
        return _restart(
            host, spec, member, seen,
            f"restarting replica {member}",
            f"restart of replica {member} failed (POST /restart)",
            f"replica {member} did not come back healthy; stopping here",
        )  # fmt: skip
    assert isinstance(step, RestartLeader)
    member = step.member
    return _restart(
        host, spec, member, seen,
        f"restarting the old leader {member}",
        f"restart of {member} failed (POST /restart)",
        f"{member} did not come back healthy",
    )  # fmt: skip


def _restart(
    host: Any,
    spec: PatroniInput,
    member: str,
    seen: PatroniClusterState,
    starting: str,
    failed: str,
    not_back: str,
) -> bool:
    """``POST /restart`` to ``member``, then wait until the cluster is fit again; the
    note said first, the refusal when Patroni refuses, the one when it does not recover."""
    note(host, starting)
    if not post(host, spec, member_api(spec, member, seen), "/restart", RESTART_PENDING):
        return refuse(host, failed)
    if wait_healthy(host, spec) is None:
        return refuse(host, not_back)
    return True


@operation(is_idempotent=False)
def pending_restarts(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Roll the restarts PostgreSQL asks for (``pending_restart``), gated at each step.

    Run it ``_serial=True`` after :func:`dynamic_config`: the first member to run it
    rolls the whole cluster; the gate refuses (nothing restarted) when a member is
    missing, not running or lagging.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster")
        return
    pending = [m.name for m in cluster.members if m.pending_restart]
    patch = pending_config_patch(spec)
    after_patch = bool(patch) or spec.scope in PATCHED_SCOPES
    if not pending and not after_patch:
        host.noop("no member needs a restart")
        return
    if pending:
        explain_change(f"pending restart: {', '.join(pending)}")
    yield FunctionCommand(_roll, (spec, after_patch), {})
