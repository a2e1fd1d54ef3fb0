"""The DC commands' decisions, pure: from one observation of both sites, a refusal or an
ordered plan.

``plinth dc-switchover / dc-failover / dc-failback ENV --to DC`` (``dc-switchover`` is
built, :mod:`plinth.geo.execute`; the others not yet) work the way the rolls do (ADR
0013): read every site (:class:`~plinth.geo.observe.Observed`), ask the plan function,
perform the *first* step, read again and ask again, so a command interrupted anywhere
resumes from what it finds, and a second run finds the goal and does nothing. Deciding
lives here and reads nothing; ``tests/test_geo_decide.py`` is a table of observations and
the plan or refusal each must give, and ``tests/test_geo_simulate.py`` walks every plan
over generated observations to prove its invariants.

What every plan guarantees (the tests check each):

1. Never two writable PostgreSQL primaries, two writable Redis masters or two running
   Airflow schedulers across sites, at any point between two steps: the site that gives
   up writes is demoted, paused or fenced *before* the other is promoted or started.
2. ``dc-switchover`` loses nothing by construction: the target is promoted only after
   the source was demoted (writes stopped) and the target's standby leader has replayed
   everything the source's cluster holds; otherwise it waits (bounded) or refuses with
   both positions. Redis likewise: the candidate's offset must equal the paused master's.
3. ``dc-failover`` fences what answers of the old site first and names it; a site that
   does not answer at all is taken over only when the operator's acknowledgement names
   exactly that site; the data-loss window is computed and reported.
4. ``dc-failback`` rejoins the old site as a standby (follow, pg_rewind or re-clone, per
   member, from the timelines), then plans the switchover back.
5. When the observed state already is the goal, the plan is empty and says what it found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from facts.postgresql import format_lsn
from facts.redis import RedisNode
from plinth.geo.observe import Observed, PgMember, PgRole, SiteObservation

CATCH_UP_LIMIT = 64 * 1024 * 1024
"""Bytes of WAL the target may lag when a switchover starts: writes stay stopped until
it has replayed them, so a larger lag is refused rather than turned into a long gap."""
CATCH_UP_SECONDS = 30
"""How long a switchover waits, writes stopped, for the target to replay the source's
last byte (or a Redis candidate to reach the paused master's offset)."""
FOLLOW_SECONDS = 120
"""How long the old site may take to stream from the new one after a promotion."""
REJOIN_SECONDS = 1800
"""How long a rejoin may take (a re-clone copies the whole database)."""
REDIS_HOLD_MARGIN = 2
"""Seconds added to ``min-replicas-max-lag`` when a promoted Redis node holds writes
because an unreachable old master might still accept them."""


class Action(StrEnum):
    """What one step does; the execution layer maps each to commands on ``hosts``."""

    SYNC_RABBITMQ = "sync-rabbitmq-definitions"
    """``plinth rabbitmq sync-definitions`` from ``source`` into ``site`` (no messages)."""
    PURGE_RABBITMQ = "purge-rabbitmq"
    """Purge every queue of ``site``'s RabbitMQ (messages only): task messages queued
    before the site stopped; the scheduler re-derives what to run from the database."""
    STOP_AIRFLOW = "stop-airflow"
    """Stop and disable every Airflow unit on ``hosts``: the scheduler first (no new
    task), then the rest (workers warm-shutdown: running tasks finish)."""
    START_AIRFLOW = "start-airflow"
    """Enable and start the Airflow units on ``hosts``; waits for the api-server's health
    to show the scheduler healthy."""
    STOP_SENTINELS = "stop-sentinels"
    """Stop and disable ``redis-sentinel`` on ``hosts`` (nobody fails over that cell)."""
    START_SENTINELS = "start-sentinels"
    """Bootstrap ``sentinel.conf`` with the site's master, enable and start the
    Sentinels on ``hosts``; waits for ``SENTINEL CKQUORUM``."""
    PAUSE_REDIS = "pause-redis-writes"
    """``CLIENT PAUSE <ms> WRITE`` on the master ``hosts[0]``: writes wait, reads go on."""
    PROMOTE_REDIS = "promote-redis"
    """``REPLICAOF NO ONE`` on ``hosts[0]``, ``REPLICAOF hosts[0]`` on the others,
    ``replica-priority 100`` and ``CONFIG REWRITE`` on all. With ``seconds``: the new
    master holds writes (``CLIENT PAUSE``) that long first (a fence by replica loss)."""
    FOLLOW_REDIS = "follow-redis"
    """``hosts`` become replicas of ``source``'s master (``REPLICAOF``,
    ``replica-priority 0``, ``CONFIG REWRITE``; unmasked and started first if fenced)."""
    ADD_STANDBY_SLOT = "add-standby-slot"
    """Add the permanent slot of the site that will follow to ``site``'s dynamic
    configuration (``slots``), so WAL is kept for it from the promotion on."""
    DEMOTE_POSTGRESQL = "demote-postgresql"
    """``patronictl demote-cluster`` on ``site``: a standby cluster of ``source``'s VIP
    (its primary shuts down cleanly, its last WAL streamed to the connected standby);
    the slot it kept for ``source`` leaves its dynamic configuration."""
    VERIFY_CAUGHT_UP = "verify-caught-up"
    """Read both sites until ``site``'s standby leader has replayed everything
    ``source`` holds; refuse after ``seconds`` (nothing promoted)."""
    PROMOTE_POSTGRESQL = "promote-postgresql"
    """``patronictl promote-cluster`` on ``site``: ``standby_cluster`` removed, the
    standby leader promoted on a new timeline, its replicas follow."""
    VERIFY_FOLLOWING = "verify-following"
    """Read until ``site``'s standby leader streams from ``source`` on its timeline."""
    WRITE_MODEL = "write-model"
    """Write ``active_datacenter: <site>`` into ``inventory/<env>.yaml`` (only that
    line; the operator commits it; :func:`model_agrees_with_live` refuses a stale one)."""
    CONVERGE = "converge"
    """``plinth up <env>-<site>``: the files follow the model (VIP checks, Redis
    priorities, ``sentinel.conf``, unit enablement, the Patroni ``slots``)."""
    FENCE_POSTGRESQL = "fence-postgresql"
    """Stop and mask Patroni on ``hosts`` (it stops PostgreSQL; a postmaster left
    behind is stopped too), write the fence marker, read each member's last position
    (``pg_controldata``)."""
    FENCE_ETCD = "fence-etcd"
    """Stop and mask etcd on ``hosts``, a majority of the site's members: its quorum is
    gone, so no Patroni member there can keep or take the leader key."""
    WAIT_SELF_DEMOTION = "wait-self-demotion"
    """Wait ``seconds``: an unreachable primary (``hosts``) that cannot renew its leader
    key demotes itself within Patroni's ``ttl``."""
    FENCE_REDIS = "fence-redis"
    """Stop and mask ``redis-server`` on ``hosts``."""
    WAIT_REDIS_ISOLATION = "wait-redis-isolation"
    """Wait ``seconds``: an unreachable Redis master (``hosts``) that lost its last
    replica stops taking writes after ``min-replicas-max-lag``."""
    RELEASE_VIPS = "release-vips"
    """Stop and mask keepalived on ``hosts``: the site's VIPs go away."""
    UNFENCE = "unfence"
    """Unmask the units on ``hosts``, remove the fence marker, start etcd and keepalived
    (not Patroni, Redis, Sentinels or Airflow)."""
    REJOIN_POSTGRESQL = "rejoin-postgresql"
    """Set ``standby_cluster`` (``source``'s VIP) in ``site``'s dynamic configuration
    while Patroni is stopped (``patronictl edit-config``), then start Patroni on
    ``hosts``: each follows ``source``, pg_rewind first where it diverged."""
    RECLONE_POSTGRESQL = "reclone-postgresql"
    """Clear the data directory of ``hosts`` and start Patroni: each is cloned again
    (from its standby leader, or, when no member of the site is kept, the scope is
    removed and the site bootstraps as a standby of ``source``)."""
    VERIFY_STANDBY = "verify-standby"
    """Read until ``site`` is a healthy standby of ``source``: standby leader
    streaming on its timeline, lag under the catch-up limit, Redis replicas linked."""


@dataclass(frozen=True)
class Step:
    """One step of a plan, on one site."""

    site: str
    action: Action
    hosts: tuple[str, ...]
    waits_for: str
    """What the step waits for, or verifies, before the next one may start."""
    why: str
    source: str | None = None
    """The site the step makes ``site`` follow or copy from (demote, follow, rejoin,
    sync); None for the others."""
    seconds: float | None = None
    """A bound on the wait (None: the action's own timeout)."""
    refusal: str | None = None
    """What the executor says, stopping there, when the wait runs out."""

    def lines(self) -> list[str]:
        """The step as the commands print it: what, on which hosts; why; what it waits
        for (and how long, and what it says when that runs out)."""
        hosts = f" [{', '.join(self.hosts)}]" if self.hosts else ""
        source = f" <- {self.source}" if self.source else ""
        bound = f" (at most {self.seconds:.0f} s)" if self.seconds else ""
        out = [f"{self.site}: {self.action.value}{source}{hosts}", f"   why: {self.why}"]
        out.append(f"   then: {self.waits_for}{bound}")
        if self.refusal:
            out.append(f"   if not: {self.refusal}")
        return out


@dataclass(frozen=True)
class LossWindow:
    """What a failover may lose: WAL the old site had and the target never received."""

    received: int | None
    """The highest WAL position the target received (its promotion point once promoted)."""
    last_known: int | None
    """The highest WAL position known of the old site."""
    known_from: str
    """Where :attr:`last_known` comes from."""
    exact: bool
    """The old site's final position was read after it stopped (not a lower bound)."""
    redis_offset_gap: int | None = None
    """Replication bytes the old Redis master had beyond the promoted node (None:
    the old master's offset was not read)."""

    @property
    def postgresql_bytes(self) -> int | None:
        if self.received is None or self.last_known is None:
            return None
        return max(0, self.last_known - self.received)

    def describe(self) -> str:
        pg = self.postgresql_bytes
        if pg is None:
            text = "PostgreSQL: unknown (no position of the old site is known)"
        else:
            bound = "exactly" if self.exact else "at least"
            text = (
                f"PostgreSQL: {bound} {pg} bytes of WAL (old site {_lsn(self.last_known)}, "
                f"{self.known_from}; target received {_lsn(self.received)})"
            )
        if self.redis_offset_gap is not None:
            text += f"; Redis: {max(0, self.redis_offset_gap)} bytes of replication stream"
        else:
            text += "; Redis: unknown (the old master's offset was not read)"
        return text


@dataclass(frozen=True)
class Plan:
    """What a command will do, in order; empty when the goal is already observed."""

    command: str
    target: str
    found: str
    """The state observed, one line per site."""
    steps: tuple[Step, ...] = ()
    fenced: tuple[str, ...] = ()
    """Hosts this plan fences."""
    acknowledged: tuple[str, ...] = ()
    """Hosts taken for lost on the operator's acknowledgement (nothing checked there)."""
    loss: LossWindow | None = None
    notes: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return not self.steps

    def lines(self) -> list[str]:
        out = [f"{self.command} --to {self.target}", f"found: {self.found}"]
        if self.done:
            out.append("nothing to do: the goal is already reached")
        for i, step in enumerate(self.steps, 1):
            first, *rest = step.lines()
            out += [f"{i}. {first}", *rest]
        if self.fenced:
            out.append(f"fences: {', '.join(self.fenced)}")
        if self.acknowledged:
            out.append(f"taken for lost (acknowledged): {', '.join(self.acknowledged)}")
        if self.loss is not None:
            out.append(f"data-loss window: {self.loss.describe()}")
        out += [f"note: {note}" for note in self.notes]
        return out


@dataclass(frozen=True)
class Refusal:
    """Nothing is done: why, naming hosts and positions."""

    command: str
    reason: str
    found: str

    def lines(self) -> list[str]:
        return [f"{self.command} refused: {self.reason}", f"found: {self.found}"]


# ---- what the observation says ----


def _lsn(value: int | None) -> str:
    return format_lsn(value) if value is not None else "unknown"


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _pg_summary(observed: Observed, site: SiteObservation) -> str:
    pg = site.postgresql
    if not observed.layout(site.name).postgresql:
        return "no PostgreSQL"
    writable = pg.writable
    if len(writable) > 1:
        return f"PostgreSQL: several primaries {_names([m.name for m in writable])}"
    leader = pg.leader
    if leader is not None and leader.role is PgRole.PRIMARY:
        text = f"PostgreSQL primary {leader.name} (timeline {leader.timeline}, "
        text += f"flushed {_lsn(leader.flushed)})"
    elif leader is not None:
        text = f"PostgreSQL standby of {pg.standby_of or '?'}: standby leader {leader.name} "
        text += f"{leader.state} (timeline {leader.timeline}, received "
        text += f"{_lsn(leader.received)}, replayed {_lsn(leader.replayed)})"
    elif pg.members:
        states = ", ".join(f"{m.name} {m.state}" for m in pg.members)
        text = f"PostgreSQL without a leader ({states}; reaches {_lsn(pg.position)})"
    else:
        text = "PostgreSQL: no member answers"
    if pg.standby_of and (leader is None or leader.role is PgRole.PRIMARY):
        text += f", configured as a standby of {pg.standby_of}"
    return text


def _redis_summary(observed: Observed, site: SiteObservation) -> str:
    redis = site.redis
    if not observed.layout(site.name).redis:
        return "no Redis"
    masters = redis.masters
    if len(masters) == 1:
        paused = " (writes paused)" if redis.paused else ""
        text = f"Redis master {observed.host_of(masters[0])}{paused}"
    elif masters:
        text = f"Redis masters {_names([observed.host_of(n) for n in masters])}"
    else:
        up = [n for n in redis.nodes if n.up]
        followed = sorted({observed.host_of_address(n.master_host) for n in up})
        text = f"Redis replicas of {_names(followed)}" if up else "Redis: no node answers"
    running = sorted(redis.sentinels_running)
    return text + (f", Sentinels running on {_names(running)}" if running else "")


def _describe_site(observed: Observed, site: SiteObservation) -> str:
    parts = [_pg_summary(observed, site), _redis_summary(observed, site)]
    airflow = site.airflow_running
    parts.append(f"Airflow running on {_names(airflow)}" if airflow else "Airflow stopped")
    if site.unreachable:
        parts.append(f"no answer from {_names(sorted(site.unreachable))}")
    if site.fenced:
        parts.append(f"fenced: {_names(sorted(site.fenced))}")
    return f"{site.name}: " + "; ".join(parts)


def describe(observed: Observed) -> str:
    """The observed state, one clause per site, and what the model names."""
    sites = [_describe_site(observed, s) for s in observed.sites]
    return " | ".join([*sites, f"the model names {observed.model_active} active"])


def _site_refusal(observed: Observed, target: str, command: str) -> Refusal | None:
    found = describe(observed)
    names = observed.topology.names
    if target not in names:
        return Refusal(command, f"unknown datacenter {target!r}; known: {_names(names)}", found)
    with_pg = [s.name for s in observed.topology.sites if s.postgresql]
    if len(observed.sites) != 2 or len(with_pg) != 2:
        return Refusal(
            command,
            f"the DC commands handle two sites with PostgreSQL; this environment has "
            f"{len(observed.sites)} datacenter(s), {len(with_pg)} with PostgreSQL",
            found,
        )
    return None


def _streams_from(observed: Observed, site: SiteObservation, source: str) -> bool:
    """``site`` is a standby cluster of ``source`` whose leader streams on the timeline
    ``source`` writes."""
    leader = site.postgresql.leader
    src = observed.site(source).postgresql.leader
    return (
        site.postgresql.standby_of == source
        and leader is not None
        and leader.role is PgRole.STANDBY_LEADER
        and leader.state == "streaming"
        and src is not None
        and leader.timeline == src.timeline
    )


def _redis_candidate(site: SiteObservation) -> RedisNode | None:
    """The node to promote: the highest offset, then the first address."""
    up = [n for n in site.redis.nodes if n.up]
    return min(up, key=lambda n: (-n.offset, n.address)) if up else None


# ---- dc-switchover ----


def plan_switchover(
    observed: Observed, target: str, catch_up_limit: int = CATCH_UP_LIMIT
) -> Plan | Refusal:
    """The planned move of the active site to ``target``, both sites up: writes stopped at
    the source (Airflow, Redis paused, PostgreSQL demoted) before the target, caught up
    to the last byte, is promoted; then Airflow there, the model file, the files.

    Refused when any host of either site does not answer (a planned move needs both), a
    site is fenced (that is ``dc-failback``'s), two primaries are writable, the target
    does not stream from the source or lags more than ``catch_up_limit`` bytes, or a
    half-done move left a state this function cannot finish. Resumes any state a
    previous run left between two of its own steps.
    """
    command = "dc-switchover"
    refused = _site_refusal(observed, target, command)
    if refused is not None:
        return refused
    found = describe(observed)
    tgt = observed.site(target)
    src = observed.others(target)[0]

    def refuse(reason: str) -> Refusal:
        return Refusal(command, reason, found)

    silent = sorted(tgt.unreachable | src.unreachable)
    if silent:
        return refuse(
            f"a planned switchover needs every host of both sites; no answer from "
            f"{_names(silent)}; nothing was changed (if {src.name} is lost: "
            f"dc-failover --to {target})"
        )
    for site in (src, tgt):
        if site.fenced:
            return refuse(
                f"{site.name} is fenced ({_names(sorted(site.fenced))}) since a dc-failover: "
                f"dc-failback --to {site.name} rejoins it first; nothing was changed"
            )
    both = [m.name for s in (src, tgt) for m in s.postgresql.writable]
    if src.postgresql.writable and tgt.postgresql.writable:
        return refuse(
            f"two writable PostgreSQL primaries ({_names(both)}): split brain; nothing was "
            f"changed. Fence one site first (dc-failover --to <the site to keep> fences "
            f"the other)"
        )
    for site in (src, tgt):
        if site.postgresql.paused:
            return refuse(f"{site.name}'s Patroni cluster is paused (maintenance mode)")
        if not site.postgresql.config_read:
            return refuse(f"cannot read {site.name}'s Patroni dynamic configuration")
    down = [
        f"{observed.host_of(n)} ({n.error})" for s in (src, tgt) for n in s.redis.nodes if not n.up
    ]
    if down:
        return refuse(f"Redis nodes do not answer: {_names(down)}; nothing was changed")

    pg = _pg_switch(observed, src, tgt, catch_up_limit)
    if isinstance(pg, str):
        return refuse(pg)
    redis = _redis_switch(observed, src, tgt)
    if isinstance(redis, str):
        return refuse(redis)
    pg_steps, pg_notes = pg
    redis_steps, redis_notes = redis

    before: list[Step] = []
    after: list[Step] = []
    if tgt.rabbitmq_missing != 0 and not tgt.airflow_running_everywhere(observed.layout(target)):
        missing = "unknown" if tgt.rabbitmq_missing is None else str(tgt.rabbitmq_missing)
        before.append(
            Step(
                target,
                Action.SYNC_RABBITMQ,
                observed.layout(target).rabbitmq,
                "a second read finds nothing missing",
                f"Airflow's queues, exchanges and bindings of {src.name} in {target} before "
                f"its Celery starts there (missing: {missing}); no message is copied",
                source=src.name,
            )
        )
    if src.airflow_running:
        before.append(
            Step(
                src.name,
                Action.STOP_AIRFLOW,
                src.airflow_running,
                "every Airflow unit inactive",
                "one scheduler across sites: the source's stops before the target's starts, "
                "and no task writes while the database changes sides",
            )
        )
    layout = observed.layout(target)
    idle = tuple(
        h
        for h in layout.airflow
        if h not in tgt.airflow_units or not all(tgt.airflow_units[h].values())
    )
    if idle:
        after += _purge(observed, tgt)
        after.append(
            Step(
                target,
                Action.START_AIRFLOW,
                idle,
                "the api-server's health shows the scheduler healthy",
                f"Airflow runs where the writable database is, once {src.name}'s is stopped",
            )
        )
    steps = before + pg_steps + redis_steps + after
    if observed.model_active != target:
        steps.append(_write_model(observed, target))
    if tgt.applied_active != target:
        steps.append(_converge(target, "the new active site"))
    if src.applied_active != target:
        steps.append(_converge(src.name, "now standing by"))
    if not steps:
        found = f"{target} is already the active site and {src.name} follows it. {found}"
    return Plan(command, target, found, tuple(steps), notes=tuple(pg_notes + redis_notes))


def _purge(observed: Observed, site: SiteObservation) -> list[Step]:
    """The purge of ``site``'s queued messages, before its Airflow starts (none when it
    holds none)."""
    if site.rabbitmq_messages == 0 or not observed.layout(site.name).rabbitmq:
        return []
    count = "an unknown number of" if site.rabbitmq_messages is None else site.rabbitmq_messages
    return [
        Step(
            site.name,
            Action.PURGE_RABBITMQ,
            observed.layout(site.name).rabbitmq,
            "every queue of the site holds no message",
            f"{count} message(s) queued before {site.name}'s Airflow stopped: run again "
            f"they would run tasks twice (the scheduler re-derives what to run from the "
            f"database)",
        )
    ]


def _write_model(observed: Observed, target: str) -> Step:
    return Step(
        target,
        Action.WRITE_MODEL,
        (),
        f"inventory/{observed.topology.environment}.yaml names {target}",
        f"the file said {observed.model_active}; commit it: a checkout that still says "
        f"{observed.model_active} is refused by plinth up (the live state disagrees)",
    )


def _converge(site: str, why: str) -> Step:
    return Step(
        site,
        Action.CONVERGE,
        (),
        "the run ends without a failed host",
        f"{site} is {why}: VIP checks, Redis priorities, sentinel.conf, unit enablement and "
        f"Patroni slots follow the model",
    )


def _pg_switch(
    observed: Observed, src: SiteObservation, tgt: SiteObservation, limit: int
) -> tuple[list[Step], list[str]] | str:
    """PostgreSQL's part of a switchover to ``tgt``: the steps, or why not."""
    spg, tpg = src.postgresql, tgt.postgresql
    steps: list[Step] = []
    notes: list[str] = []
    slot = observed.layout(src.name).slot

    def add_slot() -> None:
        if slot not in tpg.slots:
            steps.append(
                Step(
                    tgt.name,
                    Action.ADD_STANDBY_SLOT,
                    (),
                    f"slot {slot} in {tgt.name}'s dynamic configuration",
                    f"{src.name} streams from {tgt.name} through it once {tgt.name} is promoted",
                )
            )

    def follow(promoted_now: bool = True) -> None:
        # After a promotion the source must follow the new timeline: always verified.
        if promoted_now or not _streams_from(observed, src, tgt.name):
            leader = spg.leader
            steps.append(
                Step(
                    src.name,
                    Action.VERIFY_FOLLOWING,
                    (leader.name,) if leader else observed.layout(src.name).postgresql,
                    f"{src.name}'s standby leader streams from {tgt.name} on its timeline",
                    f"{src.name} keeps a copy of every byte {tgt.name} writes from now on",
                    source=tgt.name,
                    seconds=FOLLOW_SECONDS,
                    refusal=(
                        f"{tgt.name} is active and writable, but {src.name} does not stream "
                        f"from it after {FOLLOW_SECONDS} s: plinth status shows why "
                        f"(a member that diverged is rejoined by dc-failback)"
                    ),
                )
            )

    if tpg.writable:
        if spg.standby_of != tgt.name:
            return (
                f"{tgt.name} is already writable but {src.name} is not its standby "
                f"({_pg_summary(observed, src)}); dc-failback --to {src.name} rejoins it (and then "
                f"switches back to it)"
            )
        add_slot()
        follow(promoted_now=False)
        return steps, notes

    tleader = tpg.leader
    if tleader is None or tleader.role is not PgRole.STANDBY_LEADER:
        return f"{tgt.name} has no running standby leader ({_pg_summary(observed, tgt)})"
    if spg.writable:
        primary = spg.writable[0]
        if tpg.standby_of != src.name or tleader.state != "streaming":
            return (
                f"{tgt.name} does not stream from {src.name} (standby of "
                f"{tpg.standby_of or 'nothing'}, standby leader {tleader.name} {tleader.state})"
            )
        if tleader.timeline != primary.timeline:
            return (
                f"{tgt.name} is on timeline {tleader.timeline}, {src.name} on "
                f"{primary.timeline}: it has not followed {src.name}'s last promotion"
            )
        lag = (primary.flushed or 0) - (tleader.replayed or 0)
        if primary.flushed is None or tleader.replayed is None:
            return f"positions unknown: {src.name} flushed {_lsn(primary.flushed)}, " + (
                f"{tgt.name} replayed {_lsn(tleader.replayed)}"
            )
        if lag > limit:
            return (
                f"{tgt.name} lags {lag} bytes (replayed {_lsn(tleader.replayed)}, "
                f"{src.name} flushed {_lsn(primary.flushed)}), more than {limit}: writes "
                f"would stay stopped until it replays them; nothing was changed"
            )
        if lag > 0:
            notes.append(
                f"{tgt.name} lags {lag} bytes now; writes stay stopped until it replays "
                f"them (at most {CATCH_UP_SECONDS} s, else refused with nothing promoted)"
            )
        add_slot()
        steps.append(
            Step(
                src.name,
                Action.DEMOTE_POSTGRESQL,
                tuple(m.name for m in spg.members if m.running),
                f"{src.name} has no primary; its standby leader runs",
                f"writes stop at {src.name} (clean shutdown: its last WAL goes to "
                f"{tgt.name}) before {tgt.name} may be promoted",
                source=tgt.name,
            )
        )
        steps.append(_verify(src.name, tgt.name, tleader.name, primary.flushed, tleader.replayed))
    else:
        # No primary anywhere: a switchover between its demote and its promote (this
        # direction or the way back), or a site that is simply down.
        if spg.standby_of != tgt.name or tpg.standby_of != src.name:
            return (
                f"no writable primary, and the sites are not as a switchover leaves them "
                f"({src.name} standby of {spg.standby_of or 'nothing'}, {tgt.name} standby of "
                f"{tpg.standby_of or 'nothing'}): if {src.name} is lost, dc-failover --to "
                f"{tgt.name}"
            )
        final = spg.position
        sleader = spg.leader
        if final is None or sleader is None:
            return f"{src.name}'s last position is unknown ({_pg_summary(observed, src)})"
        if sleader.timeline != tleader.timeline:
            return (
                f"{tgt.name} is on timeline {tleader.timeline}, {src.name} on "
                f"{sleader.timeline}; nothing was promoted"
            )
        replayed = tleader.replayed or 0
        received = max(replayed, tleader.received or 0)
        if replayed < final:
            if received < final and tleader.state != "streaming":
                return (
                    f"writes are stopped, but {tgt.name} received only {_lsn(received)} of "
                    f"{src.name}'s {_lsn(final)} ({final - received} bytes short) and no "
                    f"longer streams: promoting it would lose them; nothing was promoted "
                    f"(no site is writable: dc-switchover --to {src.name} promotes "
                    f"{src.name} back, it holds every byte)"
                )
            steps.append(_verify(src.name, tgt.name, tleader.name, final, replayed))
        add_slot()
    steps.append(
        Step(
            tgt.name,
            Action.PROMOTE_POSTGRESQL,
            tuple(m.name for m in tpg.members if m.running),
            f"{tgt.name}'s leader is a running primary",
            f"{tgt.name} takes writes; it holds every byte {src.name} wrote",
        )
    )
    follow()
    return steps, notes


def _verify(src: str, tgt: str, leader: str, final: int | None, replayed: int | None) -> Step:
    behind = (final or 0) - (replayed or 0)
    return Step(
        tgt,
        Action.VERIFY_CAUGHT_UP,
        (leader,),
        f"{leader} replayed {src}'s last WAL position, read after its writes stopped "
        f"(now {src} {_lsn(final)}, {tgt} replayed {_lsn(replayed)}, {max(0, behind)} bytes)",
        "zero loss by construction: promote only a site that holds every byte",
        source=src,
        seconds=CATCH_UP_SECONDS,
        refusal=(
            f"{tgt} did not replay {src}'s last WAL within {CATCH_UP_SECONDS} s of the "
            f"writes stopping; nothing was promoted and no site is writable: "
            f"dc-switchover --to {src} promotes {src} back (it holds every byte), or run "
            f"dc-switchover --to {tgt} again once it caught up"
        ),
    )


def _redis_switch(
    observed: Observed, src: SiteObservation, tgt: SiteObservation
) -> tuple[list[Step], list[str]] | str:
    """Redis's part of a switchover: the source's master paused, the target's best node
    promoted once it has every byte, the source's nodes following it."""
    if not observed.layout(tgt.name).redis:
        return [], []
    steps: list[Step] = []
    notes: list[str] = []
    tmasters = tgt.redis.masters
    if len(tmasters) > 1:
        return f"several Redis masters in {tgt.name}: {_names([n.address for n in tmasters])}"
    if src.redis.sentinels_running:
        steps.append(
            Step(
                src.name,
                Action.STOP_SENTINELS,
                tuple(sorted(src.redis.sentinels_running)),
                "the units are inactive",
                f"{src.name}'s Sentinels would fail its master over (or turn a promoted "
                f"{tgt.name} node back into a replica) while it is handed over",
            )
        )
    if not tmasters:
        master = src.redis.master
        if master is None:
            summary = _redis_summary(observed, src)
            return f"no single Redis master in {src.name} to hand over ({summary})"
        strays = [
            observed.host_of(n)
            for n in tgt.redis.nodes
            if n.master_host != master.address or not n.master_link_up
        ]
        if strays:
            return f"{tgt.name}'s Redis nodes {_names(strays)} do not replicate {src.name}'s master"
        candidate = _redis_candidate(tgt)
        assert candidate is not None  # every node is up (checked by the caller)
        if not src.redis.paused:
            steps.append(
                Step(
                    src.name,
                    Action.PAUSE_REDIS,
                    (observed.host_of(master),),
                    "writes held; the master's offset stops moving",
                    "no Redis write lands on the old master after the hand-over begins",
                )
            )
        others = tuple(observed.host_of(n) for n in tgt.redis.nodes if n != candidate)
        steps.append(
            Step(
                tgt.name,
                Action.PROMOTE_REDIS,
                (observed.host_of(candidate), *others),
                f"{observed.host_of(candidate)}'s offset equals the paused master's "
                f"(now {candidate.offset} of {master.offset}), then it is master",
                "zero loss: the candidate has every write the paused master took",
                seconds=CATCH_UP_SECONDS,
                refusal=(
                    f"{observed.host_of(candidate)} did not reach the paused master's offset "
                    f"within {CATCH_UP_SECONDS} s; nothing was promoted (the pause ends by "
                    f"itself)"
                ),
            )
        )
        new_master = candidate.address
    else:
        new_master = tmasters[0].address
        if src.redis.masters and not src.redis.paused:
            notes.append(
                f"{src.name}'s {_names([observed.host_of(n) for n in src.redis.masters])} "
                f"takes writes while {tgt.name} has a master: they are discarded when it "
                f"follows {tgt.name}"
            )
    leaders = tuple(
        observed.host_of(n)
        for n in src.redis.nodes
        if not (n.role == "slave" and n.master_host == new_master)
    )
    if leaders:
        steps.append(
            Step(
                src.name,
                Action.FOLLOW_REDIS,
                leaders,
                f"each replicates {tgt.name}'s master, link up",
                f"{src.name}'s nodes keep a copy and can take over again later",
                source=tgt.name,
            )
        )
    layout = observed.layout(tgt.name)
    stopped = tuple(h for h in layout.sentinels if h not in tgt.redis.sentinels_running)
    if stopped:
        steps.append(
            Step(
                tgt.name,
                Action.START_SENTINELS,
                stopped,
                "SENTINEL CKQUORUM answers OK on each",
                f"clients find the master through {tgt.name}'s Sentinels "
                f"({layout.redis_master_name})",
            )
        )
    return steps, notes


# ---- dc-failover ----


@dataclass(frozen=True)
class _Fence:
    steps: tuple[Step, ...] = ()
    fenced: tuple[str, ...] = ()
    acknowledged: tuple[str, ...] = ()
    redis_hold: float | None = None
    """Seconds a promoted Redis node must hold writes (an unreachable old master may
    still accept them until it has lost its replicas for ``min-replicas-max-lag``)."""
    notes: tuple[str, ...] = ()


def plan_failover(
    observed: Observed, target: str, acknowledged_lost_site: str | None = None
) -> Plan | Refusal:
    """Make ``target`` the active site while the active one is lost or cut off.

    Whatever of the old site answers is fenced first (Airflow stopped; Patroni stopped
    and masked, PostgreSQL with it; if some of its PostgreSQL members do not answer,
    etcd's quorum taken away and Patroni's ``ttl`` waited; Sentinels and Redis stopped;
    VIPs released), and the plan names it. A site none of whose hosts answer is taken
    for lost only when ``acknowledged_lost_site`` names it: the operator asserts that no
    host there can take a write until ``dc-failback``. Then the target's PostgreSQL and a
    Redis node (the highest offset) are promoted, its Sentinels and Airflow started, the
    model file written. The data-loss window is in :attr:`Plan.loss`.
    """
    command = "dc-failover"
    refused = _site_refusal(observed, target, command)
    if refused is not None:
        return refused
    found = describe(observed)
    tgt = observed.site(target)
    old = observed.others(target)[0]

    def refuse(reason: str) -> Refusal:
        return Refusal(command, reason, found)

    ack = acknowledged_lost_site
    if ack is not None and ack not in observed.topology.names:
        return refuse(
            f"--acknowledge-lost names {ack!r}, not a datacenter of "
            f"{observed.topology.environment} ({_names(observed.topology.names)})"
        )
    if ack == target:
        return refuse(
            f"--acknowledge-lost names {target}, the site to promote; it names the lost one"
        )
    if ack is not None and ack != old.name:
        return refuse(f"--acknowledge-lost names {ack}, but the site given up is {old.name}")
    if tgt.fenced:
        return refuse(
            f"{target} is fenced ({_names(sorted(tgt.fenced))}): dc-failback --to {target} "
            f"rejoins it; nothing was changed"
        )
    tpg = tgt.postgresql
    tleader = tpg.leader
    if tleader is None:
        return refuse(
            f"{target}'s PostgreSQL has no running leader ({_pg_summary(observed, tgt)}): "
            f"nothing to promote; nothing was changed"
        )
    if not tpg.writable and tpg.standby_of != old.name:
        return refuse(
            f"{target} is not a standby cluster of {old.name} ({_pg_summary(observed, tgt)})"
        )
    unacknowledged = not old.reachable and ack != old.name
    fence = _fence(observed, old, tgt, old.name if unacknowledged else ack)
    if isinstance(fence, str):
        return refuse(fence)

    steps = list(fence.steps)
    if not tpg.writable:
        slot = observed.layout(old.name).slot
        if slot not in tpg.slots:
            steps.append(
                Step(
                    target,
                    Action.ADD_STANDBY_SLOT,
                    (),
                    f"slot {slot} in {target}'s dynamic configuration",
                    f"WAL is kept from the promotion on for {old.name}'s rejoin (dc-failback)",
                )
            )
        steps.append(
            Step(
                target,
                Action.PROMOTE_POSTGRESQL,
                tuple(m.name for m in tpg.members if m.running),
                f"{target}'s leader is a running primary",
                f"{target} takes writes"
                + (f", after {old.name} was fenced" if fence.steps else f"; {old.name} is lost"),
            )
        )
    redis = _redis_takeover(observed, tgt, fence.redis_hold)
    if isinstance(redis, str):
        return refuse(redis)
    steps += redis
    layout = observed.layout(target)
    idle = tuple(
        h
        for h in layout.airflow
        if h in tgt.reachable and not all(tgt.airflow_units.get(h, {"?": False}).values())
    )
    if idle:
        steps += _purge(observed, tgt)
        steps.append(
            Step(
                target,
                Action.START_AIRFLOW,
                idle,
                "the api-server's health shows the scheduler healthy",
                f"Airflow runs where the writable database is; {old.name}'s is stopped or "
                f"cannot reach a writable database",
            )
        )
    if observed.model_active != target:
        steps.append(_write_model(observed, target))
    if tgt.applied_active != target:
        steps.append(_converge(target, "the new active site"))
    notes = list(fence.notes)
    if not old.unreachable and old.postgresql.writable and _streams_from(observed, tgt, old.name):
        notes.append(
            f"{old.name} answers and {target} streams from it: dc-switchover --to {target} "
            f"would lose nothing"
        )
    silent_target = sorted(tgt.unreachable)
    if silent_target:
        notes.append(
            f"{target} hosts that do not answer are left as they are: {_names(silent_target)}"
        )
    if unacknowledged and steps:
        return refuse(
            f"no host of {old.name} answers ({_names(sorted(old.unreachable))}); nothing "
            f"was changed. If {old.name} is down or cut off from its clients, rerun with "
            f"--acknowledge-lost {old.name}: it asserts that no host of {old.name} can take "
            f"a write until dc-failback brings it back"
        )
    if unacknowledged:
        fence = replace(fence, acknowledged=())
    if not steps:
        found = (
            f"{target} is already the active site; {old.name} "
            + ("follows it" if old.postgresql.standby_of == target else "is fenced or lost")
            + f". {found}"
        )
        if not old.reachable:
            notes.append(
                f"{old.name} does not answer: whether it is still fenced cannot be checked"
            )
    return Plan(
        command,
        target,
        found,
        tuple(steps),
        fenced=fence.fenced,
        acknowledged=fence.acknowledged,
        loss=loss_window(observed, old, tgt),
        notes=tuple(notes),
    )


def _fence(
    observed: Observed, old: SiteObservation, tgt: SiteObservation, ack: str | None
) -> _Fence | str:
    """What fences ``old`` from here, or why it cannot be fenced (without the ack)."""
    layout = observed.layout(old.name)
    topology = observed.topology
    acked = ack == old.name
    if not old.reachable:
        # plan_failover refuses, unless acknowledged, when anything is left to do.
        return _Fence(acknowledged=tuple(sorted(old.unreachable)))
    opg = old.postgresql
    pg_follows = opg.config_read and opg.standby_of == tgt.name and not opg.writable
    reach = old.reachable
    steps: list[Step] = []
    notes: list[str] = []
    if acked and not old.unreachable:
        notes.append(f"--acknowledge-lost {old.name} was not needed: every host of it answers")
    if old.airflow_running:
        steps.append(
            Step(
                old.name,
                Action.STOP_AIRFLOW,
                old.airflow_running,
                "every Airflow unit inactive",
                "one scheduler across sites",
            )
        )
    if not pg_follows:
        pg_hosts = tuple(
            h
            for h in layout.postgresql
            if h in reach and (h not in old.fenced or _is_running(opg.member(h)))
        )
        if pg_hosts:
            steps.append(
                Step(
                    old.name,
                    Action.FENCE_POSTGRESQL,
                    pg_hosts,
                    "no PostgreSQL runs there; each member's last WAL position read",
                    f"no write lands on {old.name} once {tgt.name} takes writes",
                )
            )
        unreachable_pg = tuple(h for h in layout.postgresql if h in old.unreachable)
        may_write = opg.standby_of is None or not opg.config_read
        if unreachable_pg and may_write and not acked:
            etcd_reach = [h for h in layout.etcd if h in reach]
            if 2 * len(etcd_reach) <= len(layout.etcd):
                return (
                    f"{old.name}'s PostgreSQL members {_names(unreachable_pg)} do not answer and "
                    f"the part that does holds only {len(etcd_reach)} of {len(layout.etcd)} etcd "
                    f"members: their quorum cannot be taken away from here, so they could "
                    f"still take writes; nothing was changed. If they are down or cut off from "
                    f"their clients, rerun with --acknowledge-lost {old.name}"
                )
            etcd_up = tuple(h for h in etcd_reach if h in old.etcd_running or h not in old.fenced)
            if etcd_up:
                steps.append(
                    Step(
                        old.name,
                        Action.FENCE_ETCD,
                        etcd_up,
                        "etcd stopped on each: the site's etcd has no quorum",
                        f"{_names(unreachable_pg)} cannot be reached; without a quorum their "
                        f"Patroni cannot keep a leader key",
                    )
                )
            wait = topology.self_demotion_seconds - old.fence_age.get("etcd", 0.0)
            if etcd_up or wait > 0:
                seconds = float(topology.self_demotion_seconds if etcd_up else wait)
                steps.append(
                    Step(
                        old.name,
                        Action.WAIT_SELF_DEMOTION,
                        unreachable_pg,
                        f"{seconds:.0f} s (Patroni ttl + loop_wait) since etcd's quorum went",
                        "an unreachable primary that cannot renew its leader key demotes itself",
                        seconds=seconds,
                    )
                )
    if old.redis.sentinels_running:
        steps.append(
            Step(
                old.name,
                Action.STOP_SENTINELS,
                tuple(sorted(old.redis.sentinels_running)),
                "the units are inactive",
                f"{old.name}'s Sentinels would turn a promoted {tgt.name} node back into a "
                f"replica, or promote one of their own",
            )
        )
    tnodes = {n.address for n in tgt.redis.nodes}
    # Following: every node that answers replicates a node of the target (at least one
    # answers). No answer at all is no evidence of following.
    answering = [n for n in old.redis.nodes if n.up]
    redis_follows = bool(answering) and all(
        n.role == "slave" and n.master_host in tnodes for n in answering
    )
    hold: float | None = None
    if not redis_follows:
        up = {observed.host_of(n) for n in old.redis.nodes if n.up}
        redis_hosts = tuple(
            h for h in layout.redis if h in reach and (h in up or h not in old.fenced)
        )
        if redis_hosts:
            steps.append(
                Step(
                    old.name,
                    Action.FENCE_REDIS,
                    redis_hosts,
                    "redis-server inactive on each",
                    f"no Redis write lands on {old.name}",
                )
            )
    unreachable_redis = tuple(h for h in layout.redis if h in old.unreachable)
    if unreachable_redis and not acked and not redis_follows:
        needed = topology.redis_min_replicas_to_write
        if needed < 1 or len(unreachable_redis) > needed:
            return (
                f"{old.name}'s Redis nodes {_names(unreachable_redis)} do not answer: with "
                f"min-replicas-to-write {needed}, a master among them could keep enough "
                f"replicas to take writes; nothing was changed. If they are down or cut off "
                f"from their clients, rerun with --acknowledge-lost {old.name}"
            )
        isolation = float(topology.redis_min_replicas_max_lag + REDIS_HOLD_MARGIN)
        if not tgt.redis.masters:
            hold = isolation
            notes.append(
                f"{_names(unreachable_redis)} may still be a Redis master: it stops taking "
                f"writes {topology.redis_min_replicas_max_lag} s after losing its last replica "
                f"(min-replicas-to-write {needed}), so the promoted node holds writes "
                f"{hold:.0f} s"
            )
        else:
            fenced_now = any(s.action is Action.FENCE_REDIS for s in steps)
            left = isolation if fenced_now else isolation - old.fence_age.get("redis", 0.0)
            if left > 0:
                steps.append(
                    Step(
                        old.name,
                        Action.WAIT_REDIS_ISOLATION,
                        unreachable_redis,
                        f"{left:.0f} s (min-replicas-max-lag and a margin) since {old.name}'s "
                        f"answering Redis nodes stopped",
                        f"{tgt.name} has a master already; a master among "
                        f"{_names(unreachable_redis)} has no replica left and stops taking "
                        f"writes (min-replicas-to-write {needed})",
                        seconds=left,
                    )
                )
    if not pg_follows:
        vip_hosts = tuple(
            h
            for h in layout.keepalived
            if h in reach and (h in old.keepalived_running or h not in old.fenced)
        )
        if vip_hosts:
            steps.append(
                Step(
                    old.name,
                    Action.RELEASE_VIPS,
                    vip_hosts,
                    "keepalived inactive on each; the VIPs answer nowhere in the site",
                    f"clients of {old.name} get no answer rather than a fenced database",
                )
            )
    silent = sorted(old.unreachable)
    schedulers = [h for h in layout.schedulers if h in old.unreachable]
    if schedulers and not acked:
        notes.append(
            f"{old.name}'s schedulers {_names(schedulers)} do not answer; if they run they "
            f"cannot commit: {old.name}'s PostgreSQL is fenced"
        )
    waits = (Action.WAIT_SELF_DEMOTION, Action.WAIT_REDIS_ISOLATION)
    fenced = sorted({h for s in steps if s.action not in waits for h in s.hosts})
    return _Fence(
        steps=tuple(steps),
        fenced=tuple(fenced),
        acknowledged=tuple(silent) if acked else (),
        redis_hold=hold,
        notes=tuple(notes),
    )


def _is_running(member: PgMember | None) -> bool:
    return member is not None and member.running


def _redis_takeover(
    observed: Observed, tgt: SiteObservation, hold: float | None
) -> list[Step] | str:
    layout = observed.layout(tgt.name)
    if not layout.redis:
        return []
    steps: list[Step] = []
    masters = tgt.redis.masters
    if len(masters) > 1:
        return (
            f"several Redis masters in {tgt.name}: {_names([observed.host_of(n) for n in masters])}"
        )
    if not masters:
        candidate = _redis_candidate(tgt)
        if candidate is None:
            return f"no Redis node of {tgt.name} answers: nothing to promote; nothing was changed"
        others = tuple(observed.host_of(n) for n in tgt.redis.nodes if n.up and n != candidate)
        held = f", writes held {hold:.0f} s first" if hold else ""
        steps.append(
            Step(
                tgt.name,
                Action.PROMOTE_REDIS,
                (observed.host_of(candidate), *others),
                f"{observed.host_of(candidate)} is master{held}; the others replicate it",
                f"the highest offset of {tgt.name} ({candidate.offset}): the least lost",
                seconds=hold,
            )
        )
    stopped = tuple(
        h for h in layout.sentinels if h in tgt.reachable and h not in tgt.redis.sentinels_running
    )
    if stopped:
        steps.append(
            Step(
                tgt.name,
                Action.START_SENTINELS,
                stopped,
                "SENTINEL CKQUORUM answers OK on each",
                f"clients find the master through {tgt.name}'s Sentinels "
                f"({layout.redis_master_name})",
            )
        )
    return steps


def loss_window(observed: Observed, old: SiteObservation, tgt: SiteObservation) -> LossWindow:
    """What taking over at ``tgt`` loses of ``old``'s writes, as far as can be known.

    + received: the target's standby leader's received (or replayed) position; once
      promoted, the point where its history left the old timeline;
    + last known of the old site: the highest of what its members report now (or
      reported earlier in this command, :attr:`PgSite.last_known`) and the WAL end its
      sender last reported to the target (``latest_end_lsn``);
    + exact when every PostgreSQL member of the old site was read stopped (after the
      fence); otherwise a lower bound: writes after the last report are unknown.
    """
    tleader = tgt.postgresql.leader
    received: int | None = None
    if tleader is not None and tleader.role is PgRole.PRIMARY:
        previous = (tleader.timeline or 1) - 1
        switch = next((s for s in tleader.history or () if s.timeline == previous), None)
        received = switch.switchpoint if switch is not None else None
    elif tleader is not None:
        known = [v for v in (tleader.received, tleader.replayed) if v is not None]
        received = max(known) if known else None
    candidates: list[tuple[int, str]] = []
    opg = old.postgresql
    position = opg.position
    if position is not None:
        candidates.append((position, f"read from {old.name}"))
    if (
        tleader is not None
        and tleader.sender_end is not None
        and tleader.role is not PgRole.PRIMARY
    ):
        candidates.append(
            (tleader.sender_end, f"last reported to {tleader.name} by {old.name}'s WAL sender")
        )
    last, source = max(candidates) if candidates else (None, "nothing known")
    layout = observed.layout(old.name)
    exact = bool(layout.postgresql) and all(
        (m := opg.member(h)) is not None and not m.running and m.position is not None
        for h in layout.postgresql
    )
    gap: int | None = None
    old_master = old.redis.master
    best = _redis_candidate(tgt)
    if old_master is not None and best is not None:
        gap = old_master.offset - best.offset
    return LossWindow(received, last, source, exact, gap)


# ---- dc-failback ----


class Rejoin(StrEnum):
    """How one member of the old site becomes a standby of the active one."""

    FOLLOW = "follow"
    """Nothing to undo: it stopped before the active site's promotion point."""
    REWIND = "rewind"
    """It wrote past the promotion point on a shared lineage: pg_rewind discards that."""
    RECLONE = "reclone"
    """No shared lineage can be shown: cleared and copied again."""


def rejoin_mode(active: PgMember, member: PgMember) -> tuple[Rejoin, str, int | None]:
    """How ``member`` (a stopped member of the old site) rejoins ``active`` (the active
    site's primary, read with its lineage): the mode, why, and the bytes it wrote that
    the active site never had (a rewind discards them; None when unknown)."""
    if member.system_id and active.system_id and member.system_id != active.system_id:
        return (
            Rejoin.RECLONE,
            f"another database (system identifier {member.system_id}, active {active.system_id})",
            None,
        )
    position, timeline = member.position, member.timeline
    if position is None or timeline is None:
        return Rejoin.RECLONE, "no readable data directory", None
    if active.history is None or active.timeline is None or active.position is None:
        return (
            Rejoin.REWIND,
            "the active lineage was not read: Patroni compares timelines and rewinds if needed",
            None,
        )
    history = active.history
    if timeline == active.timeline:
        if member.history is not None and member.history != history:
            return Rejoin.REWIND, f"a fork on timeline {timeline} (histories differ)", None
        if position <= active.position:
            return Rejoin.FOLLOW, f"on timeline {timeline} at {_lsn(position)}, behind it", None
        return (
            Rejoin.RECLONE,
            f"ahead of the active primary on its own timeline {timeline} "
            f"({_lsn(position)} > {_lsn(active.position)})",
            None,
        )
    if timeline < active.timeline:
        switch = next((s for s in history if s.timeline == timeline), None)
        if switch is None:
            return Rejoin.RECLONE, f"timeline {timeline} is not in the active history", None
        if member.history is not None and history[: len(member.history)] != member.history:
            return Rejoin.RECLONE, "its history is not a prefix of the active one", None
        point = switch.switchpoint
        # A stopped member's WAL reaches past its checkpoint record's start.
        past = position > point or (member.checkpoint is not None and member.checkpoint >= point)
        if not past:
            return (
                Rejoin.FOLLOW,
                f"stopped at {_lsn(position)} on timeline {timeline}, before the promotion "
                f"point {_lsn(point)}",
                None,
            )
        return (
            Rejoin.REWIND,
            f"wrote past the promotion point {_lsn(point)} on timeline {timeline} (to "
            f"{_lsn(position)})",
            max(0, position - point),
        )
    if member.history is None or member.history[: len(history)] != history:
        return (
            Rejoin.RECLONE,
            f"timeline {timeline} is newer than the active {active.timeline} on another lineage",
            None,
        )
    return (
        Rejoin.REWIND,
        f"promoted itself later (timeline {timeline} > {active.timeline}): its writes after "
        f"the fork are discarded",
        None,
    )


def plan_failback(observed: Observed, target: str) -> Plan | Refusal:
    """Bring ``target`` (the site a failover gave up) back as the active site.

    It must answer entirely and take no writes (fenced, or a standby): then it rejoins
    as a standby of the active site (units unfenced; each PostgreSQL member follows,
    is rewound or re-cloned, :func:`rejoin_mode`; Redis nodes replicate the active
    master; the files follow the model), and a planned switchover
    (:func:`plan_switchover`, over the state the rejoin leaves) brings the active site
    back. Empty when ``target`` is already active with the other site following.
    """
    from plinth.geo.simulate import apply_all

    command = "dc-failback"
    refused = _site_refusal(observed, target, command)
    if refused is not None:
        return refused
    found = describe(observed)
    old = observed.site(target)
    active = observed.others(target)[0]

    def refuse(reason: str) -> Refusal:
        return Refusal(command, reason, found)

    if old.postgresql.writable and active.postgresql.writable:
        return refuse(
            f"{target} has a writable primary "
            f"({_names([m.name for m in old.postgresql.writable])}) "
            f"while {active.name} is active: split brain; fence it first (dc-failover --to "
            f"{active.name} fences what answers); nothing was changed"
        )
    if old.postgresql.writable or not active.postgresql.writable:
        # Back already, or between the switchover's demote and promote: that is the
        # switchover's to finish (or to refuse).
        switchover = plan_switchover(observed, target)
        if isinstance(switchover, Refusal):
            return Refusal(command, switchover.reason, found)
        return replace(switchover, command=command)
    silent = sorted(old.unreachable)
    if silent:
        return refuse(
            f"a failback needs every host of {target}; no answer from {_names(silent)}; "
            f"nothing was changed"
        )
    masters = [observed.host_of(n) for n in old.redis.masters]
    if masters:
        return refuse(
            f"{target}'s Redis {_names(masters)} is a master (it takes writes): fence it "
            f"first (dc-failover --to {active.name}); nothing was changed"
        )
    if old.schedulers_running:
        return refuse(
            f"{target} runs Airflow schedulers ({_names(old.schedulers_running)}) while "
            f"{active.name} is active: stop them first (dc-failover --to {active.name})"
        )
    primary = active.postgresql.writable[0]
    steps: list[Step] = []
    notes: list[str] = []
    layout = observed.layout(target)
    unfence = tuple(
        h
        for h in layout.hosts
        if h in old.fenced
        or (h in layout.etcd and h not in old.etcd_running)
        or (h in layout.keepalived and h not in old.keepalived_running)
    )
    if unfence:
        steps.append(
            Step(
                target,
                Action.UNFENCE,
                unfence,
                "etcd healthy; keepalived running (the VIP check holds a standby site's VIP)",
                "the fence comes off only for what a standby site runs",
            )
        )
    slot = layout.slot
    if slot not in active.postgresql.slots:
        steps.append(
            Step(
                active.name,
                Action.ADD_STANDBY_SLOT,
                (),
                f"slot {slot} in {active.name}'s dynamic configuration",
                f"{target} streams through it; WAL is kept for it",
            )
        )
    aleader = active.postgresql.leader
    sleader = old.postgresql.leader
    rejoined = (
        old.postgresql.standby_of == active.name
        and sleader is not None
        and sleader.role is PgRole.STANDBY_LEADER
        and aleader is not None
        and sleader.timeline == aleader.timeline
    )
    if not rejoined:
        modes: dict[Rejoin, list[str]] = {mode: [] for mode in Rejoin}
        for name in layout.postgresql:
            member = old.postgresql.member(name)
            mode, why, discarded = rejoin_mode(
                primary, member or PgMember(name=name, role=None, state="no answer")
            )
            modes[mode].append(name)
            lost = f"; {discarded} bytes of it are discarded" if discarded else ""
            notes.append(f"{name}: {mode.value}: {why}{lost}")
        kept = tuple(sorted(modes[Rejoin.FOLLOW] + modes[Rejoin.REWIND]))
        if kept:
            rewound = (
                f"; pg_rewind on {_names(modes[Rejoin.REWIND])}" if modes[Rejoin.REWIND] else ""
            )
            steps.append(
                Step(
                    target,
                    Action.REJOIN_POSTGRESQL,
                    kept,
                    f"a standby leader streams from {active.name}",
                    f"{target} becomes a standby cluster of {active.name}{rewound}",
                    source=active.name,
                    seconds=REJOIN_SECONDS,
                )
            )
        if modes[Rejoin.RECLONE]:
            whole = "" if kept else " (no member is kept: the scope is removed and bootstrapped)"
            steps.append(
                Step(
                    target,
                    Action.RECLONE_POSTGRESQL,
                    tuple(modes[Rejoin.RECLONE]),
                    "each member streams again",
                    f"no shared lineage with {active.name} can be shown{whole}",
                    source=active.name,
                    seconds=REJOIN_SECONDS,
                )
            )
    amaster = active.redis.master
    if observed.layout(active.name).redis and amaster is None:
        return refuse(
            f"{active.name} has no single Redis master to follow "
            f"({_redis_summary(observed, active)})"
        )
    if amaster is not None:
        strays = tuple(
            h
            for h in layout.redis
            if not any(
                observed.host_of(n) == h and n.role == "slave" and n.master_host == amaster.address
                for n in old.redis.nodes
            )
        )
        if strays:
            steps.append(
                Step(
                    target,
                    Action.FOLLOW_REDIS,
                    strays,
                    f"each replicates {active.name}'s master, link up, sync done",
                    f"{target}'s nodes hold {active.name}'s data before taking over",
                    source=active.name,
                )
            )
    if steps or not _all_follow(observed, old, active):
        steps.append(
            Step(
                target,
                Action.VERIFY_STANDBY,
                layout.postgresql,
                f"{target} streams from {active.name} within {CATCH_UP_LIMIT} bytes",
                "the switchover back starts from a caught-up standby",
                source=active.name,
                seconds=REJOIN_SECONDS,
                refusal=(
                    f"{target} rejoined but does not stream from {active.name}: plinth "
                    f"status shows why"
                ),
            )
        )
    if observed.model_active == active.name and old.applied_active != active.name:
        # (a model naming another site is stale: the switchover back writes it, then
        # converges both sites)
        steps.append(_converge(target, f"a standby site of {active.name}"))
    after = apply_all(observed, steps)
    switchover = plan_switchover(after, target)
    if isinstance(switchover, Refusal):
        return Refusal(command, f"after the rejoin: {switchover.reason}", found)
    return Plan(
        command,
        target,
        found,
        tuple(steps) + switchover.steps,
        notes=tuple(notes + list(switchover.notes)),
    )


def _all_follow(observed: Observed, site: SiteObservation, active: SiteObservation) -> bool:
    """``site`` is a healthy standby of ``active``: PostgreSQL streaming on its timeline,
    every Redis node replicating its master."""
    master = active.redis.master
    redis_ok = not observed.layout(site.name).redis or (
        master is not None
        and all(n.role == "slave" and n.master_host == master.address for n in site.redis.nodes)
    )
    return _streams_from(observed, site, active.name) and redis_ok


# ---- keeping the environment file honest ----


def model_agrees_with_live(model_active: str, observed: Observed) -> Refusal | None:
    """Refuse to apply a model whose ``active_datacenter`` disagrees with the live
    state, so a stale environment file (a checkout from before a DC move) cannot be
    applied by mistake: ``plinth up``/``preview`` call this before touching anything.

    Live, the active site is the one with the writable PostgreSQL primary; the others'
    Redis nodes must not be writable masters and their Airflow schedulers must not run.
    A state with no writable primary anywhere is accepted only when nothing runs at all
    (a first deploy); otherwise a DC command is half-way and must be finished first.
    """
    command = "apply"
    found = describe(observed)
    if not any(s.postgresql for s in observed.topology.sites):
        return None
    writable = [s for s in observed.sites if s.postgresql.writable]
    if len(writable) > 1:
        primaries = [f"{m.name} ({s.name})" for s in writable for m in s.postgresql.writable]
        return Refusal(
            command,
            f"two sites have a writable PostgreSQL primary: {_names(primaries)}; nothing may "
            f"be applied until one is fenced (dc-failover --to <the site to keep>)",
            found,
        )
    env = observed.topology.environment
    if writable and writable[0].name != model_active:
        live = writable[0]
        primary = live.postgresql.writable[0]
        return Refusal(
            command,
            f"inventory/{env}.yaml names {model_active} active, but the writable primary is "
            f"{primary.name} in {live.name} (timeline {primary.timeline}): the file is stale "
            f"(a DC switchover or failover moved the site). Use the committed file that names "
            f"{live.name} (git pull); nothing was applied",
            found,
        )
    if not writable:
        running = [m.name for s in observed.sites for m in s.postgresql.members if m.running]
        if running:
            return Refusal(
                command,
                f"no site has a writable PostgreSQL primary while {_names(running)} run: a DC "
                f"switchover or failover is half-way; finish it (dc-switchover or dc-failover "
                f"--to <site>) before applying",
                found,
            )
        silent = sorted(h for s in observed.sites for h in s.unreachable)
        if silent:
            return Refusal(
                command,
                f"no PostgreSQL member runs and {_names(silent)} do not answer: the active site "
                f"cannot be told; nothing was applied",
                found,
            )
        return None
    others = [s for s in observed.sites if s.name != model_active]
    masters = [f"{observed.host_of(n)} ({s.name})" for s in others for n in s.redis.writable]
    if masters:
        return Refusal(
            command,
            f"{model_active} is active but Redis {_names(masters)} is a writable master too: a "
            f"DC command is half-way; finish it before applying",
            found,
        )
    schedulers = [f"{h} ({s.name})" for s in others for h in s.schedulers_running]
    if schedulers:
        return Refusal(
            command,
            f"{model_active} is active but Airflow schedulers run on {_names(schedulers)}: a DC "
            f"command is half-way; finish it before applying",
            found,
        )
    return None


def apply_refusal(observed: Observed, datacenters: Sequence[str]) -> Refusal | None:
    """Why ``plinth up`` must not apply the model to ``datacenters`` now (None: it may):
    the model disagrees with the live state (:func:`model_agrees_with_live`), or one of
    them is fenced (a plain run would start Patroni there with the configuration of a
    primary: only ``dc-failback`` unfences a site)."""
    refused = model_agrees_with_live(observed.model_active, observed)
    if refused is not None:
        return refused
    for site in observed.sites:
        if site.name in datacenters and site.fenced:
            return Refusal(
                "apply",
                f"{site.name} is fenced since a dc-failover ({_names(sorted(site.fenced))}): a "
                f"plain run would start it with the configuration of a primary; dc-failback "
                f"--to {site.name} rejoins it as a standby first",
                describe(observed),
            )
    return None
