"""The typed environment model: one YAML file describes one environment.

An environment (``inventory/<name>.yaml``) holds its datacenters, hosts, VIPs,
component settings and package sources. It is validated completely before any
host is touched: :func:`load_environment` collects **every** problem and raises
one :class:`ModelError` whose lines each name the file and the field path.

How values combine: every field has a documented default here (the only place
defaults live); the environment file overrides them. Settings maps with defaults
(``base.sysctl``, ``patroni.parameters``) are merged key by key instead: the file's keys
override or add, ``null`` removes a default (:func:`merged_over_defaults`). Per-host differences are
expressed by roles, never by per-host copies of component settings.

Clusters are scoped to one datacenter by construction: the etcd cluster of DC
``dc1`` is the set of ``dc1`` hosts with the ``etcd`` role. Two datacenters
cannot form a quorum, so no setting can stretch a cluster across them.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from plinth.releases import DEFAULT_RELEASE, RELEASES, DebianRelease, release_named

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
DNS_DOMAIN_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


# PostgreSQL roles Patroni itself creates and logs in as: the superuser, replication and
# pg_rewind. Certificate identities and login roles of the model may not take them.
SUPERUSER_ROLE = "postgres"
REPLICATION_ROLE = "replicator"
REWIND_ROLE = "rewind_user"
PATRONI_ROLES = (SUPERUSER_ROLE, REPLICATION_ROLE, REWIND_ROLE)


class Role(StrEnum):
    """What a host runs. Each role belongs to exactly one component (see ROLE_COMPONENT)."""

    ETCD = "etcd"
    POSTGRESQL = "postgresql"
    HAPROXY = "haproxy"
    KEEPALIVED = "keepalived"
    REDIS = "redis"
    SENTINEL = "sentinel"
    RABBITMQ = "rabbitmq"
    MINIO = "minio"
    REGISTRY = "registry"
    NGINX = "nginx"
    SQUID = "squid"
    AIRFLOW_API = "airflow-api"
    AIRFLOW_SCHEDULER = "airflow-scheduler"
    AIRFLOW_DAG_PROCESSOR = "airflow-dag-processor"
    AIRFLOW_TRIGGERER = "airflow-triggerer"
    AIRFLOW_WORKER = "airflow-worker"


class Tier(StrEnum):
    """Stateless services are kept apart from persistence on real hosts."""

    PERSISTENCE = "persistence"
    STATELESS = "stateless"
    EDGE = "edge"


# role -> (component module name, tier). The component name is the one used for
# operations/<name>.py, facts/<name>.py and templates/<name>/.
ROLE_COMPONENT: dict[Role, tuple[str, Tier]] = {
    Role.ETCD: ("etcd", Tier.PERSISTENCE),
    Role.POSTGRESQL: ("patroni", Tier.PERSISTENCE),
    Role.REDIS: ("redis", Tier.PERSISTENCE),
    Role.SENTINEL: ("redis", Tier.PERSISTENCE),
    Role.RABBITMQ: ("rabbitmq", Tier.PERSISTENCE),
    Role.MINIO: ("minio", Tier.PERSISTENCE),
    Role.HAPROXY: ("haproxy", Tier.EDGE),
    Role.KEEPALIVED: ("keepalived", Tier.EDGE),
    Role.NGINX: ("nginx", Tier.EDGE),
    Role.SQUID: ("squid", Tier.EDGE),
    Role.REGISTRY: ("registry", Tier.STATELESS),
    Role.AIRFLOW_API: ("airflow", Tier.STATELESS),
    Role.AIRFLOW_SCHEDULER: ("airflow", Tier.STATELESS),
    Role.AIRFLOW_DAG_PROCESSOR: ("airflow", Tier.STATELESS),
    Role.AIRFLOW_TRIGGERER: ("airflow", Tier.STATELESS),
    Role.AIRFLOW_WORKER: ("airflow", Tier.STATELESS),
}

AIRFLOW_ROLES: tuple[Role, ...] = (
    Role.AIRFLOW_API,
    Role.AIRFLOW_SCHEDULER,
    Role.AIRFLOW_DAG_PROCESSOR,
    Role.AIRFLOW_TRIGGERER,
    Role.AIRFLOW_WORKER,
)

# Roles whose daemons form a majority-quorum cluster inside one datacenter.
QUORUM_ROLES: tuple[Role, ...] = (Role.ETCD, Role.SENTINEL, Role.RABBITMQ)


class Frozen(BaseModel):
    """Base of every model: immutable, unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PackageSources(Frozen):
    apt_mirror: str = "http://deb.debian.org/debian"
    """Debian mirror for the release and its ``-updates`` suite."""
    apt_security_mirror: str = "http://deb.debian.org/debian-security"
    """Mirror for the release's ``-security`` suite."""
    pypi_index: str = "https://pypi.org/simple"
    """PyPI index used by the controller to build wheelhouses."""
    http_proxy: str | None = None
    """Proxy for apt and pip on the hosts (the DC's squid in an OT network). None: direct."""
    extra_ca_bundle: str | None = None
    """PEM bundle (path on the controller, relative to the environment file) added to every
    host's trust store: for a TLS-intercepting proxy or an internal mirror."""


class Datacenter(Frozen):
    name: Name
    """Short name, used in stack names (``<env>-<dc>``) and host groups."""
    subnet: ipaddress.IPv4Network
    """The DC's host network. Host addresses and VIPs must lie inside it."""
    domain: Annotated[str, Field(pattern=DNS_DOMAIN_PATTERN)]
    """DNS domain of the DC; a host's FQDN is ``<host>.<domain>``."""
    inter_dc_gateway: ipaddress.IPv4Address | None = None
    """Next hop from this DC's hosts towards the other datacenters' subnets; the base deploy
    installs persistent routes through it. None: the network routes between DCs itself."""
    package_sources: PackageSources | None = None
    """Replaces the environment's package sources for this DC's hosts (its own mirror and
    squid proxy). None: the environment's."""

    @field_validator("name")
    @classmethod
    def _not_a_crl_name(cls, value: str) -> str:
        # Hosts keep /etc/plinth/tls/crl/<dc>.crl.pem beside root.crl.pem and all.crl.pem.
        if value in ("root", "all"):
            raise ValueError(
                f"{value!r} is reserved: the hosts' CRL files root.crl.pem and all.crl.pem "
                "would clash with this datacenter's"
            )
        return value


class SshSettings(Frozen):
    user: str = "root"
    """Login user; a non-root user needs passwordless sudo."""
    port: int = Field(22, ge=1, le=65535)
    """SSH port."""
    key: str | None = None
    """Private key file on the controller (relative to the environment file). None: ssh-agent."""
    known_hosts: str | None = None
    """known_hosts file on the controller (relative to the environment file). None: ~/.ssh."""
    strict_host_key_checking: Literal["yes", "accept-new"] = "yes"
    """``yes`` on real hosts; the lab writes its own known_hosts and uses ``yes`` too."""


