"""What a DC command observes, per site, before each decision: typed, read-only, and the
parsers that build it from what the existing facts read.

One :class:`Observed` is one reading of every site. The execution layer
(:mod:`plinth.dc.live`) fills it from:

* SSH: which hosts answered at all (:attr:`SiteObservation.reachable`);
* each PostgreSQL member's own Patroni ``/patroni`` (:func:`pg_member`), completed with
  its timeline history from :class:`facts.postgresql.PostgresTimeline`
  (:func:`with_lineage`); a member whose Patroni is stopped (fenced) from
  ``pg_controldata`` and its ``pg_wal/*.history`` (:func:`stopped_member`);
* the site's dynamic configuration, ``/config`` (:func:`standby_source`, :func:`slots`);
* :class:`facts.redis.RedisReplication` for the data nodes (their own
  :class:`~facts.redis.RedisNode`, with ``master_repl_offset``);
* ``systemctl is-active`` of the Sentinel, etcd, keepalived and Airflow units
  (:func:`airflow_units` from pyinfra's ``SystemdStatus``);
* the fence marker a failover leaves on the old site's hosts (:data:`FENCE_MARKER`);
* :mod:`plinth.rabbitmq_sync`'s diff: objects the live-active site has and this one lacks.

Nothing here decides: :mod:`plinth.geo.decide` does, from these values only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from facts.postgresql import PostgresPosition, TimelineSwitch, parse_history, parse_lsn
from facts.redis import RedisNode
from plinth.model import Role
from plinth.topology.airflow import COMPONENTS
from plinth.topology.geo import GeoTopology, SiteLayout

FENCE_MARKER = "/etc/plinth/fenced"
"""Written on every host a DC failover fences (with the time and the site that took
over); removed by ``dc-failback`` when the site rejoins. Patroni, etcd, Redis and
keepalived are masked there meanwhile, so neither a reboot nor a ``plinth up`` starts
them (``plinth up`` refuses a fenced site: :func:`plinth.geo.decide.apply_refusal`)."""

APPLIED_MARKER = "/etc/plinth/active-datacenter"
"""Written by every ``plinth up`` on every host: the ``active_datacenter`` it applied."""

SCHEDULER_UNIT = COMPONENTS[Role.AIRFLOW_SCHEDULER][0]


class PgRole(StrEnum):
    """A PostgreSQL member's role as its own Patroni reports it."""

    PRIMARY = "primary"
    """Not in recovery: takes writes when running (Patroni 3's ``master``)."""
    STANDBY_LEADER = "standby_leader"
    """Leader of a standby cluster: replays the WAL of another site."""
    REPLICA = "replica"


@dataclass(frozen=True)
class PgMember:
    """One PostgreSQL member as it reported itself. WAL positions are bytes (LSNs as
    ints); None where the member does not have or did not report one."""

    name: str
    role: PgRole | None
    """None: no role reported (PostgreSQL stopped, or a role we do not act on)."""
    state: str
    """``running``, ``streaming`` (a standby whose WAL receiver streams), ``stopped``..."""
    timeline: int | None = None
    flushed: int | None = None
    """A primary's WAL flushed to disk (Patroni's ``xlog.location``,
    ``pg_current_wal_flush_lsn()``): what a standby can have received at most."""
    received: int | None = None
    """A standby's WAL received and written (``xlog.received_location``)."""
    replayed: int | None = None
    """A standby's WAL replayed (``xlog.replayed_location``): what it would serve if
    promoted now."""
    sender_end: int | None = None
    """A standby's upstream WAL end as its sender last reported it
    (``pg_stat_wal_receiver.latest_end_lsn``, Patroni's ``latest_end_lsn``): the last
    position known of the site it streams from, when that site no longer answers."""
    checkpoint: int | None = None
    """A stopped member: the start of its latest checkpoint record (``pg_controldata``);
    its WAL reaches just past it (the record's own length)."""
    history: tuple[TimelineSwitch, ...] | None = None
    """Its timeline history (empty on timeline 1); None when it was not read."""
    system_id: str | None = None
    """``Database system identifier``: members of one lineage share it; a site
    bootstrapped afresh does not."""

    @property
    def running(self) -> bool:
        return self.role is not None and self.state in ("running", "streaming")

    @property
    def writable(self) -> bool:
        """A running primary: it takes writes."""
        return self.role is PgRole.PRIMARY and self.state == "running"

    @property
    def position(self) -> int | None:
        """How far this member's WAL reaches, as far as it reported."""
        known = [
            v
            for v in (self.flushed, self.received, self.replayed, self.checkpoint)
            if v is not None
        ]
        return max(known) if known else None


