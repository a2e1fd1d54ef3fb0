"""The rolls' decisions, pure: from one reading of the cluster, the next step.

Both whole-cluster rolls (:func:`.roll.pending_restarts`, restarts PostgreSQL asks for;
:func:`.roll.release_rolled`, members on another Patroni release) are driven the way
Patroni's own ``ha.py`` is: read the cluster, decide one step, perform it, read again and
ask again. Deciding lives here and reads nothing (``tests/test_patroni_roll_decisions.py``
is a table of readings and the step each one must give); :mod:`.roll` only performs steps,
waits for their effect and reads the cluster.

What a decision sees is what the executor reads from the REST API of the member running
the roll: ``/cluster`` (members, roles, states, lag, ``pending_restart``, the leader, the
synchronous standby) and that member's ``/patroni`` (:class:`PatroniClusterState`), None
when it did not answer. etcd is not read directly (the rolls run no etcd command): its
health shows only through ``/cluster``, which Patroni builds from etcd: no answer when
Patroni cannot read etcd, no running leader once the leader could not renew its key and
demoted itself. A quorum lost a moment ago may not show yet (Patroni reads etcd
serializably, from the member it is connected to).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from facts.patroni import PatroniClusterState
from operations.patroni.settings import PatroniInput
from plinth.rolling import so_far

SYNC_STANDBY_WAIT_SECONDS = 30
"""How long the restart roll waits for a synchronous standby to hand over to: after the
replica restarts Patroni may not have named one again yet."""
UPGRADED_STANDBY_WAIT_SECONDS = 60
"""The same wait in the release roll (an upgraded synchronous standby)."""


@dataclass(frozen=True)
class RollSpec:
    """What a roll wants of the cluster (from the model; fixed for the whole roll)."""

    reader: str
    """The member whose REST API the executor reads (named when it does not answer)."""
    members: tuple[str, ...]
    """Every member the model names: each must be present and healthy for a step."""
    max_lag: int | None
    """Bytes a replica may lag for a step to go ahead."""
    synchronous: bool
    """Synchronous mode: only a synchronous standby may take over."""
    version: str = ""
    """The Patroni release every member must run (the release roll)."""

    @classmethod
    def of(cls, spec: PatroniInput) -> RollSpec:
        settings = spec.settings
        return cls(
            reader=spec.name,
            members=spec.members,
            max_lag=settings.maximum_lag_on_failover,
            synchronous=spec.synchronous,
            version=settings.version,
        )


# ---- the steps a decision can give ----


@dataclass(frozen=True)
class RestartReplica:
    """Restart replica ``member``: ``POST /restart`` (restart roll), or Patroni stopped and
    started under the new unit (release roll)."""

    member: str


@dataclass(frozen=True)
class Switchover:
    """Hand leadership from ``leader`` to ``candidate`` (``POST /switchover``)."""

    leader: str
    candidate: str


@dataclass(frozen=True)
class RestartLeader:
    """Restart ``member``, the leader the roll began with: a replica since the switchover,
    or, in a one-member cluster, restarted in place (nobody to hand over to)."""

    member: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do until the cluster changes: read again every second for ``seconds``;
    if the decision is still this one, refuse with ``refusal``."""

    seconds: float
    refusal: str


@dataclass(frozen=True)
class Refuse:
    """The cluster is not fit for the next step: stop the roll, logging ``message``."""

    message: str


@dataclass(frozen=True)
class Done:
    """Nothing (more) to do."""


Step = RestartReplica | Switchover | RestartLeader | Wait | Refuse | Done


@dataclass(frozen=True)
class RollProgress:
    """What the roll has done so far: all the executor remembers between two readings."""

    leader: str | None = None
    """The leader when the roll began (None: nothing decided yet). The switchover and the
    last restart concern this member even if a failover moved leadership meanwhile."""
    restarted: frozenset[str] = frozenset()
    """Members this roll restarted: none is restarted twice."""
    turned: bool = False
    """The replicas are done and the roll turned to the old leader; it does not go back
    to the replicas (a replica flagged later waits for the next run)."""
    switched: bool = False
    """The switchover away from ``leader`` happened."""

    def changes(self) -> tuple[str, ...]:
        """What this roll did, for a refusal's message."""
        done = tuple(f"restarted {name}" for name in sorted(self.restarted))
        return done + ((f"switchover away from {self.leader}",) if self.switched else ())

    def after(self, step: Step, seen: PatroniClusterState | None) -> RollProgress:
        """The progress once ``step``, decided on ``seen``, was performed (or, for a
        :class:`Wait`, begun)."""
        leader = self.leader
        if leader is None and seen is not None and seen.leader is not None:
            leader = seen.leader.name
        if isinstance(step, RestartReplica | RestartLeader):
            return replace(self, leader=leader, restarted=self.restarted | {step.member})
        if isinstance(step, Wait):
            return replace(self, leader=leader, turned=True)
        if isinstance(step, Switchover):
            return replace(self, leader=leader, turned=True, switched=True)
        return self