class Host(Frozen):
    name: Name
    """Host name (also set as the host's hostname)."""
    address: ipaddress.IPv4Address
    """Address in its datacenter's subnet; the controller connects to it over SSH."""
    datacenter: Name
    """Name of the datacenter the host sits in."""
    roles: tuple[Role, ...] = ()
    """What the host runs. Unknown roles are rejected with the list of known ones."""
    ssh_address: str | None = None
    """Address the controller dials if it differs from ``address`` (a bastion, a NAT)."""

    @field_validator("roles", mode="before")
    @classmethod
    def _known_roles(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            known = {r.value for r in Role}
            unknown = [r for r in value if r not in known]
            if unknown:
                raise ValueError(
                    f"unknown role(s) {', '.join(map(str, unknown))}; "
                    f"known roles: {', '.join(sorted(known))}"
                )
        return value


class Vip(Frozen):
    name: Name
    """Name of the VIP; ``<name>.<dc domain>`` resolves to it and is in server certificates."""
    datacenter: Name
    """A VIP is layer 2: it never leaves its datacenter."""
    address: ipaddress.IPv4Address
    """The floating address, inside the DC subnet and not a host address."""
    router_id: int = Field(ge=1, le=255)
    """VRRP virtual router id; unique per DC network."""
    holder_role: Literal[Role.KEEPALIVED] = Role.KEEPALIVED
    """Hosts of this role in the VIP's DC hold it (keepalived with unicast peers)."""
    services: tuple[str, ...] = ()
    """Service names reachable behind this VIP (postgresql, registry, airflow...)."""


DEFAULT_SYSCTL: dict[str, str] = {
    "net.ipv4.tcp_keepalive_time": "60",
    "net.ipv4.tcp_keepalive_intvl": "10",
    "net.ipv4.tcp_keepalive_probes": "6",
    "net.ipv4.ip_nonlocal_bind": "1",
    "net.core.somaxconn": "4096",
    "vm.swappiness": "1",
    "kernel.kptr_restrict": "2",
    "kernel.dmesg_restrict": "1",
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
}

DEFAULT_POSTGRESQL_PARAMETERS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    "wal_level": "replica",
    "hot_standby": "on",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_log_hints": "on",
    "password_encryption": "scram-sha-256",
    "ssl_min_protocol_version": "TLSv1.2",
    "log_connections": "on",
    "log_disconnections": "on",
    # A synchronous standby cut off from the primary holds every commit until its
    # walsender gives up (PostgreSQL's default: 60 s); only then does Patroni name
    # another synchronous standby. 10 s bounds that stall (keepalives go out at
    # half of it, answered at once by a live standby).
    "wal_sender_timeout": "10s",
    "wal_receiver_timeout": "10s",
}


def merged_over_defaults(defaults: dict[str, str], value: object) -> object:
    """A settings map from the environment file merged over its defaults.

    Replacing the whole map when one key is set would silently drop the hardening defaults
    beside it, so the file's keys are laid over the defaults instead; ``null`` removes a
    default. A ``null`` for a key with no default is an error (a typo would otherwise keep
    the default it meant to remove). Anything but a mapping is passed on unchanged for
    pydantic to report with its field path.
    """
    if not isinstance(value, dict):
        return value
    unknown = sorted(str(k) for k, v in value.items() if v is None and k not in defaults)
    if unknown:
        raise ValueError(
            f"null removes a default, but there is no default named {', '.join(unknown)} "
            f"(defaults: {', '.join(defaults)})"
        )
    merged: dict[object, object] = {}
    merged.update(defaults)
    for key, item in value.items():
        if item is None:
            merged.pop(key, None)
        else:
            merged[key] = item
    return merged


class BaseSettings(Frozen):
    timezone: str = "UTC"
    """Host time zone."""
    ntp_servers: tuple[str, ...] = ()
    """NTP servers for chrony. Empty: Debian's pool (not reachable from an OT network)."""
    sysctl: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SYSCTL))
    """Kernel settings written to /etc/sysctl.d/60-plinth.conf. Keepalives detect dead
    peers within ~2 minutes; ``ip_nonlocal_bind`` lets haproxy bind a VIP it does not hold;
    the ``kernel.*`` and ``net.ipv4.conf.all.*`` keys are hardening. The environment's keys
    are merged over these defaults, never replace them: setting ``vm.swappiness`` keeps
    every other default, and a key set to ``null`` removes that default (on purpose, in
    the file where a reviewer sees it)."""

    @field_validator("sysctl", mode="before")
    @classmethod
    def _sysctl_over_defaults(cls, value: object) -> object:
        return merged_over_defaults(DEFAULT_SYSCTL, value)

    journald_max_use: str = "1G"
    """Cap of the persistent journal (``SystemMaxUse``)."""
    packages: tuple[str, ...] = (
        "ca-certificates",
        "openssl",
        "chrony",
        "curl",
        "jq",
        "python3",
    )
    """Packages every host gets."""


class EtcdSettings(Frozen):
    client_port: int = 2379
    """Client (and Patroni) port, TLS with client certificates."""
    peer_port: int = 2380
    """Raft peer port, TLS with peer certificates."""
    heartbeat_interval_ms: int = Field(100, ge=10, le=10000)
    """Raft heartbeat interval. Raise it with the round trip between members."""
    election_timeout_ms: int = Field(1000, ge=100, le=50000)
    """Raft election timeout; etcd wants at least 5x the heartbeat interval."""
    quota_backend_bytes: int = Field(2 * 1024**3, ge=64 * 1024**2)
    """Backend size quota: etcd raises a NOSPACE alarm (read-only) beyond it."""
    auto_compaction_retention_hours: int = Field(1, ge=0)
    """Keep this many hours of key history (periodic compaction); 0 disables."""

    @model_validator(mode="after")
    def _timing(self) -> EtcdSettings:
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms:
            raise ValueError(
                f"election_timeout_ms: {self.election_timeout_ms} is less than 5 x "
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms})"
            )
        return self


