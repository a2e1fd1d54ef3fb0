"""A tiny model of what each plan step does to an observation, and the invariants
checked on every state a plan passes through.

:func:`apply` is what the next reading is expected to show once a step succeeded (the
execution layer's waits are what make it so). The tests walk every plan of generated
observations through :func:`advance` and check :func:`violations` after each step: no
state with two writable PostgreSQL primaries, two writable Redis masters or two running
Airflow schedulers across sites, counting what does not answer as writable unless it was
fenced, waited out or acknowledged lost. :func:`plinth.geo.decide.plan_failback` uses
:func:`apply_all` to plan the switchover that follows its rejoin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from facts.postgresql import TimelineSwitch
from facts.redis import RedisNode
from plinth.geo.decide import Action, Step
from plinth.geo.observe import (
    SCHEDULER_UNIT,
    Observed,
    PgMember,
    PgRole,
    PgSite,
    RedisSite,
    SiteObservation,
)


def _site(observed: Observed, site: SiteObservation) -> Observed:
    return replace(
        observed, sites=tuple(site if s.name == site.name else s for s in observed.sites)
    )


def _other(observed: Observed, name: str) -> SiteObservation:
    return observed.others(name)[0]


def _members(pg: PgSite, changed: Mapping[str, PgMember]) -> tuple[PgMember, ...]:
    names = {m.name for m in pg.members} | set(changed)
    kept = {m.name: m for m in pg.members}
    return tuple(changed.get(n) or kept[n] for n in sorted(names))


def _nodes(redis: RedisSite, changed: Mapping[str, RedisNode]) -> tuple[RedisNode, ...]:
    return tuple(changed.get(n.address, n) for n in redis.nodes)


def _stream(member: PgMember, role: PgRole, source: PgMember) -> PgMember:
    """``member`` streaming ``source``'s lineage, caught up with it."""
    position = source.position
    return replace(
        member,
        role=role,
        state="streaming",
        timeline=source.timeline,
        flushed=None,
        received=position,
        replayed=position,
        sender_end=position,
        checkpoint=None,
        history=source.history,
        system_id=source.system_id or member.system_id,
    )


