"""The roll's decisions, pure: from one reading of the cell, the next step.

:func:`.roll.rolling_restart` restarts the nodes whose running process differs from the
drop-in (or from the installed package): replicas one at a time, then the Sentinels one at
a time, then one ``SENTINEL FAILOVER`` away from the master, then the old master. It is
driven the way Patroni's ``ha.py`` is (and :mod:`operations.patroni.decide`): read the
cell, decide one step, perform it, read again and ask again. Deciding lives here and
reads nothing (``tests/test_redis_roll_decisions.py`` is a table of readings and the step
each one must give); :mod:`.roll` only performs steps, waits for their effect and reads.

What a decision sees (:class:`Observed`) is what the executor reads from the host running
the roll, over TLS: every data node's ``INFO replication``/``INFO server``/``CONFIG GET``
(:class:`ReplicationState`) and every Sentinel of the cell (:class:`SentinelView`), each
None when ``redis-cli`` could not run. What is pending is derived from that reading and
the installed package (:func:`roll_plan`), once, on the first reading: a node that drifts
later waits for the next run.

Every step that touches a node is gated by :func:`refusal` on the reading it is decided
on: every data node up, one master, replicas linked and in sync, every Sentinel up,
monitoring the same master with ``CKQUORUM`` passing and knowing all its peers
(:func:`facts.redis.cell_problems`). A refusal mid-roll says what the run already did.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from facts.redis import ReplicationState, SentinelView, cell_problems
from operations.redis.settings import static_settings
from plinth.rolling import so_far
from plinth.topology.redis import RedisInput


@dataclass(frozen=True)
class Observed:
    """One reading of the cell from the host running the roll."""

    state: ReplicationState | None
    """The data nodes (None: ``redis-cli`` did not run)."""
    view: SentinelView | None
    """The cell's Sentinels (None: ``redis-cli`` did not run; none in a following DC)."""


@dataclass(frozen=True)
class RollSpec:
    """What the roll wants of the cell (from the model and the package; fixed for the roll)."""

    static: dict[str, str] = field(default_factory=dict)
    """Settings fixed at start, as the drop-in sets them (:func:`.settings.static_settings`)."""
    version: str | None = None
    """The installed server package's upstream version (None: unknown): ``redis-server``
    or ``valkey-server`` (:attr:`.KeyValueStore.version_package`)."""
    upstream: tuple[str, ...] | None = None
    """A following DC: the active DC's data nodes, which its nodes must replicate."""

    @classmethod
    def of(cls, spec: RedisInput, version: str | None) -> RollSpec:
        return cls(static_settings(spec), version, spec.upstream_addresses)


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

    @property
    def data_addresses(self) -> tuple[str, ...]:
        return tuple(_address(entry) for entry in self.data_nodes)

    @property
    def sentinel_addresses(self) -> tuple[str, ...]:
        return tuple(_address(entry) for entry in self.sentinels)


def _address(entry: str) -> str:
    return entry.split(" ", 1)[0]


def package_version(debian_version: str) -> str | None:
    """The version the daemon of a Debian package reports (``INFO server``): the upstream
    part without Debian's repack suffix. ``5:7.0.15-1~deb12u1`` -> ``7.0.15``,
    ``8.1.1+dfsg1-3+deb13u3`` -> ``8.1.1``; None for an empty version."""
    upstream = debian_version.split(":", 1)[-1].split("-", 1)[0]
    return upstream.split("+", 1)[0].split("~", 1)[0] or None


def pending(
    static: dict[str, str],
    state: ReplicationState | None,
    view: SentinelView | None,
    version: str | None,
) -> RollPlan:
    """Data nodes whose process differs from ``static`` or runs another version than
    ``version``; Sentinels that run another version (reasons included)."""
    data = state.pending_restart(static, version) if state else []
    sentinels = []
    if view is not None:
        for s in view.sentinels:
            if s.up and version and s.version and s.version != version:
                sentinels.append(f"{s.address} (runs {s.version}, {version} installed)")
    return RollPlan(tuple(data), tuple(sentinels))