class PatroniSettings(Frozen):
    version: str = Field("4.1.5", pattern=r"^\d+\.\d+\.\d+$")
    """Patroni release, installed from a hash-checked wheelhouse into
    ``/opt/patroni/venv-<tag>`` (not Debian's package: bookworm's 3.0.2 can fork the
    cluster after a partition). Its lock ``plinth/locks/patroni-<version>.txt`` must be
    committed; a running cluster on another release is rolled member by member
    (docs/components/postgresql.md)."""
    scope_prefix: str = "pg"
    """Patroni scope is ``<prefix>-<dc>``."""
    postgresql_port: int = 5432
    """PostgreSQL port on the nodes."""
    rest_api_port: int = 8008
    """Patroni REST API port. Reads (``GET``: haproxy's checks, plinth's facts) need a
    platform client certificate; changes (``PATCH /config``, ``POST /restart``,
    ``/switchover``...) also need a member's own address and the REST API password
    (secret ``postgresql-restapi-password``), which only the members and plinth's calls
    run as root on them hold (docs/security.md)."""
    synchronous_mode: bool = True
    """Synchronous replication: no committed transaction is lost on failover."""
    ttl: int = Field(20, ge=20, le=300)
    """Leader lock lifetime in seconds: an unreachable primary is replaced after at most
    this long. Patroni needs ``loop_wait + 2 * retry_timeout <= ttl`` and at least 20:
    Patroni 4.x raises a lower value to 20 by itself and ``patroni --validate-config``
    refuses it (the default was 12 before Patroni came from the wheelhouse)."""
    loop_wait: int = Field(2, ge=1, le=60)
    """Seconds between Patroni's HA loops."""
    retry_timeout: int = Field(5, ge=2, le=60)
    """Seconds Patroni retries the DCS and PostgreSQL before giving up (demoting)."""
    maximum_lag_on_failover: int = Field(1024**2, ge=0)
    """Bytes a replica may lag and still be promoted (synchronous standbys never lag)."""
    replica_max_lag: str = "16MB"
    """Lag above which haproxy's replica port stops routing to a replica (``/replica?lag=``)."""
    parameters: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_POSTGRESQL_PARAMETERS))
    """PostgreSQL settings kept in Patroni's dynamic configuration (in etcd). After the
    bootstrap they are changed through Patroni's REST API (``PATCH /config``), never in
    files Patroni owns; a setting that needs a restart is rolled replicas first, one
    switchover, old primary last. Values are strings, as PostgreSQL prints them. The
    environment's keys are merged over these defaults, never replace them: setting
    ``max_connections`` keeps ``ssl_min_protocol_version``, ``password_encryption`` and the
    rest, and a key set to ``null`` removes that default (no longer managed: a running
    cluster keeps its current value until it is removed in Patroni)."""

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters_over_defaults(cls, value: object) -> object:
        return merged_over_defaults(DEFAULT_POSTGRESQL_PARAMETERS, value)

    login_roles: tuple[str, ...] = ("plinth_probe",)
    """Roles that log in with a client certificate alone (CN = role, from
    ``plinth pki client-cert ENV --cn ROLE``); each is created on the primary with LOGIN and
    a schema of its own, nothing more. ``plinth_probe`` is the write probe of the lab tests
    and benchmark (an operator's end-to-end check through the VIP)."""

    @field_validator("login_roles")
    @classmethod
    def _role_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for role in value:
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
                raise ValueError(f"{role!r} is not a plain PostgreSQL role name ([a-z_][a-z0-9_]*)")
            if role in PATRONI_ROLES:
                raise ValueError(f"{role!r} is reserved for Patroni")
        return value

    @staticmethod
    def lock_path(version: str, python_tag: str = "cp311") -> Path:
        """The committed hash lock of Patroni ``version`` for hosts running ``python_tag``
        (package data of plinth): ``patroni-<version>.txt`` for Debian 12's cp311 (those
        locks predate the releases), ``patroni-<version>-<tag>.txt`` for any other."""
        suffix = "" if python_tag == "cp311" else f"-{python_tag}"
        return Path(__file__).resolve().parent / "locks" / f"patroni-{version}{suffix}.txt"

    @field_validator("version")
    @classmethod
    def _version_locked(cls, value: str) -> str:
        lock = PatroniSettings.lock_path(value)
        if not lock.is_file():
            raise ValueError(
                f"no hash lock for Patroni {value}: commit plinth/locks/{lock.name} "
                "(generated with the command in the header of an existing lock, "
                "see docs/components/postgresql.md)"
            )
        return value

    @model_validator(mode="after")
    def _timing(self) -> PatroniSettings:
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                f"ttl: {self.ttl} is less than loop_wait + 2 * retry_timeout "
                f"({self.loop_wait} + 2 * {self.retry_timeout}); Patroni would lose its lock"
            )
        return self


class HaproxySettings(Frozen):
    primary_port: int = 5000
    """VIP port routed to the current primary (checked with Patroni's /primary)."""
    replica_port: int = 5001
    """VIP port routed to replicas (Patroni /replica?lag=...)."""
    maxconn: int = Field(4000, le=9000)
    """Global maxconn; ~2 descriptors per connection must fit the open-file limit."""
    check_interval_ms: int = Field(1000, ge=100, le=60000)
    """Interval of the Patroni health checks; a server is marked down after two failures."""


class KeepalivedSettings(Frozen):
    """VRRP, and the checks that decide whether a node may hold a VIP (``plinth/vip_check.py``)."""

    advert_int: int = Field(1, ge=1, le=255)
    """VRRP advertisement interval in seconds; a dead MASTER is replaced after ~3 of them."""
    check_interval: int = Field(1, ge=1, le=60)
    """Seconds between runs of the track scripts (unit checks and the VIP check)."""
    check_timeout: int = Field(2, ge=1, le=30)
    """Seconds a VIP check may run before keepalived kills it (counted as a failure). Its
    own stats read and TCP connects get half of it, in parallel."""
    check_fall: int = Field(2, ge=1, le=10)
    """Consecutive failed checks before the node releases the VIP (FAULT). 2: one slow
    run does not move the VIP; an isolated node still releases within ~2 intervals of
    haproxy marking its peers unreachable."""
    check_rise: int = Field(2, ge=1, le=10)
    """Consecutive passing checks before a released node is eligible again."""
    primary_grace_ttls: int = Field(2, ge=1, le=10)
    """A node connected to a majority of the PostgreSQL cell keeps the VIP this many
    Patroni ``ttl`` without seeing a primary (a switchover or failover in progress), then
    releases it. 2: a failover completes within about one ``ttl``."""
    garp_master_refresh: int = Field(10, ge=0, le=3600)
    """Seconds between the MASTER's repeated gratuitous ARPs; 0 disables them. A node that
    was MASTER for a moment (cut off, before its check released the VIP) leaves clients
    with its MAC; without a refresh the real MASTER never corrects them and they hang
    until their ARP entry expires (~30-60 s). Cost: if two connected nodes are MASTER at
    once (an asymmetric partition), clients alternate between them at this period."""


