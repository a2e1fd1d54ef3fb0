"""The rolling restart's decisions, pure: from one reading of the cluster, the next step.

RabbitMQ's roll is host by host: each node whose configuration changed runs
:func:`.roll.rolling_restart` (a serial operation) and restarts *itself* once the whole
cluster can spare it. What a decision sees is what the executor reads on that node with
:data:`facts.rabbitmq.CLUSTER_COMMAND` (:class:`RabbitmqClusterState`: running and disk
nodes, partitions, alarms, nodes under maintenance, this node's quorum-critical verdict),
None when the node did not answer. ``tests/test_rabbitmq_roll_decisions.py`` is a table
of readings and the step each one must give; :mod:`.roll` only performs steps, waits and
reads.

The rules, in the order the executor meets them:

1. The first reading refuses at once when something is already wrong (the node
   unreadable, a node not running, a member down, a partition, an alarm, a node under
   maintenance): the roll does not wait out a broken cluster.
2. Otherwise the node is read again until it is *spareable* (no problem, the quorum check
   answered and the node is not quorum-critical: members of quorum queues on a node
   restarted just before may still be catching up), for :data:`QUORUM_WAIT_SECONDS`.
   When the wait runs out, one more reading names the reason (or "the cluster changed
   while waiting") in the refusal.
3. Spareable: restart the node.
4. Restarted: read until every node runs again with no problem, for
   :data:`HEALTHY_WAIT_SECONDS`; then done, else stop the roll there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from facts.rabbitmq import RabbitmqClusterState
from operations.rabbitmq.settings import RabbitmqInput

HEALTHY_WAIT_SECONDS = 180
"""How long a restarted node's cluster may take to run every node again."""
QUORUM_WAIT_SECONDS = 60
"""How long the gate waits for the node to stop being quorum-critical."""
READ_INTERVAL_SECONDS = 2
"""Seconds between two readings while waiting."""


@dataclass(frozen=True)
class RollSpec:
    """What the roll wants of the cluster (from the model; fixed for the whole roll)."""

    node: str
    """``rabbit@<fqdn>``: the node that runs the roll and restarts itself."""
    nodes: tuple[str, ...]
    """Every node the model names: each must run in the cluster for a step."""

    @classmethod
    def of(cls, spec: RabbitmqInput) -> RollSpec:
        return cls(node=spec.node, nodes=spec.nodes)


# ---- the steps a decision can give ----


@dataclass(frozen=True)
class Restart:
    """``systemctl restart`` the node (``node``); the step after it is :func:`recovery`
    (the cluster is read only while waiting for it, as before the split)."""

    node: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do until the cluster changes: read again every ``interval`` seconds for
    ``seconds``. When the decision is still this one by then, refuse with ``refusal``; or,
    when ``refusal`` is None, read once more and ask again with the seconds waited
    (:attr:`RollProgress.waited`): the refusal names what that reading shows."""

    seconds: float
    interval: float = READ_INTERVAL_SECONDS
    refusal: str | None = None


@dataclass(frozen=True)
class Refuse:
    """The cluster cannot spare the node: stop this host's roll, logging ``message``."""

    message: str


@dataclass(frozen=True)
class Done:
    """The node restarted and the cluster runs every node again."""


Step = Restart | Wait | Refuse | Done


@dataclass(frozen=True)
class RollProgress:
    """What the roll has done so far on this node: all the executor remembers between two
    readings."""

    waiting: bool = False
    """The first reading passed the gate: waiting for the node to be spareable."""
    waited: float | None = None
    """The wait for a spareable node ran out after this many seconds."""
    restarted: bool = False
    """The node was restarted (the roll waits for the cluster to recover)."""

    def after(self, step: Step) -> RollProgress:
        """The progress once ``step`` was performed (a :class:`Wait`: begun)."""
        if isinstance(step, Restart):
            return replace(self, restarted=True)
        if isinstance(step, Wait) and not self.restarted:
            return replace(self, waiting=True)
        return self

    def ran_out(self, seconds: float) -> RollProgress:
        """The progress once a :class:`Wait` without its own refusal ran out."""
        return replace(self, waited=seconds)


def restart_refusal(
    state: RabbitmqClusterState | None, spec: RabbitmqInput | RollSpec
) -> str | None:
    """Why restarting ``spec``'s node now would be unsafe (None: it is safe)."""
    if state is None:
        return f"cannot read the cluster from {spec.node} (is it running?)"
    problems = state.problems(spec.nodes)
    if problems:
        return "; ".join(problems)
    if state.quorum_critical is None:
        return f"quorum check failed: {state.quorum_critical_detail[-300:] or 'no output'}"
    if state.quorum_critical:
        return (
            f"{spec.node} is quorum-critical (stopping it would take quorum queues below "
            f"their majority): {state.quorum_critical_detail[-300:]}"
        )
    return None


def recovery(spec: RollSpec) -> Wait:
    """The step right after :class:`Restart`: wait until every node runs again."""
    return Wait(
        HEALTHY_WAIT_SECONDS,
        refusal=(
            f"{spec.node} restarted but the cluster is not healthy after "
            f"{HEALTHY_WAIT_SECONDS} s; stopping here"
        ),
    )


def next_step(seen: RabbitmqClusterState | None, spec: RollSpec, done: RollProgress) -> Step:
    """The next step of this node's gated restart, from one reading of the cluster (see
    the module docstring for the rules)."""
    whole = seen is not None and not seen.problems(spec.nodes)
    if done.restarted:
        return Done() if whole else recovery(spec)
    what = f"RabbitMQ restart of {spec.node}"
    refused = restart_refusal(seen, spec)
    if done.waited is not None:
        reason = refused or "the cluster changed while waiting"
        return Refuse(f"{what} refused after {done.waited:.0f} s: {reason}; nothing was changed")
    if not done.waiting:
        # Something is already down: refuse at once rather than wait it out. A cluster
        # fit on this reading is still read again before the restart (the wait below).
        if not whole:
            return Refuse(f"{what} refused: {refused}; nothing was changed")
        return Wait(QUORUM_WAIT_SECONDS)
    return Restart(spec.node) if refused is None else Wait(QUORUM_WAIT_SECONDS)
