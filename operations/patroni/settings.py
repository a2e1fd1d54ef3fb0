"""What one Patroni member is: the model's slice (:class:`PatroniInput`), the dynamic
settings it wants, and ``config.yml`` rendered from them (pure; no host is read here).

The paths and timings on the hosts are named here once, for every module of the package.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

from facts.patroni import patroni_cluster_command
from plinth.certificates import ALL_CRLS, CertificateSpec
from plinth.context import HostContext, read_secrets
from plinth.model import PatroniSettings, Role
from plinth.render import render_template
from plinth.topology.patroni import RESTAPI_USER, standby_slot

CONFIG_DIR = "/etc/patroni"
CONFIG = f"{CONFIG_DIR}/config.yml"
POSTGRESQL_HOME = "/var/lib/postgresql"
"""Data lives under ``<home>/<major>/<scope>`` and binaries in ``/usr/lib/postgresql/<major>``:
the major is the release's (:mod:`plinth.releases`), so a later major upgrade gets a
directory of its own beside the old one."""
READY_WAIT_SECONDS = 240
PREFIX = "/opt/patroni"
UNIT = "/etc/systemd/system/patroni.service"
PATRONICTL = "/usr/local/bin/patronictl"
STOP_TIMEOUT_SECONDS = 600
"""systemd's stop timeout: Patroni's stop waits for PostgreSQL's shutdown checkpoint; a
SIGKILLed Patroni would leave an orphan postmaster behind."""
SECRET_NAMES = {
    "superuser": "postgresql-superuser-password",
    "replication": "postgresql-replication-password",
    "rewind": "postgresql-rewind-password",
    "restapi": "postgresql-restapi-password",
}
"""Key in :func:`read_passwords`' answer -> name of the secret (``plinth up`` generates
each: ``REQUIRED_SECRETS`` in plinth/provision.py). ``restapi``: the REST API password
that state-changing calls need (``restapi.authentication``, docs/security.md)."""


@dataclass(frozen=True)
class StandbySource:
    """Where a standby cluster streams from: the active site's PostgreSQL VIP, whose
    haproxy routes to that cluster's current primary (so a failover there is followed)."""

    host: str
    port: int
    slot: str
    """Physical slot the active site keeps for this standby (WAL is retained for it)."""


@dataclass(frozen=True)
class PatroniInput:
    """The slice of the model one Patroni member reads (no secrets: see :func:`render`)."""

    name: str
    address: str
    scope: str
    settings: PatroniSettings
    etcd_hosts: tuple[str, ...]
    """``address:port`` of the DC's etcd members."""
    networks: tuple[str, ...]
    """Subnets allowed to reach PostgreSQL with Patroni's roles (every DC's)."""
    members: tuple[str, ...]
    """Names of every member of the cluster."""
    member_addresses: tuple[str, ...]
    """Addresses of every member of the cluster: the only sources of a state-changing REST
    API call (``restapi.allowlist``; docs/security.md)."""
    tls: CertificateSpec
    replication: CertificateSpec
    rewind: CertificateSpec
    standby: StandbySource | None = None
    """Set on a standby site: the cluster replicates from the active site."""
    standby_slots: tuple[str, ...] = ()
    """On the active site: slots kept for the standby sites."""
    login_roles: tuple[str, ...] = ()
    """Certificate login roles (:meth:`Environment.postgresql_login_roles`)."""
    databases: tuple[tuple[str, str], ...] = ()
    """(database, owner) pairs (:meth:`Environment.postgresql_databases`)."""
    postgresql_major: int = 15
    """The environment's release's PostgreSQL line (:attr:`DebianRelease.postgresql_major`)."""

    @property
    def synchronous(self) -> bool:
        """Synchronous replication applies inside the active site only: a standby
        cluster's members cascade from its standby leader asynchronously."""
        return self.settings.synchronous_mode and self.standby is None

    @property
    def api(self) -> str:
        return f"https://{self.address}:{self.settings.rest_api_port}"

    @property
    def data_root(self) -> str:
        return f"{POSTGRESQL_HOME}/{self.postgresql_major}"

    @property
    def data_dir(self) -> str:
        return f"{self.data_root}/{self.scope}"

    @property
    def bin_dir(self) -> str:
        return f"/usr/lib/postgresql/{self.postgresql_major}/bin"

    def cluster_command(self) -> str:
        return patroni_cluster_command(
            self.tls.ca_path, self.tls.chain_path, self.tls.key_path, self.api
        )

    def curl(self, path: str, *args: str) -> str:
        """``curl`` reading ``path`` of this member's REST API (no credentials: a read needs
        only the certificate; a change goes through :func:`plinth.topology.patroni.unsafe_call`)."""
        q = shlex.quote
        tls = self.tls
        return (
            f"curl -s -m 10 --cacert {q(tls.ca_path)} --cert {q(tls.chain_path)} "
            f"--key {q(tls.key_path)} {' '.join(args)} {q(self.api + path)}"
        )


