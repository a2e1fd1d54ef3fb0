"""Redis's shape, from the model: each DC's data nodes and Sentinels, the master name the
Sentinels monitor, the active DC's cell a following DC replicates, the certificate and
password file the client (``redis-cli``) presents on a host, and what the store is on the
hosts' Debian release (:class:`plinth.releases.KeyValueStore`: Redis 7.0 or Valkey 8.1)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.model import Environment, RedisSettings, Role
from plinth.releases import KeyValueStore

AUTH_DIR = "/etc/plinth/redis"
"""Root-only ``<user>.auth`` files holding the passwords (written by the deploy); the client
reads them through ``REDISCLI_AUTH`` (``valkey-cli`` reads that variable too), so no password
is ever part of a command."""


@dataclass(frozen=True)
class CliTls:
    """How the client on a host authenticates: certificate files and password file."""

    ca: str
    cert: str
    key: str
    auth_file: str
    cli: str
    """The client binary (:attr:`KeyValueStore.cli`: ``redis-cli``, ``valkey-cli``)."""

    def command(self, address: str, port: int, *args: str) -> str:
        q = shlex.quote
        return (
            f'REDISCLI_AUTH="$(cat {q(self.auth_file)})" timeout 5 {q(self.cli)} --no-auth-warning '
            f"--tls --cacert {q(self.ca)} --cert {q(self.cert)} --key {q(self.key)} "
            f"-h {q(address)} -p {port} {' '.join(q(a) for a in args)}"
        )


@dataclass(frozen=True)
class Upstream:
    """Set on a datacenter that is not the active one: its data nodes replicate from the
    active DC's master (``replica-priority 0``) and its Sentinels do not run."""

    datacenter: str
    """The active datacenter."""
    redis_nodes: tuple[str, ...]
    """Addresses of the active DC's data nodes (the first: master of a new cell)."""
    sentinels: tuple[str, ...]
    """Addresses of the active DC's Sentinels."""


@dataclass(frozen=True)
class RedisInput:
    """The slice of the model one Redis/Sentinel host reads (no secrets)."""

    name: str
    address: str
    datacenter: str
    environment: str
    settings: RedisSettings
    roles: frozenset[Role]
    redis_nodes: tuple[str, ...]
    """Addresses of the DC's data nodes; the first is the master of a new cell."""
    sentinels: tuple[str, ...]
    """Addresses of the DC's Sentinels."""
    redis_tls: CertificateSpec | None
    sentinel_tls: CertificateSpec | None
    store: KeyValueStore
    """What the store is on this host's release: packages, units, paths, user, client."""
    upstream: Upstream | None = None
    """Set when this DC is not ``active_datacenter``: it follows the active DC's master."""

    @property
    def replica_priority(self) -> int:
        """0 in a following DC: Sentinel never promotes a replica with priority 0."""
        return 0 if self.upstream is not None else 100

    @property
    def cell_sentinels(self) -> tuple[str, ...]:
        """The Sentinels that watch this DC's data nodes: none in a following DC (its own
        Sentinels are stopped; the active DC's Sentinels see its nodes as replicas)."""
        return () if self.upstream is not None else self.sentinels

    @property
    def upstream_addresses(self) -> tuple[str, ...] | None:
        return self.upstream.redis_nodes if self.upstream is not None else None

    def upstream_cell(self) -> RedisInput:
        """This host looking at the active DC's cell (the master a follower replicates)."""
        if self.upstream is None:
            return self
        return replace(
            self,
            datacenter=self.upstream.datacenter,
            redis_nodes=self.upstream.redis_nodes,
            sentinels=self.upstream.sentinels,
            upstream=None,
        )

    @property
    def master_name(self) -> str:
        return sentinel_master_name(self.settings, self.datacenter)

    @property
    def marker(self) -> str:
        return f"plinth-bootstrap: {self.environment}-{self.datacenter}"

    @property
    def tls(self) -> CertificateSpec:
        """The certificate this host's client presents (either service's)."""
        spec = self.redis_tls or self.sentinel_tls
        if spec is None:
            raise ValueError(f"host {self.name} has neither the redis nor the sentinel role")
        return spec

    def cli(self, user: str) -> CliTls:
        """The client's credentials: ``default`` for data nodes, ``sentinel`` for Sentinels."""
        tls = self.tls
        return CliTls(
            tls.ca_path, tls.chain_path, tls.key_path, f"{AUTH_DIR}/{user}.auth", self.store.cli
        )

    def redis_cli(self, address: str, *args: str, user: str = "default") -> str:
        port = self.settings.port if user == "default" else self.settings.sentinel_port
        return self.cli(user).command(address, port, *args)


def sentinel_master_name(settings: RedisSettings, datacenter: str) -> str:
    """The name ``datacenter``'s Sentinels monitor its master under (what clients ask for)."""
    return f"{settings.master_name_prefix}-{datacenter}"


def upstream_of(env: Environment, datacenter: str) -> Upstream | None:
    """The active DC's cell, which ``datacenter``'s data nodes replicate; None in the active
    DC, and while the active DC has no Redis."""
    active = env.active_site
    if datacenter == active or not env.hosts_with(Role.REDIS, active):
        return None
    return Upstream(
        datacenter=active,
        redis_nodes=tuple(str(h.address) for h in env.hosts_with(Role.REDIS, active)),
        sentinels=tuple(str(h.address) for h in env.hosts_with(Role.SENTINEL, active)),
    )


def redis_input(
    context: HostContext, redis_tls: CertificateSpec | None, sentinel_tls: CertificateSpec | None
) -> RedisInput:
    env = context.environment
    dc = context.datacenter.name
    return RedisInput(
        name=context.host.name,
        address=str(context.host.address),
        datacenter=dc,
        environment=env.name,
        settings=env.components.redis,
        roles=frozenset(context.host.roles),
        redis_nodes=tuple(str(h.address) for h in env.hosts_with(Role.REDIS, dc)),
        sentinels=tuple(str(h.address) for h in env.hosts_with(Role.SENTINEL, dc)),
        redis_tls=redis_tls,
        sentinel_tls=sentinel_tls,
        store=env.debian.key_value_store,
        upstream=upstream_of(env, dc),
    )