def roll_plan(
    spec: RedisInput,
    state: ReplicationState | None,
    view: SentinelView | None,
    version: str | None,
) -> RollPlan:
    """What a roll of ``spec``'s cell would restart (the preview's and the roll's plan)."""
    return pending(static_settings(spec), state, view, version)


# ---- the steps a decision can give ----


@dataclass(frozen=True)
class Pending:
    """The first reading found restarts pending: ``plan`` is the roll's, fixed for the run.
    Nothing touched; the cell is read again for the roll's gate."""

    plan: RollPlan


@dataclass(frozen=True)
class Start:
    """The cell passed the roll's gate: the roll begins. ``master``, the master now, is
    the node failed over away from and restarted last (None: no master in this cell, a
    following DC)."""

    master: str | None


@dataclass(frozen=True)
class RestartReplica:
    """Restart data node ``address`` (its own ``SHUTDOWN``; systemd starts it again)."""

    address: str


@dataclass(frozen=True)
class RestartSentinel:
    """Restart Sentinel ``address`` (its own ``SHUTDOWN``)."""

    address: str


@dataclass(frozen=True)
class Failover:
    """Move the master away from ``old``: writes paused there, ``SENTINEL FAILOVER`` sent
    to Sentinel ``sentinel`` once the replicas caught up, ``old`` demoted at once."""

    old: str
    sentinel: str


@dataclass(frozen=True)
class RestartOldMaster:
    """Restart ``address``, the master the roll began with, a replica since the failover."""

    address: str


@dataclass(frozen=True)
class Refuse:
    """The cell is not fit for the next step: stop the roll, logging ``message``."""

    message: str


@dataclass(frozen=True)
class Done:
    """Nothing (more) to do."""


Step = (
    Pending | Start | RestartReplica | RestartSentinel | Failover | RestartOldMaster | Refuse | Done
)


@dataclass(frozen=True)
class RollProgress:
    """What the roll has done so far: all the executor remembers between two readings."""

    plan: RollPlan | None = None
    """What the first reading found pending (None: nothing read yet)."""
    started: bool = False
    """The roll's gate passed."""
    master: str | None = None
    """The master when the roll's gate passed."""
    restarted: frozenset[str] = frozenset()
    """Data nodes this roll restarted."""
    sentinels: frozenset[str] = frozenset()
    """Sentinels this roll restarted."""
    failed_over: bool = False
    """The failover away from ``master`` happened."""

    def after(self, step: Step) -> RollProgress:
        """The progress once ``step`` was performed."""
        if isinstance(step, Pending):
            return replace(self, plan=step.plan)
        if isinstance(step, Start):
            return replace(self, started=True, master=step.master)
        if isinstance(step, RestartReplica | RestartOldMaster):
            return replace(self, restarted=self.restarted | {step.address})
        if isinstance(step, RestartSentinel):
            return replace(self, sentinels=self.sentinels | {step.address})
        if isinstance(step, Failover):
            return replace(self, failed_over=True)
        return self

    def next_target(self) -> tuple[str, str] | None:
        """What the plan restarts next once the roll started, before any gate: (``replica``,
        ``sentinel``, ``failover`` or ``old master``, address); None once all is done."""
        assert self.plan is not None
        data = self.plan.data_addresses
        for address in data:
            if address != self.master and address not in self.restarted:
                return "replica", address
        for address in self.plan.sentinel_addresses:
            if address not in self.sentinels:
                return "sentinel", address
        old = self.master
        if old is None or old not in data or old in self.restarted:
            return None
        return ("old master", old) if self.failed_over else ("failover", old)

    def changes(self) -> tuple[str, ...]:
        """What this roll did, for a refusal's message."""
        done = tuple(f"restarted {a}" for a in sorted(self.restarted))
        done += tuple(f"restarted Sentinel {a}" for a in sorted(self.sentinels))
        return done + ((f"failover away from {self.master}",) if self.failed_over else ())

    @property
    def finished(self) -> bool:
        """Every step of the plan was performed: nothing left, whatever a reading says (the
        executor does not read the cell again)."""
        return self.started and self.next_target() is None