class RedisSettings(Frozen):
    """Redis + Sentinel per DC (see docs/components/redis.md).

    Replication and Sentinel settings are written into the daemons' files once, at
    bootstrap; afterwards the daemons own those files (a failover rewrites them) and the
    deploy changes the settings below at runtime (``CONFIG SET`` + ``CONFIG REWRITE``,
    ``SENTINEL SET``), so a run never undoes a failover.
    """

    port: int = Field(6379, ge=1, le=65535)
    """TLS port (the plaintext port is disabled)."""
    sentinel_port: int = Field(26379, ge=1, le=65535)
    """Sentinel TLS port."""
    master_name_prefix: str = Field("redis", pattern=r"^[a-z][a-z0-9-]*$")
    """Sentinel's name for a DC's master set: ``<prefix>-<dc>`` (``redis-dc1``)."""
    quorum: int = Field(2, ge=1)
    """Sentinels that must agree the master is down before a failover is attempted (a
    majority of the DC's Sentinels must still authorise it)."""
    down_after_milliseconds: int = Field(3000, ge=1000)
    """Silence after which a Sentinel marks the master down. 3 s: Sentinel pings every
    second, so three missed answers; detection + election + promotion stays under 10 s
    (Sentinel's default, 30 s, alone exceeds the target)."""
    failover_timeout_milliseconds: int = Field(3000, ge=1000)
    """Sentinel's failover timeout. It also bounds a leader election: if the Sentinels
    split their votes (after a host loss only two remain, and each may vote for itself)
    the attempt is abandoned after this and retried after twice this. 3 s: a promotion on
    a LAN takes 1-2 s, and one split vote still resumes writes in about 10 s."""
    parallel_syncs: int = Field(1, ge=1)
    """Replicas re-pointed at a new master at once (the others keep serving reads)."""
    min_replicas_to_write: int = Field(1, ge=0)
    """The master refuses writes unless this many replicas are connected: an isolated
    master stops accepting writes that a failover on the other side would lose."""
    min_replicas_max_lag: int = Field(10, ge=1)
    """Seconds since a replica's last acknowledgement before it stops counting."""
    maxmemory_mb: int = Field(0, ge=0)
    """Memory limit in MiB (0: none)."""
    maxmemory_policy: Literal[
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] = "noeviction"
    """What to evict at the limit. ``noeviction``: writes fail instead (a broker's data
    must not silently disappear)."""
    io_threads: int = Field(1, ge=1, le=16)
    """Redis I/O threads. Fixed at start: a change is rolled (replicas, Sentinels,
    failover, old master)."""


RABBITMQ_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,62}$"
RabbitmqName = Annotated[str, Field(pattern=RABBITMQ_NAME_PATTERN)]


class RabbitmqVhost(Frozen):
    name: RabbitmqName
    """Virtual host name."""
    default_queue_type: Literal["quorum", "classic", "stream"] = "quorum"
    """Type of a durable queue declared without ``x-queue-type`` (vhost metadata):
    quorum queues are replicated to every node of the DC's cluster."""
    description: str = ""
    """Free text shown by the management UI."""


class RabbitmqPermission(Frozen):
    vhost: RabbitmqName
    """Virtual host the permission applies to (must be declared in ``vhosts``)."""
    configure: str = ".*"
    """Regex of resources the user may declare/delete."""
    write: str = ".*"
    """Regex of resources the user may publish to."""
    read: str = ".*"
    """Regex of resources the user may consume from."""


class RabbitmqUser(Frozen):
    name: RabbitmqName
    """User name = the CN of its client certificate (``plinth pki client-cert ENV --cn
    NAME``). Users log in with the certificate alone (SASL EXTERNAL); they have no password."""
    tags: tuple[Literal["administrator", "monitoring", "management", "policymaker"], ...] = ()
    """Management tags (none: AMQP only)."""
    permissions: tuple[RabbitmqPermission, ...] = ()
    """Per-vhost permissions."""


class RabbitmqPolicy(Frozen):
    name: RabbitmqName
    """Policy name (unique per vhost)."""
    vhost: RabbitmqName
    """Virtual host (must be declared in ``vhosts``)."""
    pattern: str = ".*"
    """Regex of queue/exchange names the policy applies to."""
    apply_to: Literal["queues", "exchanges", "all"] = "queues"
    """Kind of object matched."""
    priority: int = Field(0, ge=0, le=255)
    """The highest-priority matching policy wins."""
    definition: dict[str, str | int | bool]
    """Policy keys, e.g. ``{max-length: 100000, overflow: reject-publish}``."""


class RabbitmqSettings(Frozen):
    amqps_port: int = Field(5671, ge=1, le=65535)
    """AMQP over TLS with client certificates; there is no plaintext listener."""
    management_port: int = Field(15671, ge=1, le=65535)
    """Management UI/API over TLS with client certificates (no plaintext 15672)."""
    distribution_port: int = Field(25672, ge=1, le=65535)
    """Erlang distribution (inter-node and CLI) port, TLS with the node certificates."""
    heartbeat_seconds: int = Field(60, ge=0, le=3600)
    """AMQP heartbeat the server proposes; a dead client connection is closed after ~2."""
    memory_high_watermark: float = Field(0.4, gt=0.0, le=0.9)
    """Fraction of RAM above which publishers are blocked (memory alarm)."""
    partition_handling: Literal["pause_minority", "autoheal"] = "pause_minority"
    """What a node does after a network partition; ``pause_minority`` keeps the minority
    side from accepting writes that would be lost (the safe choice for 3+ nodes)."""
    admin_user: RabbitmqName = "plinth-admin"
    """Break-glass administrator for the management UI (password: secret
    ``rabbitmq-admin-password``; the UI also requires a client certificate)."""
    vhosts: tuple[RabbitmqVhost, ...] = (
        RabbitmqVhost(name="airflow", description="Airflow's Celery broker"),
        RabbitmqVhost(name="plinth-probe", description="end-to-end probe of tests and bench"),
    )
    """Virtual hosts, created by definition import (never deleted by plinth)."""
    users: tuple[RabbitmqUser, ...] = (
        RabbitmqUser(name="airflow", permissions=(RabbitmqPermission(vhost="airflow"),)),
        RabbitmqUser(name="plinth_probe", permissions=(RabbitmqPermission(vhost="plinth-probe"),)),
    )
    """Certificate-authenticated users (never deleted by plinth; ``guest`` is removed)."""
    policies: tuple[RabbitmqPolicy, ...] = (
        RabbitmqPolicy(
            name="probe-bounded",
            vhost="plinth-probe",
            definition={"max-length": 100000, "overflow": "reject-publish"},
        ),
    )
    """Policies by vhost."""

    @model_validator(mode="after")
    def _references(self) -> RabbitmqSettings:
        vhosts = [v.name for v in self.vhosts]
        problems = [
            f"vhosts: {n!r} declared twice" for n in sorted(set(vhosts)) if vhosts.count(n) > 1
        ]
        users = [u.name for u in self.users]
        problems += [
            f"users: {n!r} declared twice" for n in sorted(set(users)) if users.count(n) > 1
        ]
        for i, user in enumerate(self.users):
            if user.name in ("guest", self.admin_user):
                problems.append(f"users[{i}].name: {user.name!r} is reserved")
            for j, perm in enumerate(user.permissions):
                if perm.vhost not in vhosts:
                    problems.append(
                        f"users[{i}].permissions[{j}].vhost: {perm.vhost!r} is not in vhosts"
                    )
        for i, policy in enumerate(self.policies):
            if policy.vhost not in vhosts:
                problems.append(f"policies[{i}].vhost: {policy.vhost!r} is not in vhosts")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class SquidSettings(Frozen):
    port: int = Field(3128, ge=1, le=65535)
    """Proxy port on the squid hosts (and the DC's edge VIP)."""
    allowed_domains: tuple[str, ...] = ()
    """Destinations allowed besides the package sources' hosts (artifact sources). A
    leading dot allows subdomains (``.example.org``)."""
    cache_size_mb: int = Field(4096, ge=100)
    """Disk cache size: packages installed by one host are served to the next."""
    max_object_size_mb: int = Field(512, ge=1)
    """Largest object cached (a big wheel or .deb)."""


