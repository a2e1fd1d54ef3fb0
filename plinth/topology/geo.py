"""The two sites as the DC switchover, failover and failback decisions see them, from the
model alone: which hosts of each datacenter run what, the names and addresses that a
plan's steps act on, and the timings that bound the waits of a fence.

:mod:`plinth.geo` pairs this with what was read live (:mod:`plinth.geo.observe`); nothing
here reads a host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from plinth.model import AIRFLOW_ROLES, Environment, Role
from plinth.topology.patroni import standby_slot
from plinth.topology.redis import sentinel_master_name


@dataclass(frozen=True)
class SiteLayout:
    """One datacenter's hosts by what they run (the model's roles)."""

    name: str
    hosts: tuple[str, ...]
    """Every host of the site."""
    postgresql: tuple[str, ...]
    """Patroni members (scope :attr:`scope`)."""
    etcd: tuple[str, ...]
    """The site's own etcd members (Patroni's DCS; never stretched across sites)."""
    redis: tuple[str, ...]
    """Redis data nodes."""
    sentinels: tuple[str, ...]
    airflow: tuple[str, ...]
    """Hosts with any Airflow role."""
    schedulers: tuple[str, ...]
    """Hosts with the ``airflow-scheduler`` role."""
    keepalived: tuple[str, ...]
    """VIP holders."""
    rabbitmq: tuple[str, ...]
    scope: str
    """The site's Patroni scope (``pg-<dc>``)."""
    slot: str
    """The physical slot the active site keeps for this site while it stands by."""
    postgresql_vip: str | None
    """``address:port`` of the site's PostgreSQL VIP and haproxy's primary port: what a
    standby cluster of this site streams from (``standby_cluster.host``/``port``)."""
    redis_master_name: str
    """The master set this site's Sentinels monitor (``redis-<dc>``)."""


@dataclass(frozen=True)
class GeoTopology:
    """The environment's sites, from the model."""

    environment: str
    model_active: str
    """The site ``active_datacenter`` names (default: the first datacenter)."""
    sites: tuple[SiteLayout, ...]
    addresses: Mapping[str, str] = field(default_factory=dict)
    """Host name -> address (Redis reports its peers by address)."""
    patroni_ttl: int = 20
    patroni_loop_wait: int = 2
    redis_min_replicas_to_write: int = 1
    redis_min_replicas_max_lag: int = 10

    def site(self, name: str) -> SiteLayout:
        return next(s for s in self.sites if s.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    def host_at(self, address: str | None) -> str | None:
        """The host whose address is ``address`` (None: not a host of the model)."""
        return next((h for h, a in self.addresses.items() if a == address), None)

    def site_of(self, host: str) -> str | None:
        return next((s.name for s in self.sites if host in s.hosts), None)

    def site_streaming_from(self, address: str | None) -> str | None:
        """The site whose PostgreSQL VIP is ``address`` (a ``standby_cluster.host``)."""
        if address is None:
            return None
        return next(
            (
                s.name
                for s in self.sites
                if s.postgresql_vip is not None and s.postgresql_vip.split(":")[0] == address
            ),
            None,
        )

    @property
    def self_demotion_seconds(self) -> int:
        """How long a Patroni primary that lost its etcd quorum may still take writes:
        it cannot renew its leader key and demotes itself within ``ttl``; one more loop
        for the demotion to finish."""
        return self.patroni_ttl + self.patroni_loop_wait


def geo_topology(env: Environment) -> GeoTopology:
    """The environment's sites as the geo decisions see them."""

    def names(role: Role, dc: str) -> tuple[str, ...]:
        return tuple(h.name for h in env.hosts_with(role, dc))

    sites = []
    for dc in env.datacenters:
        vip = env.vip_serving("postgresql", dc.name)
        sites.append(
            SiteLayout(
                name=dc.name,
                hosts=tuple(h.name for h in env.hosts_in(dc.name)),
                postgresql=names(Role.POSTGRESQL, dc.name),
                etcd=names(Role.ETCD, dc.name),
                redis=names(Role.REDIS, dc.name),
                sentinels=names(Role.SENTINEL, dc.name),
                airflow=tuple(
                    h.name
                    for h in env.hosts_in(dc.name)
                    if any(r in h.roles for r in AIRFLOW_ROLES)
                ),
                schedulers=names(Role.AIRFLOW_SCHEDULER, dc.name),
                keepalived=names(Role.KEEPALIVED, dc.name),
                rabbitmq=names(Role.RABBITMQ, dc.name),
                scope=f"{env.components.patroni.scope_prefix}-{dc.name}",
                slot=standby_slot(dc.name),
                postgresql_vip=(
                    f"{vip.address}:{env.components.haproxy.primary_port}" if vip else None
                ),
                redis_master_name=sentinel_master_name(env.components.redis, dc.name),
            )
        )
    patroni, redis = env.components.patroni, env.components.redis
    return GeoTopology(
        environment=env.name,
        model_active=env.active_site,
        sites=tuple(sites),
        addresses={h.name: str(h.address) for h in env.hosts},
        patroni_ttl=patroni.ttl,
        patroni_loop_wait=patroni.loop_wait,
        redis_min_replicas_to_write=redis.min_replicas_to_write,
        redis_min_replicas_max_lag=redis.min_replicas_max_lag,
    )