def refusal(seen: Observed, spec: RollSpec, what: str, changed: tuple[str, ...] = ()) -> str | None:
    """The gate before any step: why ``what`` must not happen now (None: it may).
    ``changed``: what this run already did (a refusal mid-roll says so)."""
    problems = cell_problems(seen.state, seen.view, spec.upstream)
    if problems or seen.state is None or seen.view is None:
        return f"{what} refused: {'; '.join(problems)}; {so_far(changed)}"
    return None


def next_step(seen: Observed, spec: RollSpec, done: RollProgress) -> Step:
    """The next step of the rolling restart, from one reading of the cell.

    The first reading: nothing pending (or nothing readable) is :class:`Done`, else the
    plan (:class:`Pending`). The next reading is the roll's gate (:class:`Start`, which
    names the master). Then, each behind the gate: the pending data nodes other than that
    master, in the cell's order; the pending Sentinels; if that master was pending, one
    :class:`Failover` away from it and its restart.
    """
    plan = done.plan
    if plan is None:
        found = pending(spec.static, seen.state, seen.view, spec.version)
        return Pending(found) if found else Done()
    if not done.started:
        refused = refusal(seen, spec, f"rolling restart of {plan.describe()}")
        if refused is not None:
            return Refuse(refused)
        assert seen.state is not None  # the gate checks it
        master = seen.state.master
        return Start(master.address if master else None)
    target = done.next_target()
    if target is None:
        return Done()
    kind, address = target
    what = f"failover away from {address}" if kind == "failover" else f"restart of {kind} {address}"
    refused = refusal(seen, spec, what, done.changes())
    if refused is not None:
        return Refuse(refused)
    if kind == "replica":
        return RestartReplica(address)
    if kind == "sentinel":
        return RestartSentinel(address)
    if kind == "old master":
        return RestartOldMaster(address)
    assert seen.view is not None  # the gate checks it
    if not seen.view.sentinels:
        return Refuse(f"{what} refused: no Sentinel watches this cell; {so_far(done.changes())}")
    return Failover(address, seen.view.sentinels[0].address)


# ---- what the executor waits for (pure, on a fresh reading) ----


def healthy(seen: Observed, spec: RollSpec) -> bool:
    """The cell passes the gate (both reads answered, no problem)."""
    return (
        seen.state is not None
        and seen.view is not None
        and not cell_problems(seen.state, seen.view, spec.upstream)
    )


def run_id(seen: Observed, address: str, sentinel: bool) -> str | None:
    """The process id (``run_id``) of data node or Sentinel ``address`` in ``seen``."""
    if sentinel:
        view = seen.view
        return (
            next((s.run_id for s in view.sentinels if s.address == address), None) if view else None
        )
    node = seen.state.node(address) if seen.state is not None else None
    return node.run_id if node else None


def back_after_restart(
    seen: Observed, spec: RollSpec, address: str, before: str | None, sentinel: bool
) -> bool:
    """``address`` runs a new process (its ``run_id`` changed) and the cell is healthy."""
    if not healthy(seen, spec):
        return False
    now = run_id(seen, address, sentinel)
    return now is not None and now != before


def caught_up(state: ReplicationState | None, old: str) -> bool:
    """Master ``old`` has replicas and every one has its last offset (writes paused)."""
    master = state.node(old) if state else None
    return bool(
        master and master.replicas and all(link.offset >= master.offset for link in master.replicas)
    )


def moved_from(view: SentinelView | None, old: str) -> tuple[str, int] | None:
    """The master the Sentinels agree on once it is no longer ``old`` (None: not yet)."""
    master = view.master if view else None
    return master if master and master[0] != old else None