@dataclass(frozen=True)
class PgSite:
    """A site's PostgreSQL cluster (its own Patroni scope)."""

    members: tuple[PgMember, ...] = ()
    """Every member that answered (SSH and Patroni, or ``pg_controldata`` when stopped)."""
    standby_of: str | None = None
    """The site ``standby_cluster`` (dynamic configuration) streams from: the site whose
    PostgreSQL VIP it names. None: not a standby cluster (or the configuration was not
    read: then :attr:`config_read` is False)."""
    config_read: bool = True
    """Whether ``/config`` (hence :attr:`standby_of`, :attr:`slots`) was read."""
    slots: frozenset[str] = frozenset()
    """Permanent slots in the dynamic configuration (``slots``)."""
    paused: bool = False
    """Maintenance mode: Patroni changes nothing by itself."""
    last_known: int | None = None
    """The highest WAL position this command read from the site earlier (e.g. before a
    fence stopped it): the executor's memory, None at the first reading."""

    def member(self, name: str) -> PgMember | None:
        return next((m for m in self.members if m.name == name), None)

    @property
    def writable(self) -> tuple[PgMember, ...]:
        return tuple(m for m in self.members if m.writable)

    @property
    def leader(self) -> PgMember | None:
        """The running primary or standby leader (None: none, or more than one)."""
        leaders = [
            m
            for m in self.members
            if m.running and m.role in (PgRole.PRIMARY, PgRole.STANDBY_LEADER)
        ]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def position(self) -> int | None:
        """How far the site's WAL reaches: every member's position and the memory."""
        known = [m.position for m in self.members if m.position is not None]
        if self.last_known is not None:
            known.append(self.last_known)
        return max(known) if known else None

    @property
    def timeline(self) -> int | None:
        leader = self.leader
        if leader is not None and leader.timeline is not None:
            return leader.timeline
        timelines = [m.timeline for m in self.members if m.timeline is not None]
        return max(timelines) if timelines else None


@dataclass(frozen=True)
class RedisSite:
    """A site's Redis data nodes and Sentinel units."""

    nodes: tuple[RedisNode, ...] = ()
    """Each data node as it answered (``error`` set when it did not), by address."""
    sentinels_running: frozenset[str] = frozenset()
    """Hosts whose ``redis-sentinel`` unit is active."""
    paused: bool = False
    """The command holds this site's master's writes (``CLIENT PAUSE WRITE``): the
    executor's memory (Redis 7.0 does not report a pause)."""

    @property
    def masters(self) -> tuple[RedisNode, ...]:
        return tuple(n for n in self.nodes if n.is_master)

    @property
    def master(self) -> RedisNode | None:
        masters = self.masters
        return masters[0] if len(masters) == 1 else None

    @property
    def writable(self) -> tuple[RedisNode, ...]:
        """Masters that take writes (a paused master does not)."""
        return () if self.paused else self.masters


@dataclass(frozen=True)
class SiteObservation:
    """One site, read once."""

    name: str
    reachable: frozenset[str] = frozenset()
    """Hosts that answered SSH."""
    unreachable: frozenset[str] = frozenset()
    """Hosts of the model that did not."""
    postgresql: PgSite = field(default_factory=PgSite)
    redis: RedisSite = field(default_factory=RedisSite)
    airflow_units: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    """Host -> Airflow unit -> active (hosts that answered)."""
    etcd_running: frozenset[str] = frozenset()
    keepalived_running: frozenset[str] = frozenset()
    fenced: frozenset[str] = frozenset()
    """Hosts carrying :data:`FENCE_MARKER`."""
    fence_age: Mapping[str, float] = field(default_factory=dict)
    """Component (``postgresql``, ``etcd``, ``redis``, ``keepalived``, ``airflow``) ->
    seconds since this site's first fence of it, from the markers (each fence step
    records the time it stopped its component)."""
    applied_active: str | None = None
    """The ``active_datacenter`` this site's last ``plinth up`` applied (the base deploy
    records it in :data:`APPLIED_MARKER` on every host; None: not read, or the hosts
    disagree): a site whose files still follow the old active site needs a converge."""
    rabbitmq_missing: int | None = 0
    """Queues, exchanges and bindings of the live-active site's RabbitMQ this site's
    lacks (:mod:`plinth.rabbitmq_sync`'s diff); None: not read."""
    rabbitmq_messages: int | None = 0
    """Messages queued in the site's RabbitMQ (``rabbitmqctl list_queues messages``,
    summed); None: not read. A site about to start Airflow must hold none: they were
    queued before the site stopped, and running them would run tasks a second time."""

    @property
    def answers(self) -> bool:
        return bool(self.reachable)

    @property
    def schedulers_running(self) -> tuple[str, ...]:
        return tuple(
            sorted(h for h, units in self.airflow_units.items() if units.get(SCHEDULER_UNIT))
        )

    @property
    def airflow_running(self) -> tuple[str, ...]:
        """Hosts where any Airflow unit is active."""
        return tuple(sorted(h for h, units in self.airflow_units.items() if any(units.values())))

    def airflow_stopped_everywhere(self) -> bool:
        return not self.airflow_running

    def airflow_running_everywhere(self, layout: SiteLayout) -> bool:
        """Every Airflow unit of every Airflow host of the site is active."""
        return all(
            host in self.airflow_units and all(self.airflow_units[host].values())
            for host in layout.airflow
        )