class VirtualHost(Frozen):
    name: Name
    """Service name of the virtual host (``registry``); the DC's VIPs listing this service
    route it, and nginx's server certificate carries their names."""
    port: int = Field(ge=1, le=65535)
    """Port nginx listens on (every address, the VIP included), TLS only."""
    upstream_role: Role
    """Hosts of this role in the same DC are the upstreams."""
    upstream_port: int = Field(ge=1, le=65535)
    """TLS port of the upstreams; nginx verifies their certificate and presents its own."""
    client_certificates: Literal["required", "optional", "off"] = "required"
    """Clients must (``required``), may (``optional``) or need not (``off``) present a
    certificate from the platform PKI."""
    write_identities: tuple[str, ...] = ()
    """Client certificate CNs allowed methods other than GET/HEAD/OPTIONS. Empty: any
    verified client may write."""
    max_body_size: str = "1m"
    """``client_max_body_size``; ``0`` for unlimited (image layers)."""


class NginxSettings(Frozen):
    virtual_hosts: tuple[VirtualHost, ...] = (
        VirtualHost(
            name="registry",
            port=5443,
            upstream_role=Role.REGISTRY,
            upstream_port=5000,
            client_certificates="required",
            write_identities=("registry-push",),
            max_body_size="0",
        ),
    )
    """Virtual hosts of the application load balancer. A virtual host whose upstream role
    has no host in a DC is left out of that DC's nginx. Default: the registry on 5443,
    every client with a platform certificate may pull, only ``registry-push`` may push."""


class RegistryS3Storage(Frozen):
    endpoint: str
    """S3 endpoint (``https://minio.dc1.example:9000``), trusted through the platform CA."""
    bucket: str
    """Bucket holding the registry's blobs."""
    region: str = "us-east-1"
    """Region (required by the S3 driver even for MinIO)."""
    access_key: str = "registry"
    """Access key id."""
    secret_key_secret: str = "registry-s3-secret-key"
    """Name of the secret (``plinth secrets``) holding the secret access key."""


class RegistrySettings(Frozen):
    port: int = Field(5000, ge=1, le=65535)
    """TLS port of each registry instance (clients use nginx's virtual host instead)."""
    filesystem_root: str = "/var/lib/docker-registry"
    """Storage directory when no S3 store is configured (each instance its own: nginx
    then sends everything to the first instance and keeps the others as backups)."""
    s3: RegistryS3Storage | None = None
    """Shared S3 storage (MinIO): every instance active. Redirects to pre-signed URLs are
    disabled, so clients never need to reach the object store."""