def dynamic_settings(spec: PatroniInput) -> dict[str, Any]:
    """Patroni's dynamic configuration as the model wants it (the keys plinth manages).

    ``standby_cluster`` is deliberately not among them: it is seeded at bootstrap only
    (:func:`bootstrap_dcs`), so no run ever demotes a site an operator promoted.
    """
    settings = spec.settings
    wanted: dict[str, Any] = {
        "ttl": settings.ttl,
        "loop_wait": settings.loop_wait,
        "retry_timeout": settings.retry_timeout,
        "maximum_lag_on_failover": settings.maximum_lag_on_failover,
        "synchronous_mode": spec.synchronous,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": dict(settings.parameters),
        },
    }
    if spec.standby_slots:
        wanted["slots"] = {slot: {"type": "physical"} for slot in spec.standby_slots}
    return wanted


def bootstrap_dcs(spec: PatroniInput) -> dict[str, Any]:
    """The dynamic configuration a new cluster starts with: a standby site's also
    names its source (Patroni then clones and follows it instead of running initdb)."""
    dcs = dynamic_settings(spec)
    if spec.standby is not None:
        dcs["standby_cluster"] = {
            "host": spec.standby.host,
            "port": spec.standby.port,
            "primary_slot_name": spec.standby.slot,
            "create_replica_methods": ["basebackup"],
        }
    return dcs


def config_difference(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body that turns ``current`` into ``wanted`` for the keys ``wanted`` has.

    Keys only the cluster has are left alone; values compare as strings (PostgreSQL
    parameters come back as they were sent, numbers and strings alike).
    """
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, dict):
            sub = config_difference(have if isinstance(have, dict) else {}, value)
            if sub:
                patch[key] = sub
        elif have is None or str(have).lower() != str(value).lower():
            patch[key] = value
    return patch


def flatten(patch: dict[str, Any], prefix: str = "") -> list[str]:
    """``a.b=c`` lines of a patch, for reasons and logs (dynamic settings hold no secrets)."""
    out = []
    for key, value in sorted(patch.items()):
        if isinstance(value, dict):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def patroni_input(
    context: HostContext,
    tls: CertificateSpec,
    replication: CertificateSpec,
    rewind: CertificateSpec,
) -> PatroniInput:
    env = context.environment
    dc = context.datacenter.name
    settings = env.components.patroni
    etcd_port = env.components.etcd.client_port
    active = env.active_site
    standby: StandbySource | None = None
    if dc != active:
        vip = env.vip_serving("postgresql", active)
        if vip is None:  # the model's rules refuse this environment before any deploy
            raise ValueError(f"active datacenter {active!r} has no PostgreSQL VIP")
        standby = StandbySource(
            str(vip.address), env.components.haproxy.primary_port, standby_slot(dc)
        )
    standby_slots = (
        tuple(
            standby_slot(d.name)
            for d in env.datacenters
            if d.name != active and env.hosts_with(Role.POSTGRESQL, d.name)
        )
        if dc == active
        else ()
    )
    return PatroniInput(
        name=context.host.name,
        address=str(context.host.address),
        scope=f"{settings.scope_prefix}-{dc}",
        settings=settings,
        etcd_hosts=tuple(f"{h.address}:{etcd_port}" for h in env.hosts_with(Role.ETCD, dc)),
        networks=tuple(str(d.subnet) for d in env.datacenters),
        members=tuple(h.name for h in env.hosts_with(Role.POSTGRESQL, dc)),
        member_addresses=tuple(str(h.address) for h in env.hosts_with(Role.POSTGRESQL, dc)),
        tls=tls,
        replication=replication,
        rewind=rewind,
        standby=standby,
        standby_slots=standby_slots,
        login_roles=env.postgresql_login_roles(),
        databases=env.postgresql_databases(),
        postgresql_major=env.debian.postgresql_major,
    )


def render(spec: PatroniInput, passwords: dict[str, str]) -> str:
    """patroni.yml for ``spec``; ``passwords`` maps superuser/replication/rewind/restapi
    (the keys of :data:`SECRET_NAMES`) to values."""
    return render_template(
        "patroni/etc/patroni/config.yml.j2",
        scope=spec.scope,
        member=spec.name,
        address=spec.address,
        settings=spec.settings,
        tls=spec.tls,
        crl_file=ALL_CRLS,
        replication=spec.replication,
        rewind=spec.rewind,
        etcd_hosts=list(spec.etcd_hosts),
        dynamic=bootstrap_dcs(spec),
        data_dir=spec.data_dir,
        bin_dir=spec.bin_dir,
        networks=spec.networks,
        passwords=passwords,
        restapi_user=RESTAPI_USER,
        allowlist=[str(ip_network(a)) for a in spec.member_addresses],
    )


def render_curlrc(passwords: dict[str, str]) -> str:
    """The content of :data:`~plinth.topology.patroni.RESTAPI_CURLRC`: curl's ``user``
    option with the REST API password, for plinth's ``curl -K`` (a quoted value: ``\\``
    and ``"`` escaped, as curl's config syntax reads them)."""
    password = passwords["restapi"]
    if any(c in password for c in "\r\n"):
        raise ValueError("the REST API password must be one line")
    quoted = (f"{RESTAPI_USER}:{password}").replace("\\", "\\\\").replace('"', '\\"')
    return render_template("patroni/etc/patroni/restapi.curlrc.j2", user=quoted)


def read_passwords(context: HostContext) -> dict[str, str]:
    """The Patroni passwords (:data:`SECRET_NAMES`) from the environment's encrypted secrets."""
    return read_secrets(context, SECRET_NAMES)