@dataclass(frozen=True)
class Observed:
    """Every site, read once, with the model's shape of them."""

    topology: GeoTopology
    sites: tuple[SiteObservation, ...]

    @property
    def model_active(self) -> str:
        """The site ``active_datacenter`` names in the environment file."""
        return self.topology.model_active

    def site(self, name: str) -> SiteObservation:
        return next(s for s in self.sites if s.name == name)

    def layout(self, name: str) -> SiteLayout:
        return self.topology.site(name)

    def others(self, name: str) -> tuple[SiteObservation, ...]:
        return tuple(s for s in self.sites if s.name != name)

    def host_of(self, node: RedisNode) -> str:
        """A Redis node's host name (its address when the model does not know it)."""
        return self.host_of_address(node.address)

    def host_of_address(self, address: str | None) -> str:
        """The host at ``address`` (the address itself when the model has no such host)."""
        return self.topology.host_at(address) or str(address)


# ---- parsers: the facts' JSON and text into the types above ----


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _lsn(value: Any) -> int | None:
    """An LSN as Patroni or PostgreSQL gives it: an int (bytes) or ``16/B374D848``."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and "/" in value:
        try:
            return parse_lsn(value)
        except ValueError:
            return None
    return _int(value)


_ROLES = {
    "primary": PgRole.PRIMARY,
    "master": PgRole.PRIMARY,
    "standby_leader": PgRole.STANDBY_LEADER,
    "replica": PgRole.REPLICA,
}


def pg_member(name: str, patroni: Mapping[str, Any] | None) -> PgMember:
    """A member from its own ``GET /patroni`` (Patroni 3.x or 4.x); None (no answer) or a
    document without a running PostgreSQL gives a member with no role.

    ``xlog`` is ``{"location"}`` on a primary (flushed), ``{"received_location",
    "replayed_location", ...}`` in recovery; ``replication_state`` is ``streaming`` while
    a standby's WAL receiver streams; ``latest_end_lsn`` is the sender's last reported
    WAL end; ``database_system_identifier`` comes from ``pg_controldata``.
    """
    if not patroni:
        return PgMember(name=name, role=None, state="no answer")
    state = str(patroni.get("state", "unknown"))
    role = _ROLES.get(str(patroni.get("role", ""))) if state == "running" else None
    xlog = patroni.get("xlog")
    if not isinstance(xlog, dict):
        xlog = {}
    if role is not None and role is not PgRole.PRIMARY:
        state = str(patroni.get("replication_state") or state)
    system_id = patroni.get("database_system_identifier")
    return PgMember(
        name=name,
        role=role,
        state=state,
        timeline=_int(patroni.get("timeline")),
        flushed=_int(xlog.get("location")) if role is PgRole.PRIMARY else None,
        received=_int(xlog.get("received_location")),
        replayed=_int(xlog.get("replayed_location")),
        sender_end=_lsn(patroni.get("latest_end_lsn")),
        system_id=str(system_id) if system_id is not None else None,
    )


def with_lineage(member: PgMember, position: PostgresPosition | None) -> PgMember:
    """``member`` completed with what :class:`facts.postgresql.PostgresTimeline` read on
    it: the timeline (from its WAL, more exact than Patroni's cache on a replica) and its
    history. Unchanged when the fact had no answer."""
    if position is None:
        return member
    switches = parse_history(position.history) if position.history is not None else None
    return PgMember(
        name=member.name,
        role=member.role,
        state=member.state,
        timeline=position.timeline,
        flushed=member.flushed if member.flushed is not None else _primary_lsn(position),
        received=member.received if member.received is not None else position.received,
        replayed=member.replayed,
        sender_end=member.sender_end,
        checkpoint=member.checkpoint,
        history=switches,
        system_id=member.system_id,
    )


def _primary_lsn(position: PostgresPosition) -> int | None:
    return None if position.in_recovery else position.lsn


@dataclass(frozen=True)
class ControlData:
    """What ``pg_controldata`` says of a stopped member's data directory."""

    system_id: str | None
    cluster_state: str
    """``shut down``, ``shut down in recovery``, ``in production`` (it crashed),
    ``in archive recovery``..."""
    checkpoint: int | None
    """Latest checkpoint location (the record's start)."""
    timeline: int | None
    """Latest checkpoint's TimeLineID."""
    min_recovery_end: int | None
    """Minimum recovery ending location (a standby's: it replayed at least this far);
    None when 0/0."""
    min_recovery_timeline: int | None


def parse_controldata(lines: Iterable[str]) -> ControlData:
    """``pg_controldata -D <data dir>`` output (``Label:   value`` lines, C locale)."""
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    if "Database cluster state" not in values:
        raise ValueError("not pg_controldata output: no 'Database cluster state'")

    def lsn(key: str) -> int | None:
        text = values.get(key)
        if not text:
            return None
        value = parse_lsn(text)
        return value or None

    min_tli = _int(values.get("Min recovery ending loc's timeline"))
    return ControlData(
        system_id=values.get("Database system identifier"),
        cluster_state=values["Database cluster state"],
        checkpoint=lsn("Latest checkpoint location"),
        timeline=_int(values.get("Latest checkpoint's TimeLineID")),
        min_recovery_end=lsn("Minimum recovery ending location"),
        min_recovery_timeline=min_tli or None,
    )


def stopped_member(name: str, control: ControlData, history: str | None = None) -> PgMember:
    """A member whose PostgreSQL is stopped (a fenced site), from ``pg_controldata`` and
    the text of its timeline's history file (``pg_wal/<TLI>.history``; None when absent,
    "" on timeline 1)."""
    timeline = control.timeline
    if control.min_recovery_timeline is not None and control.min_recovery_end is not None:
        timeline = max(timeline or 0, control.min_recovery_timeline)
    if history is None and timeline == 1:
        history = ""
    return PgMember(
        name=name,
        role=None,
        state="stopped",
        timeline=timeline,
        replayed=control.min_recovery_end,
        checkpoint=control.checkpoint,
        history=parse_history(history) if history is not None else None,
        system_id=control.system_id,
    )


def standby_source(config: Mapping[str, Any] | None, topology: GeoTopology) -> str | None:
    """The site a cluster's ``standby_cluster`` streams from, from its dynamic
    configuration (``GET /config``): the site whose PostgreSQL VIP address is its
    ``host``. None when not a standby cluster; ValueError when it names an address that
    is no site's VIP (nothing should be decided over a cluster following a stranger)."""
    standby = (config or {}).get("standby_cluster")
    if not isinstance(standby, dict) or not standby.get("host"):
        return None
    host = str(standby["host"])
    site = topology.site_streaming_from(host)
    if site is None:
        raise ValueError(f"standby_cluster.host {host} is no site's PostgreSQL VIP")
    return site


def slots(config: Mapping[str, Any] | None) -> frozenset[str]:
    """Permanent slots named in the dynamic configuration (``slots``)."""
    value = (config or {}).get("slots")
    return frozenset(value) if isinstance(value, dict) else frozenset()


def pg_site(
    members: Iterable[PgMember],
    config: Mapping[str, Any] | None,
    topology: GeoTopology,
    last_known: int | None = None,
) -> PgSite:
    """A site's cluster from its members and its ``/config`` (None: not read)."""
    return PgSite(
        members=tuple(sorted(members, key=lambda m: m.name)),
        standby_of=standby_source(config, topology),
        config_read=config is not None,
        slots=slots(config),
        paused=bool((config or {}).get("pause")),
        last_known=last_known,
    )


def airflow_units(roles: Iterable[Role], systemd: Mapping[str, bool | None]) -> dict[str, bool]:
    """A host's Airflow units (those its roles run) -> active, from pyinfra's
    ``SystemdStatus`` (``{"<unit>.service": bool}``)."""
    return {
        unit: bool(systemd.get(f"{unit}.service"))
        for role, (unit, _) in COMPONENTS.items()
        if role in roles
    }


def running(hosts: Mapping[str, Mapping[str, bool | None]], unit: str) -> frozenset[str]:
    """Hosts whose ``SystemdStatus`` shows ``unit`` active (``etcd``, ``keepalived``,
    ``redis-sentinel``)."""
    return frozenset(h for h, status in hosts.items() if status.get(f"{unit}.service"))