def refusal(
    seen: PatroniClusterState | None, spec: RollSpec, what: str, changed: tuple[str, ...] = ()
) -> str | None:
    """The gate before any change: why ``what`` must not happen now (None: it may).

    Every member the model names present, a single leader that is running, replicas
    running or streaming within ``max_lag``, the cluster not paused
    (:meth:`PatroniClusterState.problems`). ``changed``: what this roll already did, so
    that a refusal mid-roll says so instead of "nothing was changed".
    """
    if seen is None:
        return f"{what} refused: cannot read the Patroni cluster from {spec.reader}"
    problems = seen.problems(spec.members, spec.max_lag)
    if problems:
        return f"{what} refused: {'; '.join(problems)}; {so_far(changed)}"
    return None


# ---- the restart roll: PostgreSQL's pending_restart ----


def every_member_flagged(seen: PatroniClusterState | None) -> bool:
    """Every member shows ``pending_restart`` (after a ``PATCH``, each member flags it on
    its own next loop: the roll waits, bounded, until all did)."""
    return seen is not None and all(m.pending_restart for m in seen.members)


def next_restart_step(seen: PatroniClusterState | None, spec: RollSpec, done: RollProgress) -> Step:
    """The next step of the rolling restart, from one reading of the cluster.

    Replicas with ``pending_restart`` one at a time, by name; then, if the leader the roll
    began with is still pending, one switchover (to a synchronous standby not pending
    itself in synchronous mode, else to any replica not pending), then that member's
    restart if it is still pending once demoted (a demoted primary usually restarted with
    the new settings already). Every step but the hand-over's candidate search is gated
    by :func:`refusal`: refused while the cluster is unfit, even if nothing is left.
    """
    if done.switched:
        return _old_leader_step(seen, spec, done)
    if done.turned:
        # Waiting for a candidate: the gate passed on the reading that turned the roll to
        # the leader; from then on only a candidate is looked for (as before the rolls
        # were split into decisions), and an unanswered reading just waits on.
        assert done.leader is not None
        return _handover(seen, spec, done.leader)
    if done.leader is None:
        # The first reading: nothing pending, or nothing to read, is nothing to do (the
        # next run looks again); nothing is touched either way.
        if seen is None or not any(m.pending_restart for m in seen.members):
            return Done()
        what = "rolling restart"
    else:
        what = "restart of the next replica"
    refused = refusal(seen, spec, what, done.changes())
    if refused is not None:
        return Refuse(refused)
    assert seen is not None and seen.leader is not None  # the gate checks both
    # A replica may flag pending_restart only after others restarted: it is restarted
    # before the hand-over, so that it never becomes the new leader still pending.
    waiting = [m for m in seen.replicas if m.pending_restart and m.name not in done.restarted]
    if waiting:
        return RestartReplica(waiting[0].name)
    leader = done.leader or seen.leader.name
    old = seen.member(leader)
    if old is None or not old.pending_restart:
        return Done()
    return _handover(seen, spec, leader)


def _handover(seen: PatroniClusterState | None, spec: RollSpec, leader: str) -> Step:
    replicas = seen.replicas if seen is not None else []
    no_standby = f"switchover away from {leader} refused: no synchronous standby"
    if spec.synchronous:
        # Patroni only promotes a synchronous standby; one still pending a restart would
        # itself need a switchover once promoted.
        standbys = [m.name for m in replicas if m.role == "sync_standby" and not m.pending_restart]
        if standbys:
            return Switchover(leader, standbys[0])
        return Wait(SYNC_STANDBY_WAIT_SECONDS, no_standby)
    ready = [m.name for m in replicas if not m.pending_restart]
    return Switchover(leader, ready[0]) if ready else Refuse(no_standby)


def _old_leader_step(seen: PatroniClusterState | None, spec: RollSpec, done: RollProgress) -> Step:
    leader = done.leader
    assert leader is not None
    if leader in done.restarted:
        return Done()
    # A demoted primary restarts PostgreSQL as a replica, usually with the new settings
    # already: then there is nothing left. Unread, it might still be pending: refused.
    demoted = seen.member(leader) if seen is not None else None
    if seen is not None and (demoted is None or not demoted.pending_restart):
        return Done()
    refused = refusal(seen, spec, f"restart of the old leader {leader}", done.changes())
    return Refuse(refused) if refused is not None else RestartLeader(leader)


# ---- the release roll: members on another Patroni release ----


@dataclass(frozen=True)
class UpgradeStep:
    """One step of the release roll, as :func:`upgrade_steps` plans it."""

    action: Literal["restart", "switchover", "wait", "refuse"]
    """``restart``: stop Patroni (it stops PostgreSQL), start it on the wanted release;
    ``switchover``: leadership from ``member`` to ``candidate`` (None: decided when the
    replicas are done); ``wait``: nothing to do but wait (no upgraded synchronous standby
    yet); ``refuse``: the cluster is not fit for any step (``why``)."""
    member: str | None = None
    candidate: str | None = None
    why: str = ""


