"""The Debian releases plinth deploys onto, and what each one gives the platform: one table.

Everything that differs between releases lives here and nowhere else: the apt suite, the
Debian packages each role installs, PostgreSQL's major version (its binaries' path), the
hosts' Python (the ABI of the wheelhouses' compiled wheels), the upstream line of every
daemon Debian ships and what the key-value store is on the host (Redis 7.0 on Debian 12,
Valkey 8.1 on Debian 13: its packages, units, paths and user). The model names its
release (``Environment.release``); operations read this table through it; ``plinth
versions`` compares what hosts run with it.

A release is *supported* once every lab suite is green on it. One that is only known (its
packages read off Debian's indexes, its lab image buildable) is refused by ``plinth
validate`` with the reason, so an environment cannot be deployed onto a release nobody
has proven.

This module imports nothing of plinth's: the model validates against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class KeyValueStore:
    """What plinth's ``redis`` component is on a host of a release: Redis on Debian 12,
    Valkey (BSD-3, Redis 7.2's protocol and configuration) on Debian 13 (issue 22). The
    model, roles, secrets and docs keep the name ``redis``; these are the host's names."""

    product: str
    """``Redis``, ``Valkey`` (messages, comments in the files plinth writes)."""
    server_package: str
    """Debian package of the data node (``redis-server``)."""
    sentinel_package: str
    tools_package: str
    """Debian package of the client (``redis-tools``)."""
    server_unit: str
    """systemd unit of the data node (``redis-server.service``)."""
    sentinel_unit: str
    server_binary: str
    sentinel_binary: str
    cli: str
    """The client every fact and gate runs on the host (``redis-cli``)."""
    config_dir: str
    server_config_name: str
    """The data node's file in ``config_dir`` (``redis.conf``)."""
    sentinel_config_name: str
    user: str
    """Service user (owns the configuration, ``users.acl`` and the TLS keys)."""
    group: str
    data_dir: str
    log_dir: str
    run_dir: str
    server_pidfile: str
    sentinel_pidfile: str
    version_package: str
    """The package whose version a running data node or Sentinel is compared with (a
    difference is a pending restart)."""

    @property
    def server_packages(self) -> tuple[str, ...]:
        """What a ``redis`` host installs."""
        return (self.server_package, self.tools_package)

    @property
    def sentinel_packages(self) -> tuple[str, ...]:
        """What a ``sentinel`` host installs."""
        return (self.sentinel_package, self.tools_package)

    @property
    def server_config(self) -> str:
        return f"{self.config_dir}/{self.server_config_name}"

    @property
    def sentinel_config(self) -> str:
        return f"{self.config_dir}/{self.sentinel_config_name}"

    @property
    def acl_file(self) -> str:
        return f"{self.config_dir}/users.acl"


REDIS_7 = KeyValueStore(
    product="Redis",
    server_package="redis-server",
    sentinel_package="redis-sentinel",
    tools_package="redis-tools",
    server_unit="redis-server.service",
    sentinel_unit="redis-sentinel.service",
    server_binary="/usr/bin/redis-server",
    sentinel_binary="/usr/bin/redis-sentinel",
    cli="redis-cli",
    config_dir="/etc/redis",
    server_config_name="redis.conf",
    sentinel_config_name="sentinel.conf",
    user="redis",
    group="redis",
    data_dir="/var/lib/redis",
    log_dir="/var/log/redis",
    run_dir="/run/redis",
    server_pidfile="/run/redis/redis-server.pid",
    sentinel_pidfile="/run/sentinel/redis-sentinel.pid",
    version_package="redis-server",
)
"""Debian 12's Redis 7.0 (BSD-3 up to 7.2; later Redis is AGPLv3/RSALv2/SSPLv1)."""

VALKEY_8 = KeyValueStore(
    product="Valkey",
    server_package="valkey-server",
    sentinel_package="valkey-sentinel",
    tools_package="valkey-tools",
    server_unit="valkey-server.service",
    sentinel_unit="valkey-sentinel.service",
    server_binary="/usr/bin/valkey-server",
    sentinel_binary="/usr/bin/valkey-sentinel",
    cli="valkey-cli",
    config_dir="/etc/valkey",
    server_config_name="valkey.conf",
    sentinel_config_name="sentinel.conf",
    user="valkey",
    group="valkey",
    data_dir="/var/lib/valkey",
    log_dir="/var/log/valkey",
    run_dir="/run/valkey",
    server_pidfile="/run/valkey/valkey-server.pid",
    sentinel_pidfile="/run/sentinel/valkey-sentinel.pid",
    version_package="valkey-server",
)
"""Debian 13's Valkey 8.1 (BSD-3; no redis-* names and no compatibility package)."""


@dataclass(frozen=True)
class DebianRelease:
    codename: str
    """apt suite and debootstrap name: ``bookworm``."""
    number: str
    """``12``"""
    postgresql_major: int
    """Debian's one PostgreSQL line on this release."""
    python: tuple[int, int]
    """The hosts' python3 minor version: wheelhouses' compiled wheels must match it."""
    python_full: str
    """The hosts' exact python3 (dependency markers are decided for it)."""
    role_packages: Mapping[str, tuple[str, ...]]
    """Debian packages a host of each role (``Role`` value) installs, not started."""
    daemon_lines: Mapping[str, str]
    """Package -> the upstream version line it must carry (``3.4`` admits 3.4.23, not
    3.5.0): a host on another line runs a daemon this release was not proven with."""
    key_value_store: KeyValueStore
    """The ``redis`` component's packages, units, paths and user on this release."""
    unsupported_because: str = ""
    """Empty when supported; otherwise why ``plinth validate`` refuses it."""
    known_gaps: tuple[str, ...] = field(default=())
    """Upstream bugs this release's packages still carry, and how plinth works around them."""

    @property
    def supported(self) -> bool:
        return not self.unsupported_because

    @property
    def postgresql_bin(self) -> str:
        return f"/usr/lib/postgresql/{self.postgresql_major}/bin"

    @property
    def python_tag(self) -> str:
        """``cp311``: the wheel tag of the hosts' interpreter."""
        return f"cp{self.python[0]}{self.python[1]}"


def _packages(postgresql_major: int, store: KeyValueStore) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(
        {
            "etcd": ("etcd-server", "etcd-client"),
            # Patroni comes from plinth's wheelhouse (psycopg 3 with its own libpq
            # inside), not from Debian; python3-venv builds its virtualenv.
            "postgresql": (
                f"postgresql-{postgresql_major}",
                f"postgresql-client-{postgresql_major}",
                "python3-venv",
            ),
            "haproxy": ("haproxy",),
            "keepalived": ("keepalived",),
            "redis": store.server_packages,
            "sentinel": store.sentinel_packages,
            # The edge: installed with the rest, not started, so docker-registry's
            # service user exists before host TLS writes the key it owns.
            "squid": ("squid",),
            "nginx": ("nginx",),
            "registry": ("docker-registry",),
            "rabbitmq": ("rabbitmq-server",),
        }
    )


BOOKWORM = DebianRelease(
    codename="bookworm",
    number="12",
    postgresql_major=15,
    python=(3, 11),
    python_full="3.11.2",
    role_packages=_packages(15, REDIS_7),
    daemon_lines=MappingProxyType(
        {
            "postgresql-15": "15",
            "etcd-server": "3.4",
            "haproxy": "2.6",
            "keepalived": "2.2",
            REDIS_7.server_package: "7.0",
            REDIS_7.sentinel_package: "7.0",
            "rabbitmq-server": "3.10",
            "nginx": "1.22",
            "squid": "5.7",
            "docker-registry": "2.8",
        }
    ),
    key_value_store=REDIS_7,
    known_gaps=(
        "Debian 12's regular security support ended in June 2026 (LTS only).",
        "Patroni 3.0.2 forks under partition: plinth installs Patroni from its hash-locked "
        "wheelhouse instead (docs/components/postgresql.md).",
        "RabbitMQ 3.10 and etcd 3.4 are past upstream support (issue 22).",
    ),
)

TRIXIE = DebianRelease(
    codename="trixie",
    number="13",
    postgresql_major=17,
    python=(3, 13),
    python_full="3.13.5",
    role_packages=_packages(17, VALKEY_8),
    daemon_lines=MappingProxyType(
        {
            "postgresql-17": "17",
            "etcd-server": "3.5",
            "haproxy": "3.0",
            "keepalived": "2.3",
            VALKEY_8.server_package: "8.1",
            VALKEY_8.sentinel_package: "8.1",
            "rabbitmq-server": "4.0",
            "nginx": "1.26",
            "squid": "6",
            "docker-registry": "2.8",
        }
    ),
    key_value_store=VALKEY_8,
    unsupported_because=(
        "not yet proven: its packages are known, the lab image builds and the wheelhouses "
        "are built for its Python 3.13, but the lab suites have not run green on it "
        "(issue 22; docs/releases.md)"
    ),
    known_gaps=(
        "etcd 3.5.16 lacks the revoked-lease keepalive fix (etcd#20590, 3.5.23).",
        "RabbitMQ 4.0.5 lacks Ra's log-divergence fix (rabbitmq-server#13326, 4.0.7).",
        "pgBackRest 2.55.1: keep archive-get synchronous (pgbackrest#2423).",
        "docker-registry 2.8.3: CVE-2026-33540 / CVE-2026-35172 apply only to the "
        "pull-through cache and the redis cache, both kept off.",
    ),
)

RELEASES: Mapping[str, DebianRelease] = MappingProxyType(
    {r.codename: r for r in (BOOKWORM, TRIXIE)}
)
DEFAULT_RELEASE = BOOKWORM.codename


class UnsupportedRelease(ValueError):
    """The model names a release plinth does not deploy onto."""


def release_named(codename: str) -> DebianRelease:
    """The release ``codename``; a clear refusal for one unknown or not yet supported."""
    found = RELEASES.get(codename)
    if found is None:
        known = ", ".join(sorted(RELEASES))
        raise UnsupportedRelease(f"{codename!r} is not a Debian release plinth knows ({known})")
    if not found.supported:
        raise UnsupportedRelease(
            f"Debian {found.number} ({codename}) is not supported yet: {found.unsupported_because}"
        )
    return found


def upstream_version(debian_version: str) -> str:
    """The upstream part of a Debian version: ``5:7.0.15-1~deb12u1`` -> ``7.0.15``,
    ``2.2.7-1+b2`` -> ``2.2.7``, ``3.4.23-4+b6`` -> ``3.4.23``."""
    without_epoch = debian_version.split(":", 1)[-1]
    upstream, _, _ = without_epoch.rpartition("-")
    return upstream or without_epoch


def on_line(upstream: str, line: str) -> bool:
    """``upstream`` (``3.4.23``) belongs to ``line`` (``3.4``), compared part by part so
    that ``3.40.1`` is not on ``3.4``; Debian's ``+dfsg``/``~`` suffixes are ignored."""
    parts = upstream.replace("~", "+").split("+", 1)[0].split(".")
    wanted = line.split(".")
    return parts[: len(wanted)] == wanted