def _pg(observed: Observed, step: Step, site: SiteObservation) -> SiteObservation:
    pg = site.postgresql
    hosts = set(step.hosts)
    action = step.action
    if action is Action.ADD_STANDBY_SLOT:
        slot = observed.layout(_other(observed, site.name).name).slot
        return replace(site, postgresql=replace(pg, slots=pg.slots | {slot}))
    if action is Action.DEMOTE_POSTGRESQL:
        assert step.source is not None
        changed = {
            m.name: replace(
                m,
                role=PgRole.STANDBY_LEADER,
                state="running",
                received=m.flushed,
                replayed=m.flushed,
                flushed=None,
            )
            for m in pg.writable
        }
        return replace(
            site,
            postgresql=replace(pg, members=_members(pg, changed), standby_of=step.source),
        )
    if action is Action.VERIFY_CAUGHT_UP:
        assert step.source is not None
        final = observed.site(step.source).postgresql.position
        leader = pg.leader
        if leader is None or final is None:
            return site
        caught = replace(
            leader,
            received=max(final, leader.received or 0),
            replayed=max(final, leader.replayed or 0),
        )
        return replace(site, postgresql=replace(pg, members=_members(pg, {leader.name: caught})))
    if action is Action.PROMOTE_POSTGRESQL:
        leader = pg.leader
        assert leader is not None and leader.timeline is not None
        point = leader.replayed if leader.replayed is not None else leader.position
        assert point is not None
        history = (*(leader.history or ()), TimelineSwitch(leader.timeline, point))
        timeline = leader.timeline + 1
        changed = {
            m.name: replace(
                m,
                role=PgRole.PRIMARY if m.name == leader.name else PgRole.REPLICA,
                state="running" if m.name == leader.name else "streaming",
                timeline=timeline,
                history=history,
                flushed=point if m.name == leader.name else None,
                received=None if m.name == leader.name else point,
                replayed=None if m.name == leader.name else point,
                sender_end=None,
            )
            for m in pg.members
            if m.running
        }
        return replace(site, postgresql=replace(pg, members=_members(pg, changed), standby_of=None))
    if action in (Action.VERIFY_FOLLOWING, Action.REJOIN_POSTGRESQL, Action.RECLONE_POSTGRESQL):
        assert step.source is not None
        source = observed.site(step.source).postgresql.leader
        assert source is not None
        if action is Action.VERIFY_FOLLOWING:
            hosts = {m.name for m in pg.members if m.running}
        leader = pg.leader
        first = leader.name if leader is not None else min(hosts)
        changed = {
            name: _stream(
                pg.member(name) or PgMember(name=name, role=None, state="stopped"),
                PgRole.STANDBY_LEADER if name == first else PgRole.REPLICA,
                source,
            )
            for name in hosts
        }
        return replace(
            site,
            postgresql=replace(
                pg, members=_members(pg, changed), standby_of=step.source, last_known=None
            ),
        )
    if action is Action.FENCE_POSTGRESQL:
        # A primary stops with a shutdown checkpoint at its flushed position; a standby
        # keeps what it replayed (pg_controldata's minimum recovery end).
        changed = {
            m.name: replace(
                m,
                role=None,
                state="stopped",
                checkpoint=m.flushed if m.role is PgRole.PRIMARY else None,
                flushed=None,
                received=None,
                replayed=None if m.role is PgRole.PRIMARY else m.position,
            )
            for m in pg.members
            if m.name in hosts
        }
        positions = [m.position for m in pg.members if m.name in hosts and m.position is not None]
        if pg.last_known is not None:
            positions.append(pg.last_known)
        return replace(
            site,
            postgresql=replace(
                pg,
                members=_members(pg, changed),
                last_known=max(positions) if positions else None,
            ),
            fenced=site.fenced | hosts,
            fence_age={**site.fence_age, "postgresql": 0.0},
        )
    return site


def _redis(observed: Observed, step: Step, site: SiteObservation) -> SiteObservation:
    redis = site.redis
    addresses = {observed.topology.addresses.get(h, h): h for h in step.hosts}
    action = step.action
    if action is Action.PAUSE_REDIS:
        return replace(site, redis=replace(redis, paused=True))
    if action is Action.PROMOTE_REDIS:
        candidate = observed.topology.addresses.get(step.hosts[0], step.hosts[0])
        top = max((n.offset for n in redis.nodes if n.address in addresses), default=0)
        changed = {
            n.address: replace(
                n,
                role="master" if n.address == candidate else "slave",
                master_host=None if n.address == candidate else candidate,
                master_link_up=n.address != candidate,
                offset=top,
                settings={**n.settings, "replica-priority": "100"},
            )
            for n in redis.nodes
            if n.address in addresses
        }
        return replace(site, redis=replace(redis, nodes=_nodes(redis, changed), paused=False))
    if action is Action.FOLLOW_REDIS:
        assert step.source is not None
        master = observed.site(step.source).redis.master
        assert master is not None
        changed = {
            n.address: replace(
                n,
                error=None,
                role="slave",
                master_host=master.address,
                master_link_up=True,
                sync_in_progress=False,
                offset=master.offset,
                settings={**n.settings, "replica-priority": "0"},
            )
            for n in redis.nodes
            if n.address in addresses
        }
        return replace(
            site,
            redis=replace(redis, nodes=_nodes(redis, changed), paused=False),
            fenced=site.fenced - set(step.hosts),
        )
    if action is Action.FENCE_REDIS:
        changed = {
            n.address: RedisNode(address=n.address, error="fenced")
            for n in redis.nodes
            if n.address in addresses
        }
        return replace(
            site,
            redis=replace(redis, nodes=_nodes(redis, changed), paused=False),
            fenced=site.fenced | set(step.hosts),
            fence_age={**site.fence_age, "redis": 0.0},
        )
    if action is Action.STOP_SENTINELS:
        return replace(
            site, redis=replace(redis, sentinels_running=redis.sentinels_running - set(step.hosts))
        )
    if action is Action.START_SENTINELS:
        return replace(
            site, redis=replace(redis, sentinels_running=redis.sentinels_running | set(step.hosts))
        )
    return site


