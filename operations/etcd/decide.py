"""The rolling restart's decisions, pure: from one reading of the cluster, the next step.

etcd's roll is member by member: each member whose configuration changed runs
:func:`.roll.rolling_restart` (a serial operation) and restarts *itself*. What a decision
sees is what the executor reads with :meth:`.settings.EtcdInput.cluster_command`
(:class:`EtcdClusterState`: every member's health, leadership, raft index), None when
``etcdctl`` is missing. ``tests/test_etcd_roll_decisions.py`` is a table of readings and
the step each one must give; :mod:`.roll` only performs steps, waits and reads.

The rules:

1. Every member must answer a health check (a quorum read) on the reading the roll begins
   with, or the restart is refused with the problems read (a cluster without quorum has
   no member that answers one). Leadership is not required to be single here, only
   health (as before the split).
2. A member that leads hands leadership to the first other healthy member (by name)
   first (``etcdctl move-leader``); with none, the restart is refused.
3. Then the member restarts, without reading again after the move (as before).
4. Restarted: read every second until every member is healthy, for
   :data:`HEALTHY_WAIT_SECONDS`; then done, else stop the roll there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from facts.etcd import EtcdClusterState
from operations.etcd.settings import EtcdInput

HEALTHY_WAIT_SECONDS = 90
"""How long the cluster may take to be healthy again after a member's restart (and, in
:func:`.member.cluster_healthy`, after a start)."""


@dataclass(frozen=True)
class RollSpec:
    """What the roll wants (from the model; fixed for the whole roll)."""

    member: str
    """The member that runs the roll and restarts itself."""

    @classmethod
    def of(cls, spec: EtcdInput) -> RollSpec:
        return cls(member=spec.name)


# ---- the steps a decision can give ----


@dataclass(frozen=True)
class MoveLeader:
    """``etcdctl move-leader <successor_id>`` sent to ``member`` (the leader) at
    ``client_url``."""

    member: str
    successor: str
    successor_id: str
    client_url: str | None


@dataclass(frozen=True)
class Restart:
    """``systemctl restart etcd.service`` on ``member``; the step after it is
    :func:`recovery` (the cluster is read only while waiting for it)."""

    member: str


@dataclass(frozen=True)
class Wait:
    """Read again every second for ``seconds`` until the decision changes; then refuse
    with ``refusal``."""

    seconds: float
    refusal: str


@dataclass(frozen=True)
class Refuse:
    """Stop this member's roll, logging ``message``."""

    message: str


@dataclass(frozen=True)
class Done:
    """The member restarted and every member is healthy again."""


Step = MoveLeader | Restart | Wait | Refuse | Done


@dataclass(frozen=True)
class RollProgress:
    """What the roll has done so far on this member."""

    moved: bool = False
    """Leadership was handed away."""
    restarted: bool = False
    """The member was restarted (the roll waits for the cluster to recover)."""

    def after(self, step: Step) -> RollProgress:
        """The progress once ``step`` was performed."""
        if isinstance(step, MoveLeader):
            return replace(self, moved=True)
        if isinstance(step, Restart):
            return replace(self, restarted=True)
        return self


def recovery(spec: RollSpec) -> Wait:
    """The step right after :class:`Restart`: wait until every member is healthy."""
    return Wait(
        HEALTHY_WAIT_SECONDS,
        f"etcd member {spec.member} restarted but the cluster is not healthy after "
        f"{HEALTHY_WAIT_SECONDS} s; stopping here",
    )


def next_step(seen: EtcdClusterState | None, spec: RollSpec, done: RollProgress) -> Step:
    """The next step of this member's gated restart, from one reading of the cluster (see
    the module docstring for the rules)."""
    if done.restarted:
        return Done() if seen is not None and seen.healthy else recovery(spec)
    name = spec.member
    if seen is None or not seen.healthy:
        problems = "; ".join(seen.problems()) if seen else "cannot read the cluster"
        return Refuse(
            f"etcd restart of {name} refused: cluster not healthy ({problems}); "
            "nothing was changed on this member"
        )
    me = seen.member(name)
    if not done.moved and me is not None and me.is_leader:
        successor = next((m for m in seen.members if m.name != name and m.healthy), None)
        if successor is None:
            return Refuse(f"etcd restart of {name} refused: no healthy successor")
        return MoveLeader(name, successor.name, successor.id, me.client_url)
    return Restart(name)