class AirflowSettings(Frozen):
    version: str = Field("3.3.2", pattern=r"^\d+\.\d+\.\d+$")
    """Apache Airflow release. The controller builds one wheelhouse per version (and
    extras) from ``package_sources.pypi_index``; hosts install from it offline."""
    extras: tuple[str, ...] = ("celery", "postgres")
    """pip extras of ``apache-airflow`` (providers): Celery executor, PostgreSQL."""
    constraints: tuple[str, ...] = ("celery<5.7",)
    """pip constraint lines bounding the wheelhouse's resolution. The default is what
    Airflow 3.3.2 with the ``celery`` extra needs: celery 5.7.0 removed
    ``celery.backends.database.retry``, which apache-airflow-providers-celery 3.26.0
    imports, so the Celery executor and workers cannot start (found on the controller
    against the resolved wheels)."""
    services: bool = False
    """Configure and run Airflow (configuration, certificates, database, systemd units,
    DAGs), not only install it. Off by default, because it needs an ``airflow`` virtual
    host in ``components.nginx`` (the small lab turns it on): off, an Airflow host gets
    the offline install alone. On: the ``identity`` role and
    database are created on the active site's PostgreSQL primary, and the units run in the
    active datacenter (installed, stopped, in the others)."""
    identity: str = Field("airflow", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """CN of the Airflow hosts' client certificate: the PostgreSQL login role (``cert``
    rule, CN = role) and the RabbitMQ user (SASL EXTERNAL, CN = user) in one name."""
    database: str = Field("airflow", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """Metadata database (owned by ``identity``); the Celery result backend lives in it
    too."""
    broker_vhost: RabbitmqName = "airflow"
    """RabbitMQ virtual host of the Celery broker."""
    api_port: int = Field(8443, ge=1, le=65535)
    """TLS port of each api-server (nginx and the workers' Task SDK dial it)."""
    api_workers: int = Field(2, ge=1, le=32)
    """Worker processes of each api-server."""
    worker_concurrency: int = Field(8, ge=1, le=256)
    """Task slots of each Celery worker."""
    task_heartbeat_timeout: int = Field(60, ge=15, le=3600)
    """Seconds without a heartbeat from a running task's supervisor before the scheduler
    fails it and schedules its retry (``[scheduler] task_instance_heartbeat_timeout``;
    Airflow's default is 300): how long a task of a worker host that died stays lost."""

    @field_validator("extras")
    @classmethod
    def _extra_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for extra in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", extra):
                raise ValueError(f"{extra!r} is not a pip extra name")
        return value


class ComponentSettings(Frozen):
    etcd: EtcdSettings = EtcdSettings()
    """etcd settings (one 3- or 5-member cluster per DC)."""
    patroni: PatroniSettings = PatroniSettings()
    """Patroni / PostgreSQL settings."""
    haproxy: HaproxySettings = HaproxySettings()
    """haproxy (NLB) settings."""
    keepalived: KeepalivedSettings = KeepalivedSettings()
    """keepalived (VRRP VIPs) settings."""
    redis: RedisSettings = RedisSettings()
    """Redis + Sentinel settings."""
    rabbitmq: RabbitmqSettings = RabbitmqSettings()
    """RabbitMQ settings."""
    squid: SquidSettings = SquidSettings()
    """squid (egress proxy) settings."""
    nginx: NginxSettings = NginxSettings()
    """nginx (application load balancer) settings."""
    registry: RegistrySettings = RegistrySettings()
    """Container registry (CNCF Distribution) settings."""
    airflow: AirflowSettings = AirflowSettings()
    """Apache Airflow settings."""


def _network_with_host_bits(value: object) -> object:
    """Name an entry like ``10.0.0.5/24`` (host bits set) instead of pydantic's "not a valid
    IPv4 network": the operator meant either the network or the one address."""
    if isinstance(value, str):
        try:
            network = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            return value  # pydantic names it with its own message
        if str(network.network_address) != value.split("/")[0]:
            address = value.split("/")[0]
            raise ValueError(
                f"{value!r} has host bits set: write {network} for the network, or "
                f"{address}/32 (or {address}) for the one address"
            )
    return value


DeclaredNetwork = Annotated[ipaddress.IPv4Network, BeforeValidator(_network_with_host_bits)]


def _yaml_off(value: object) -> object:
    """YAML 1.1 (PyYAML) reads a bare ``off`` as false: take it as the word written."""
    return "off" if value is False else value


class NetworkSettings(Frozen):
    """Who, besides the platform's own hosts, opens connections to them (``network``).

    The network flows (``plinth flows``, :mod:`plinth.topology.flows`) name these as the
    sources of the controller's and the clients' flows, and the host firewall derived from
    the flows admits them and nobody else. Addresses as the hosts see them (after any NAT
    or bastion); an address alone is a ``/32``.
    """

    controllers: tuple[DeclaredNetwork, ...] = ()
    """Where plinth runs (the controller, a CI runner, a bastion's address): SSH to every
    host (``ssh.port``), ICMP echo, operators' reads of Patroni's REST API. Empty: not
    declared; ``plinth flows`` shows those flows with no source, and a firewall built
    from them would lock the controller out, so declare it before one is installed."""
    clients: tuple[DeclaredNetwork, ...] = ()
    """Networks of the platform's clients, applications and operators: they reach the
    VIPs' published ports (haproxy's PostgreSQL ports, nginx's virtual hosts), the Redis
    nodes and Sentinels, RabbitMQ's AMQPS and management ports. Empty: no client outside
    the platform's hosts (the flows are shown with no source). ``0.0.0.0/0`` publishes
    those ports to every network that routes to the DC."""
    firewall: Annotated[Literal["off", "enforce"], BeforeValidator(_yaml_off)] = "off"
    """The host firewall (:mod:`plinth.topology.firewall`, ``plinth firewall``): an
    nftables table ``inet plinth`` on every host whose input chain drops everything
    but the network flows (``plinth flows``), SSH from ``controllers`` first. ``off``:
    no table (one installed before is removed). ``off`` is the default because a model
    written before its ``controllers`` and ``clients`` were declared would lock out
    the controller and the applications; ``enforce`` needs ``controllers``."""
    egress: Literal["open", "enforce"] = "open"
    """The firewall's outbound side. ``enforce``: a host opens connections only to the
    destinations of its egress flows (the platform's hosts and VIPs it is a source of,
    its squid, and outside the platform the package sources, NTP, DNS and the registry's
    object store, by port where the model names them by name); needs ``firewall:
    enforce``. ``open``: outbound is not filtered. A field of its own, not a third
    ``firewall`` mode, because it is rolled out after the inbound side: what a host must
    reach outside the platform (resolvers, mirrors, time) is the site's, and is proven
    on the site with inbound already enforced."""


class Environment(Frozen):
    """One environment: everything deployed from one description."""

    name: Name
    """Environment name; stacks are ``<name>-<dc>``."""
    kind: Literal["lab", "production", "staging"] = "production"
    """``lab`` environments keep their passphrase in local state; others need PLINTH_PASSPHRASE."""
    datacenters: tuple[Datacenter, ...] = Field(min_length=1)
    """The datacenters, in deploy order."""
    active_datacenter: str | None = None
    """The site that takes writes; the others stand by (a Patroni standby cluster
    replicating from the active site's PostgreSQL VIP; Redis data nodes bootstrapped as
    ``replica-priority 0`` replicas of the active site's master, their Sentinels stopped).
    Default: the first datacenter. Read when a cluster is created; changing it never
    demotes a running cluster (see the DC failover runbooks in
    docs/components/postgresql.md and docs/components/redis.md)."""
    release: str = DEFAULT_RELEASE
    """Debian release of every host (``bookworm``); its packages and daemon lines are in
    :mod:`plinth.releases`. One release per environment: a release that is only known,
    not yet proven on the lab, is refused here."""
    hosts: tuple[Host, ...] = Field(min_length=1)
    """Every managed host."""
    vips: tuple[Vip, ...] = ()
    """Floating addresses, one or more per DC."""
    ssh: SshSettings = SshSettings()
    """How the controller reaches the hosts."""
    network: NetworkSettings = NetworkSettings()
    """Who besides the platform's hosts connects to them: the controller, the clients."""
    package_sources: PackageSources = PackageSources()
    """Where hosts get packages from."""
    base: BaseSettings = BaseSettings()
    """Settings of the base host deploy."""
    components: ComponentSettings = ComponentSettings()
    """Per-component settings."""

    @field_validator("release")
    @classmethod
    def _supported_release(cls, codename: str) -> str:
        release_named(codename)  # raises UnsupportedRelease (a ValueError) with the reason
        return codename

    # ---- derived views (no state of their own) ----

    @property
    def debian(self) -> DebianRelease:
        """This environment's Debian release: packages, PostgreSQL line, hosts' Python."""
        return RELEASES[self.release]

    @cached_property
    def datacenters_by_name(self) -> dict[str, Datacenter]:
        return {dc.name: dc for dc in self.datacenters}

    def stack_names(self) -> list[str]:
        return [f"{self.name}-{dc.name}" for dc in self.datacenters]

    @property
    def active_site(self) -> str:
        """Name of the datacenter that takes writes (``active_datacenter`` or the first)."""
        return self.active_datacenter or self.datacenters[0].name

    def vip_serving(self, service: str, datacenter: str) -> Vip | None:
        """The first VIP of ``datacenter`` that carries ``service``."""
        return next((v for v in self.vips_in(datacenter) if service in v.services), None)

    def hosts_in(self, datacenter: str) -> list[Host]:
        return [h for h in self.hosts if h.datacenter == datacenter]

    def hosts_with(self, role: Role, datacenter: str | None = None) -> list[Host]:
        return [
            h
            for h in self.hosts
            if role in h.roles and (datacenter is None or h.datacenter == datacenter)
        ]

    def vips_in(self, datacenter: str) -> list[Vip]:
        return [v for v in self.vips if v.datacenter == datacenter]

    def fqdn(self, host: Host) -> str:
        return f"{host.name}.{self.datacenters_by_name[host.datacenter].domain}"

    def vip_fqdn(self, vip: Vip) -> str:
        return f"{vip.name}.{self.datacenters_by_name[vip.datacenter].domain}"

    def package_sources_for(self, datacenter: str) -> PackageSources:
        """A DC's own package sources if it has them, else the environment's."""
        return self.datacenters_by_name[datacenter].package_sources or self.package_sources

    def dns_domains(self) -> list[str]:
        return [dc.domain for dc in self.datacenters]

    def postgresql_login_roles(self) -> tuple[str, ...]:
        """Certificate login roles: ``patroni.login_roles``, plus Airflow's identity when
        its services are on."""
        roles = self.components.patroni.login_roles
        airflow = self.components.airflow
        if airflow.services and airflow.identity not in roles:
            roles = (*roles, airflow.identity)
        return roles

    def postgresql_databases(self) -> tuple[tuple[str, str], ...]:
        """(database, owner) pairs created on the primary: Airflow's when its services
        are on."""
        airflow = self.components.airflow
        return ((airflow.database, airflow.identity),) if airflow.services else ()


class ModelError(Exception):
    """An environment file is invalid. ``problems`` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  {self.path}: {p}" for p in problems)
        super().__init__(f"{self.path}: {len(problems)} problem(s)\n{lines}")


def _loc(parts: Iterable[object]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for err in error.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{_loc(err['loc'])}: {message}")
    return problems


def _rule_problems(env: Environment) -> Iterator[str]:
    """Cross-field rules. Each message starts with the field path it is about."""
    dc_index = {dc.name: i for i, dc in enumerate(env.datacenters)}

    def unknown_datacenter(where: str, name: str) -> str:
        return f"{where}.datacenter: unknown datacenter {name!r}; known: {', '.join(dc_index)}"

    for field, names in (
        ("datacenters", [dc.name for dc in env.datacenters]),
        ("hosts", [h.name for h in env.hosts]),
        # VIP names are per datacenter: every DC has its own "pg" VIP.
        ("vips", [f"{v.name}@{v.datacenter}" for v in env.vips]),
    ):
        for name, count in Counter(names).items():
            if count > 1:
                idx = [i for i, n in enumerate(names) if n == name]
                shown = name.split("@")[0]
                yield f"{field}[{idx[1]}].name: duplicate name {shown!r} (also {field}[{idx[0]}])"

    subnets = [(dc.name, dc.subnet) for dc in env.datacenters]
    for i, (name_a, net_a) in enumerate(subnets):
        for name_b, net_b in subnets[i + 1 :]:
            if net_a.overlaps(net_b):
                yield (
                    f"datacenters[{dc_index[name_b]}].subnet: {net_b} overlaps "
                    f"datacenter {name_a!r} ({net_a})"
                )

    for i, site in enumerate(env.datacenters):
        if site.inter_dc_gateway is not None and site.inter_dc_gateway not in site.subnet:
            yield (
                f"datacenters[{i}].inter_dc_gateway: {site.inter_dc_gateway} is outside "
                f"{site.name}'s subnet {site.subnet}"
            )

    host_addresses: dict[ipaddress.IPv4Address, int] = {}
    for i, host in enumerate(env.hosts):
        if host.address in host_addresses:
            other = host_addresses[host.address]
            yield (
                f"hosts[{i}].address: {host.address} is already used by "
                f"hosts[{other}] ({env.hosts[other].name})"
            )
        else:
            host_addresses[host.address] = i
        dc = env.datacenters_by_name.get(host.datacenter)
        if dc is None:
            yield unknown_datacenter(f"hosts[{i}]", host.datacenter)
            continue
        if host.address not in dc.subnet:
            yield f"hosts[{i}].address: {host.address} is outside {dc.name}'s subnet {dc.subnet}"
        elif host.address in (dc.subnet.network_address, dc.subnet.broadcast_address):
            yield f"hosts[{i}].address: {host.address} is the network or broadcast address"
        if not host.roles:
            yield f"hosts[{i}].roles: a host needs at least one role"

    router_ids: dict[tuple[str, int], int] = {}
    vip_addresses: dict[ipaddress.IPv4Address, int] = {}
    for i, vip in enumerate(env.vips):
        dc = env.datacenters_by_name.get(vip.datacenter)
        if dc is None:
            yield unknown_datacenter(f"vips[{i}]", vip.datacenter)
            continue
        if vip.address not in dc.subnet:
            yield f"vips[{i}].address: {vip.address} is outside {dc.name}'s subnet {dc.subnet}"
        if vip.address in host_addresses:
            owner = env.hosts[host_addresses[vip.address]].name
            yield f"vips[{i}].address: {vip.address} is the address of host {owner!r}"
        if vip.address in vip_addresses:
            yield f"vips[{i}].address: {vip.address} is also vips[{vip_addresses[vip.address]}]"
        vip_addresses.setdefault(vip.address, i)
        key = (vip.datacenter, vip.router_id)
        if key in router_ids:
            yield (
                f"vips[{i}].router_id: {vip.router_id} is already used by "
                f"vips[{router_ids[key]}] on {vip.datacenter}'s network"
            )
        router_ids.setdefault(key, i)
        holders = env.hosts_with(vip.holder_role, vip.datacenter)
        if not holders:
            yield (
                f"vips[{i}]: no host in {vip.datacenter} has the {vip.holder_role.value!r} "
                "role to hold this VIP"
            )

    for dc in env.datacenters:
        for role in QUORUM_ROLES:
            members = env.hosts_with(role, dc.name)
            if members and (len(members) < 3 or len(members) % 2 == 0):
                member_names = ", ".join(h.name for h in members)
                yield (
                    f"hosts[*].roles: the {role.value} cluster of datacenter {dc.name!r} has "
                    f"{len(members)} member(s) ({member_names}); a quorum cluster needs an odd "
                    "number >= 3 inside one datacenter (it never spans datacenters)"
                )
        if env.hosts_with(Role.SENTINEL, dc.name) and not env.hosts_with(Role.REDIS, dc.name):
            yield f"hosts[*].roles: sentinels in {dc.name!r} but no redis host to watch"
        sentinels = len(env.hosts_with(Role.SENTINEL, dc.name))
        if sentinels >= 3 and env.components.redis.quorum > sentinels:
            yield (
                f"components.redis.quorum: {env.components.redis.quorum} exceeds the "
                f"{sentinels} Sentinel(s) of datacenter {dc.name!r}: no failover could start"
            )

    vhosts = env.components.nginx.virtual_hosts
    vhost_keys: tuple[tuple[str, list[object]], ...] = (
        ("name", [v.name for v in vhosts]),
        ("port", [v.port for v in vhosts]),
    )
    for field, keys in vhost_keys:
        for value, count in Counter(keys).items():
            if count > 1:
                idx = [i for i, n in enumerate(keys) if n == value]
                yield (
                    f"components.nginx.virtual_hosts[{idx[1]}].{field}: {value!r} is also "
                    f"virtual_hosts[{idx[0]}]"
                )
    if env.active_datacenter is not None and env.active_datacenter not in dc_index:
        yield (
            f"active_datacenter: unknown datacenter {env.active_datacenter!r}; "
            f"known: {', '.join(dc_index)}"
        )
    elif (
        any(
            env.hosts_with(Role.POSTGRESQL, dc.name)
            for dc in env.datacenters
            if dc.name != env.active_site
        )
        and env.vip_serving("postgresql", env.active_site) is None
    ):
        # Standby clusters replicate from the active site through its PostgreSQL VIP
        # (haproxy routes it to whichever member is primary now).
        yield (
            f"vips: standby PostgreSQL clusters replicate from the active datacenter "
            f"{env.active_site!r}, which has no VIP with the 'postgresql' service"
        )

    yield from _airflow_problems(env)
    if env.debian.python_tag != "cp311":
        version = env.components.patroni.version
        lock = PatroniSettings.lock_path(version, env.debian.python_tag)
        if not lock.is_file():
            yield (
                f"components.patroni.version: no hash lock for Patroni {version} on Debian "
                f"{env.debian.number} ({env.debian.python_tag}): commit plinth/locks/{lock.name}"
                " (the command is in docs/components/postgresql.md)"
            )

    yield from _network_problems(env)

    if env.ssh.user != "root" and not re.fullmatch(r"[a-z_][a-z0-9_-]*", env.ssh.user):
        yield f"ssh.user: {env.ssh.user!r} is not a valid user name"


def _network_problems(env: Environment) -> Iterator[str]:
    """``network``: no entry twice, the controller not "anywhere", and declared before a
    firewall that admits SSH from it alone."""
    for field in ("controllers", "clients"):
        entries: list[ipaddress.IPv4Network] = list(getattr(env.network, field))
        for i, entry in enumerate(entries):
            if entry in entries[:i]:
                yield (
                    f"network.{field}[{i}]: {entry} is also network.{field}[{entries.index(entry)}]"
                )
    if env.network.firewall == "enforce" and not env.network.controllers:
        yield (
            "network.controllers: empty while network.firewall is enforce: the firewall "
            "admits SSH only from the controllers, so the deploy would lock itself out; "
            "declare the controller's addresses as the hosts see them, or set "
            "network.firewall: off"
        )
    if env.network.egress == "enforce" and env.network.firewall != "enforce":
        yield (
            "network.egress: enforce needs network.firewall: enforce (the outbound rules "
            "live in the firewall's table)"
        )
    for i, entry in enumerate(env.network.controllers):
        if entry.prefixlen == 0:
            yield (
                f"network.controllers[{i}]: {entry} would let every address in as the "
                "controller (SSH to every host); name the controller's addresses"
            )


def _airflow_problems(env: Environment) -> Iterator[str]:
    """What Airflow's services need from the other components (only when they are on)."""
    airflow = env.components.airflow
    if not airflow.services:
        return
    where = "components.airflow"
    rabbitmq = env.components.rabbitmq
    if airflow.broker_vhost not in [v.name for v in rabbitmq.vhosts]:
        yield (
            f"{where}.broker_vhost: {airflow.broker_vhost!r} is not in components.rabbitmq.vhosts"
        )
    user = next((u for u in rabbitmq.users if u.name == airflow.identity), None)
    if user is None or airflow.broker_vhost not in [p.vhost for p in user.permissions]:
        yield (
            f"{where}.identity: RabbitMQ user {airflow.identity!r} with a permission on vhost "
            f"{airflow.broker_vhost!r} is missing from components.rabbitmq.users"
        )
    if airflow.identity in PATRONI_ROLES:
        yield f"{where}.identity: {airflow.identity!r} is reserved for Patroni"
    if env.hosts_with(Role.AIRFLOW_API):
        # The UI and API are reached through nginx (TLS to the client, TLS again to the
        # api-servers); the virtual host is written out in the environment file.
        vhost = next(
            (v for v in env.components.nginx.virtual_hosts if v.upstream_role == Role.AIRFLOW_API),
            None,
        )
        if vhost is None:
            yield (
                f"{where}.services: no components.nginx.virtual_hosts entry has upstream_role "
                f"airflow-api; add {{name: airflow, port: 8444, upstream_role: airflow-api, "
                f"upstream_port: {airflow.api_port}}} (and list 'airflow' in the edge VIP's "
                "services)"
            )
        elif vhost.upstream_port != airflow.api_port:
            yield (
                f"components.nginx.virtual_hosts ({vhost.name}).upstream_port: "
                f"{vhost.upstream_port} is not components.airflow.api_port ({airflow.api_port})"
            )
    for dc in env.datacenters:
        if not any(env.hosts_with(role, dc.name) for role in AIRFLOW_ROLES):
            continue
        if env.vip_serving("postgresql", dc.name) is None:
            yield (
                f"{where}.services: datacenter {dc.name!r} runs Airflow but has no VIP with "
                "the 'postgresql' service (the metadata database)"
            )
        if not env.hosts_with(Role.RABBITMQ, dc.name):
            yield f"{where}.services: datacenter {dc.name!r} runs Airflow but has no RabbitMQ"
        if not env.hosts_with(Role.AIRFLOW_API, dc.name):
            yield (
                f"{where}.services: datacenter {dc.name!r} runs Airflow but has no airflow-api "
                "host (the workers' Task SDK talks to it)"
            )


def parse_environment(data: object, source: Path | str = "<memory>") -> Environment:
    """Validate already-loaded data; raise :class:`ModelError` with every problem."""
    if not isinstance(data, dict):
        raise ModelError(source, ["(top level): expected a mapping of settings"])
    try:
        env = Environment.model_validate(data)
    except ValidationError as error:
        raise ModelError(source, _pydantic_problems(error)) from None
    problems = list(_rule_problems(env))
    if problems:
        raise ModelError(source, problems)
    return env


def load_environment(path: Path | str) -> Environment:
    """Read and validate ``path``; no host is contacted."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(path, ["file not found"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(top level)"
        raise ModelError(path, [f"{where}: not valid YAML ({error})"]) from None
    return parse_environment(data, path)


def hosts_by_datacenter(env: Environment) -> dict[str, list[Host]]:
    grouped: dict[str, list[Host]] = defaultdict(list)
    for host in env.hosts:
        grouped[host.datacenter].append(host)
    return dict(grouped)