def _units(
    site: SiteObservation, hosts: Iterable[str], on: bool, schedulers: Iterable[str]
) -> dict[str, dict[str, bool]]:
    units = {h: dict(u) for h, u in site.airflow_units.items()}
    for host in hosts:
        current = units.get(host) or (
            {SCHEDULER_UNIT: on} if host in schedulers else {"airflow-worker": on}
        )
        units[host] = {unit: on for unit in current}
    return units


def _tick(observed: Observed, seconds: float) -> Observed:
    """``observed``, ``seconds`` later: every fence is that much older."""
    return replace(
        observed,
        sites=tuple(
            replace(s, fence_age={k: v + seconds for k, v in s.fence_age.items()})
            for s in observed.sites
        ),
    )


def apply(observed: Observed, step: Step) -> Observed:
    """The observation expected once ``step`` succeeded."""
    site = observed.site(step.site)
    layout = observed.layout(step.site)
    action = step.action
    if action is Action.WRITE_MODEL:
        return replace(observed, topology=replace(observed.topology, model_active=step.site))
    if action is Action.CONVERGE:
        return _site(observed, replace(site, applied_active=observed.model_active))
    if action is Action.SYNC_RABBITMQ:
        return _site(observed, replace(site, rabbitmq_missing=0))
    if action is Action.PURGE_RABBITMQ:
        return _site(observed, replace(site, rabbitmq_messages=0))
    if action in (Action.STOP_AIRFLOW, Action.START_AIRFLOW):
        on = action is Action.START_AIRFLOW
        units = _units(site, step.hosts, on, layout.schedulers)
        return _site(observed, replace(site, airflow_units=units))
    if action is Action.FENCE_ETCD:
        return _site(
            observed,
            replace(
                site,
                etcd_running=site.etcd_running - set(step.hosts),
                fenced=site.fenced | set(step.hosts),
                fence_age={**site.fence_age, "etcd": 0.0},
            ),
        )
    if action in (Action.WAIT_SELF_DEMOTION, Action.WAIT_REDIS_ISOLATION):
        what = "etcd" if action is Action.WAIT_SELF_DEMOTION else "redis"
        started = _site(observed, replace(site, fence_age={what: 0.0, **site.fence_age}))
        return _tick(started, step.seconds or 0.0)
    if action is Action.PROMOTE_REDIS and step.seconds:
        # the hold is time passing for every fence
        observed = _tick(observed, step.seconds)
    if action is Action.DEMOTE_POSTGRESQL:
        # A clean shutdown sends the last WAL to the connected standby, which then no
        # longer streams (nothing is primary behind the demoted site's VIP).
        assert step.source is not None
        final = site.postgresql.writable[0].flushed if site.postgresql.writable else None
        follower = observed.site(step.source)
        leader = follower.postgresql.leader
        if leader is not None and final is not None:
            moved = replace(leader, state="running", received=max(final, leader.received or 0))
            pg = follower.postgresql
            follower = replace(
                follower, postgresql=replace(pg, members=_members(pg, {leader.name: moved}))
            )
            observed = _site(observed, follower)
    if action is Action.RELEASE_VIPS:
        return _site(
            observed,
            replace(
                site,
                keepalived_running=site.keepalived_running - set(step.hosts),
                fenced=site.fenced | set(step.hosts),
            ),
        )
    if action is Action.UNFENCE:
        hosts = set(step.hosts)
        return _site(
            observed,
            replace(
                site,
                fenced=site.fenced - hosts,
                etcd_running=site.etcd_running | (hosts & set(layout.etcd)),
                keepalived_running=site.keepalived_running | (hosts & set(layout.keepalived)),
                fence_age={},
            ),
        )
    site = _pg(observed, step, site)
    site = _redis(observed, step, site)
    return _site(observed, site)