def upgrade_steps(
    cluster: PatroniClusterState,
    versions: Mapping[str, str | None],
    wanted: str,
    expected: tuple[str, ...],
    max_lag: int | None,
    synchronous: bool,
) -> list[UpgradeStep]:
    """Pure: the steps that bring every member of ``cluster`` to Patroni ``wanted``.

    + versions: each member's release as its own ``/patroni`` reports it (None: unread)
    + expected: the members the model names (all must be present and healthy)
    + max_lag: bytes a replica may lag for a step to go ahead
    + synchronous: synchronous mode is on (the switchover target must be a sync standby)

    Replicas first (asynchronous ones, then synchronous standbys, by name), then a
    switchover to an upgraded replica (a synchronous standby in synchronous mode), then
    the old leader, restarted as a replica. A standby cluster's ``standby_leader`` is the
    leader here. Empty when every member runs ``wanted``; one ``refuse`` when a member is
    missing, not running/streaming, lagging or of unknown release. The executor performs
    only the first step and plans again from a fresh reading, so a roll interrupted
    half-way resumes where it stopped.
    """
    # A member that is not running is not stale: whenever it starts, it starts on the
    # unit and venv in place. It still stops the roll below (every member must be there).
    stale = [
        m.name for m in cluster.members if m.name in expected and versions.get(m.name) != wanted
    ]
    if not stale:
        return []
    problems = cluster.problems(expected, max_lag)
    problems += [
        f"the Patroni release of {name} is unknown (its /patroni did not answer)"
        for name in expected
        if cluster.member(name) is not None and versions.get(name) is None
    ]
    leader = cluster.leader
    if problems or leader is None:
        return [UpgradeStep("refuse", why="; ".join(problems) or "no leader")]
    old_replicas = sorted(
        (m for m in cluster.replicas if m.name in stale),
        key=lambda m: (m.role == "sync_standby", m.name),
    )
    steps = [
        UpgradeStep("restart", m.name, why=f"replica on Patroni {versions.get(m.name)}")
        for m in old_replicas
    ]
    if leader.name not in stale:
        return steps
    why_leader = f"old leader on Patroni {versions.get(leader.name)}"
    if not cluster.replicas:
        # A one-member cluster has nobody to hand over to: restarted in place.
        return [*steps, UpgradeStep("restart", leader.name, why=why_leader + ", no replica")]
    if old_replicas:
        steps.append(UpgradeStep("switchover", leader.name, why="after the replicas"))
    else:
        targets = [m for m in cluster.replicas if m.role == "sync_standby" or not synchronous]
        if targets:
            steps.append(UpgradeStep("switchover", leader.name, targets[0].name, why_leader))
        else:
            steps.append(
                UpgradeStep("wait", leader.name, why="no upgraded synchronous standby yet")
            )
    steps.append(UpgradeStep("restart", leader.name, why=why_leader + ", now a replica"))
    return steps


def next_upgrade_step(
    seen: PatroniClusterState | None,
    versions: Mapping[str, str | None],
    spec: RollSpec,
    done: RollProgress,
) -> Step:
    """The next step of the release roll: the first of :func:`upgrade_steps`' plan, made
    again from every fresh reading (so an interrupted roll resumes where it stopped).

    + versions: each member's release from its own ``/patroni`` (None: unread)
    + done: a member restarted once and still on another release stops the roll
    """
    if seen is None:
        return Refuse(
            f"Patroni upgrade refused: cannot read the cluster from {spec.reader}; "
            f"{so_far(done.changes())}"
        )
    steps = upgrade_steps(
        seen, versions, spec.version, spec.members, spec.max_lag, spec.synchronous
    )
    if not steps:
        return Done()
    first = steps[0]
    if first.action == "refuse":
        return Refuse(f"Patroni upgrade refused: {first.why}; {so_far(done.changes())}")
    if first.action == "wait":
        # In synchronous mode Patroni only hands over to a synchronous standby; after
        # the replicas restarted one may not be assigned again yet.
        return Wait(
            UPGRADED_STANDBY_WAIT_SECONDS,
            f"switchover away from {first.member} refused: {first.why}",
        )
    assert first.member is not None
    if first.action == "switchover":
        if first.candidate is None:  # open only behind replica restarts, which come first
            return Refuse(f"switchover away from {first.member}: no candidate")
        return Switchover(first.member, first.candidate)
    if first.member in done.restarted:
        version = versions.get(first.member)
        return Refuse(f"{first.member} still runs Patroni {version} after its restart")
    if seen.leader is not None and seen.leader.name == first.member:
        return RestartLeader(first.member)
    return RestartReplica(first.member)