def apply_all(observed: Observed, steps: Iterable[Step]) -> Observed:
    for step in steps:
        observed = apply(observed, step)
    return observed


# ---- the invariants ----


@dataclass(frozen=True)
class World:
    """An observation, and what is known of the hosts that do not answer."""

    observed: Observed
    assumed_down: frozenset[str] = frozenset()
    """Hosts acknowledged lost: taken to write nothing."""
    self_demoted: frozenset[str] = frozenset()
    """Unreachable PostgreSQL members whose self-demotion was waited for after their
    site's etcd lost its quorum."""
    redis_cut: frozenset[str] = frozenset()
    """Unreachable Redis nodes that lost every replica long enough to stop writing."""


def advance(world: World, step: Step) -> World:
    """``world`` once ``step`` succeeded."""
    observed = apply(world.observed, step)
    site = world.observed.site(step.site)
    layout = world.observed.layout(step.site)
    demoted = world.self_demoted
    if step.action is Action.WAIT_SELF_DEMOTION:
        # The wait demotes the unreachable members only when the etcd members that may
        # still run (the reachable ones running, every unreachable one) are no quorum.
        running = [h for h in layout.etcd if h in observed.site(step.site).etcd_running]
        silent = [h for h in layout.etcd if h in site.unreachable]
        if 2 * (len(running) + len(silent)) <= len(layout.etcd):
            demoted = demoted | set(step.hosts)
    cut = world.redis_cut
    if step.action is Action.WAIT_REDIS_ISOLATION:
        # Cut off only when no node that answers (its site's or another's) replicates it.
        now = observed.site(step.site)
        own = {observed.topology.addresses.get(h, h) for h in layout.redis}
        followers = [
            n for o in observed.sites for n in o.redis.nodes if n.up and n.master_host in own
        ]
        if not followers and not any(n.up for n in now.redis.nodes):
            cut = cut | set(step.hosts)
    if step.action is Action.PROMOTE_REDIS and step.seconds:
        for other in world.observed.others(step.site):
            cut = cut | {
                h for h in world.observed.layout(other.name).redis if h in other.unreachable
            }
    return replace(world, observed=observed, self_demoted=demoted, redis_cut=cut)


def _pg_may_write(world: World, site: SiteObservation) -> bool:
    pg = site.postgresql
    if pg.writable:
        return True
    if pg.standby_of is not None and pg.config_read:
        return False  # its members follow the standby configuration
    layout = world.observed.layout(site.name)
    return any(
        h in site.unreachable and h not in world.assumed_down and h not in world.self_demoted
        for h in layout.postgresql
    )


def _redis_may_write(world: World, site: SiteObservation) -> bool:
    if site.redis.writable:
        return True
    observed = world.observed
    others = {
        observed.topology.addresses.get(h, h)
        for o in observed.others(site.name)
        for h in observed.layout(o.name).redis
    }
    if any(n.up and n.master_host in others for n in site.redis.nodes):
        return False  # it follows another site
    layout = observed.layout(site.name)
    return any(
        h in site.unreachable and h not in world.assumed_down and h not in world.redis_cut
        for h in layout.redis
    )


def _schedules(world: World, site: SiteObservation) -> bool:
    if site.schedulers_running:
        return True
    layout = world.observed.layout(site.name)
    silent = [h for h in layout.schedulers if h in site.unreachable and h not in world.assumed_down]
    return bool(silent) and _pg_may_write(world, site)


def violations(world: World) -> list[str]:
    """What is wrong with ``world``: sites that may write at once (empty when none)."""
    out = []
    sites = world.observed.sites
    for what, check in (
        ("PostgreSQL primaries", _pg_may_write),
        ("Redis masters", _redis_may_write),
        ("Airflow schedulers", _schedules),
    ):
        writers = [s.name for s in sites if check(world, s)]
        if len(writers) > 1:
            out.append(f"writable {what} in {', '.join(writers)}")
    return out
