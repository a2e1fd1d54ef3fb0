"""Patroni + PostgreSQL 15: the DC's HA database cell (and the cell's packages).

The cell's packages are installed first, not started (before host TLS, so the service
users that own the keys exist). Patroni is configured after etcd, its DCS.

What plinth writes and what it leaves to Patroni:

* ``/etc/patroni/config.yml`` (local configuration: TLS, etcd, authentication, pg_hba)
  is ours; a change is applied with a reload (SIGHUP), which never restarts PostgreSQL.
* ``postgresql.conf`` and ``pg_hba.conf`` are Patroni's, written from the above.
* dynamic settings (timings, synchronous mode, PostgreSQL parameters) live in etcd:
  ``bootstrap.dcs`` seeds them once; afterwards :func:`dynamic_config` compares them
  with the model through ``GET /config`` and sends only the difference with
  ``PATCH /config`` — the cluster's own changes to other keys are left alone.
* a parameter that needs a restart is rolled by :func:`pending_restarts`: replicas one at
  a time, one switchover, the old primary last, each step behind a live gate.
* Patroni itself is not Debian's (bookworm's 3.0.2 can fork the cluster after a
  partition): ``components.patroni.version`` comes from a hash-checked wheelhouse
  (:func:`plinth.wheelhouse.patroni_wheelhouse`) installed offline into
  ``/opt/patroni/venv-<tag>``, ``/opt/patroni/current`` → the venv in use, run by plinth's
  own ``/etc/systemd/system/patroni.service``; ``/usr/local/bin/patronictl`` is the venv's.
  Installing never restarts anything: members running another release are rolled by
  :func:`release_rolled` (decided by the pure :func:`upgrade_steps`), each stopped through
  Patroni so PostgreSQL shuts down cleanly, never adopted by the new Patroni.

Secrets (the passwords of ``postgres``, ``replicator`` and ``rewind_user``) are read on the
controller from the encrypted store and reach the host only inside the uploaded file,
compared by checksum: never in an operation's arguments, a log line or a plan.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any, Literal

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.api.exceptions import NoHostError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

from facts.patroni import (
    PatroniCluster,
    PatroniClusterState,
    PatroniDynamicConfig,
    PostgresDatabases,
    PostgresRoles,
    parse_patroni_cluster,
    patroni_cluster_command,
)
from operations.checked import checked_file
from operations.wheelhouse import VenvInstall, venv_from_wheelhouse
from plinth.certificates import CertificateSpec
from plinth.context import HostContext, read_secrets
from plinth.model import PatroniSettings, Role
from plinth.reasons import explain_change
from plinth.render import render_template
from plinth.rolling import connector_arguments, note, refuse, run, wait_for

POLICY_RC = "/usr/sbin/policy-rc.d"

ROLE_PACKAGES: dict[Role, tuple[str, ...]] = {
    Role.ETCD: ("etcd-server", "etcd-client"),
    # Patroni comes from plinth's wheelhouse (psycopg 3 with its own libpq inside), not
    # from Debian; python3-venv builds its virtualenv.
    Role.POSTGRESQL: ("postgresql-15", "postgresql-client-15", "python3-venv"),
    Role.HAPROXY: ("haproxy",),
    Role.KEEPALIVED: ("keepalived",),
    Role.REDIS: ("redis-server", "redis-tools"),
    Role.SENTINEL: ("redis-sentinel", "redis-tools"),
    # The edge: installed here too, not started, so docker-registry's service user
    # exists before host TLS writes the key it owns.
    Role.SQUID: ("squid",),
    Role.NGINX: ("nginx",),
    Role.REGISTRY: ("docker-registry",),
    Role.RABBITMQ: ("rabbitmq-server",),
}


def cell_packages(roles: Sequence[Role]) -> list[str]:
    """Packages of the PostgreSQL cell a host with ``roles`` needs."""
    wanted = [p for role in ROLE_PACKAGES if role in roles for p in ROLE_PACKAGES[role]]
    return list(dict.fromkeys(wanted))


@operation()
def packages_not_started(packages: Sequence[str]) -> Generator[StringCommand, None, None]:
    """Install ``packages`` without letting their maintainer scripts start the daemons.

    A freshly installed etcd would start as a one-node cluster on localhost, plaintext;
    PostgreSQL would create and start a ``main`` cluster Patroni does not own. A
    temporary ``policy-rc.d`` (exit 101) denies every start during this one apt run; the
    deploy writes each daemon's configuration and then starts it. An operator's own
    policy-rc.d is left as it is.
    """
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p not in installed]
    if not missing:
        host.noop("PostgreSQL cell packages installed")
        return
    pkgs = " ".join(shlex.quote(p) for p in missing)
    yield StringCommand(
        f"if [ ! -e {POLICY_RC} ]; then printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC} && "
        f"chmod 755 {POLICY_RC} && trap 'rm -f {POLICY_RC}' EXIT; fi; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
        f"{pkgs}"
    )


@deploy("PostgreSQL cell packages")
def cell_packages_installed(roles: Sequence[Role]) -> None:
    """etcd, PostgreSQL/Patroni, haproxy and keepalived packages by role, nothing started."""
    packages = cell_packages(roles)
    if not packages:
        return
    if Role.POSTGRESQL in roles:
        files.put(
            name="No default PostgreSQL cluster (Patroni creates its own)",
            src=StringIO("# managed by plinth\ncreate_main_cluster = false\n"),
            dest="/etc/postgresql-common/createcluster.conf",
            mode="644",
            create_remote_dir=True,
        )
    packages_not_started(name="PostgreSQL cell packages, not started", packages=packages)


CONFIG_DIR = "/etc/patroni"
CONFIG = f"{CONFIG_DIR}/config.yml"
DATA_ROOT = "/var/lib/postgresql/15"
PG_BIN = "/usr/lib/postgresql/15/bin"
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
}


@dataclass(frozen=True)
class StandbySource:
    """Where a standby cluster streams from: the active site's PostgreSQL VIP, whose
    haproxy routes to that cluster's current primary (so a failover there is followed)."""

    host: str
    port: int
    slot: str
    """Physical slot the active site keeps for this standby (WAL is retained for it)."""


def standby_slot(datacenter: str) -> str:
    """Replication slot name the active site keeps for ``datacenter``'s standby cluster."""
    return "standby_" + re.sub(r"[^a-z0-9_]", "_", datacenter.lower())


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

    @property
    def synchronous(self) -> bool:
        """Synchronous replication applies inside the active site only: a standby
        cluster's members cascade from its standby leader asynchronously."""
        return self.settings.synchronous_mode and self.standby is None

    @property
    def api(self) -> str:
        return f"https://{self.address}:{self.settings.rest_api_port}"

    @property
    def data_dir(self) -> str:
        return f"{DATA_ROOT}/{self.scope}"

    def cluster_command(self) -> str:
        return patroni_cluster_command(
            self.tls.ca_path, self.tls.chain_path, self.tls.key_path, self.api
        )

    def curl(self, path: str, *args: str) -> str:
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
        tls=tls,
        replication=replication,
        rewind=rewind,
        standby=standby,
        standby_slots=standby_slots,
        login_roles=env.postgresql_login_roles(),
        databases=env.postgresql_databases(),
    )


def render(spec: PatroniInput, passwords: dict[str, str]) -> str:
    """patroni.yml for ``spec``; ``passwords`` maps superuser/replication/rewind to values."""
    return render_template(
        "patroni/etc/patroni/config.yml.j2",
        scope=spec.scope,
        member=spec.name,
        address=spec.address,
        settings=spec.settings,
        tls=spec.tls,
        replication=spec.replication,
        rewind=spec.rewind,
        etcd_hosts=list(spec.etcd_hosts),
        dynamic=bootstrap_dcs(spec),
        data_dir=spec.data_dir,
        networks=spec.networks,
        passwords=passwords,
    )


def read_passwords(context: HostContext) -> dict[str, str]:
    """The three Patroni passwords from the environment's encrypted secrets."""
    return read_secrets(context, SECRET_NAMES)


def cluster_fact(spec: PatroniInput) -> PatroniClusterState | None:
    """The cluster as this member's REST API reports it now (mutual TLS)."""
    state: PatroniClusterState | None = host.get_fact(
        PatroniCluster,
        ca=spec.tls.ca_path,
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        api=spec.api,
    )
    return state


def pending_config_patch(spec: PatroniInput) -> dict[str, Any]:
    """What ``PATCH /config`` must send for the live dynamic config to match the model."""
    current = host.get_fact(
        PatroniDynamicConfig,
        ca=spec.tls.ca_path,
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        api=spec.api,
    )
    return config_difference(current or {}, dynamic_settings(spec))


@dataclass(frozen=True)
class PatroniInstall(VenvInstall):
    """Patroni's wheelhouse on a host: ``/opt/patroni/venv-<tag>``, ``current`` → in use."""

    prefix: str = PREFIX

    @property
    def patroni(self) -> str:
        return f"{self.current}/bin/patroni"

    @property
    def patronictl(self) -> str:
        return f"{self.current}/bin/patronictl"


def render_unit(install: PatroniInstall, version: str) -> str:
    """plinth's ``patroni.service`` (it shadows Debian's unit of the same name)."""
    return render_template(
        "patroni/etc/systemd/system/patroni.service.j2",
        version=version,
        venv_current=install.current,
        config=CONFIG,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )


def config_check(install: PatroniInstall) -> str:
    """``checked_file`` check of config.yml: Patroni's own validator, from the venv. The
    listen ports are ignored (the running member holds them)."""
    return f"{install.patroni} --validate-config --ignore-listen-port {{path}}"


@deploy("Patroni installed offline")
def patroni_installed(install: PatroniInstall, version: str) -> None:
    """The venv, ``current``, the unit and ``patronictl`` on ``PATH``; restarts nothing.

    A running Patroni (Debian's, or an older venv's) keeps running: the unit's new
    definition is loaded by ``daemon-reload`` and used at the next start, which is
    :func:`release_rolled`'s business.
    """
    files.directory(name="Patroni wheelhouse directory", path=f"{PREFIX}/wheelhouse", mode="755")
    files.put(
        name=f"Patroni wheelhouse {install.wheelhouse.tarball.name}",
        src=str(install.wheelhouse.tarball),
        dest=install.remote_tarball,
        mode="644",
    )
    venv_from_wheelhouse(name="Patroni virtualenv (pip --no-index --require-hashes)", spec=install)
    files.link(name="Patroni venv in use", path=install.current, target=install.venv)
    files.link(name="patronictl on PATH", path=PATRONICTL, target=install.patronictl)
    unit = files.put(
        name="Patroni systemd unit",
        src=StringIO(render_unit(install, version)),
        dest=UNIT,
        mode="644",
    )
    systemd.daemon_reload(name="systemd reloaded for the Patroni unit", _if=unit.did_change)


def _running() -> bool:
    return bool(host.get_fact(SystemdStatus).get("patroni.service"))


@operation()
def member_started() -> Generator[StringCommand, None, None]:
    """Start Patroni where it is not running (it bootstraps or clones PostgreSQL)."""
    if _running():
        host.noop("patroni is running")
        return
    yield StringCommand("systemctl", "start", "patroni.service")


@operation(is_idempotent=False)
def reloaded() -> Generator[StringCommand, None, None]:
    """Reload a running Patroni after its local configuration changed (SIGHUP: it rewrites
    pg_hba.conf and reloads PostgreSQL; a parameter needing a restart is only flagged)."""
    if not _running():
        host.noop("patroni not running yet")
        return
    yield StringCommand("systemctl", "reload", "patroni.service")


@operation()
def member_ready(spec: PatroniInput) -> Generator[StringCommand, None, None]:
    """Wait until this member's PostgreSQL runs (bootstrapped, or cloned and replicating)."""
    state = cluster_fact(spec)
    me = state.member(spec.name) if state else None
    if me is not None and me.state in ("running", "streaming"):
        host.noop(f"{spec.name} is {me.role}, {me.state}")
        return
    yield StringCommand(
        f"for i in $(seq {READY_WAIT_SECONDS}); do "
        f'[ "$({spec.curl("/health", "-o /dev/null", "-w %{http_code}")})" = 200 ] && exit 0; '
        "sleep 1; done; "
        f'echo "error: PostgreSQL on {spec.name} not running after {READY_WAIT_SECONDS} s; '
        'see journalctl -u patroni" >&2; exit 1'
    )


@operation()
def dynamic_config(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Bring Patroni's dynamic configuration to the model through ``PATCH /config``.

    Sent from the member that leads at preview time (any member accepts it); the others
    have nothing to do. Before the cluster exists, ``bootstrap.dcs`` seeds it instead.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster yet: bootstrap.dcs seeds the dynamic configuration")
        return
    if cluster.leader.name != spec.name:
        host.noop(f"dynamic configuration is applied from the leader ({cluster.leader.name})")
        return
    patch = pending_config_patch(spec)
    if not patch:
        host.noop("dynamic configuration matches the model")
        return
    if cluster.problems(spec.members, spec.settings.maximum_lag_on_failover):
        explain_change("cluster not healthy now: the change will be refused unless it recovers")
    explain_change("PATCH /config " + ", ".join(flatten(patch)))
    yield FunctionCommand(_gated_patch, (spec, patch), {})


def _read(host: Any, spec: PatroniInput) -> PatroniClusterState | None:
    ok, out, _ = run(host, spec.cluster_command())
    return parse_patroni_cluster(out) if ok else None


def _gate(host: Any, spec: PatroniInput, what: str) -> PatroniClusterState | None:
    """The live cluster if it is fit for ``what`` (every member present and running or
    streaming, lag within bounds); otherwise log why and return None."""
    cluster = _read(host, spec)
    if cluster is None:
        refuse(host, f"{what} refused: cannot read the Patroni cluster from {spec.name}")
        return None
    problems = cluster.problems(spec.members, spec.settings.maximum_lag_on_failover)
    if problems:
        refuse(host, f"{what} refused: {'; '.join(problems)}; nothing was changed")
        return None
    return cluster


def _gated_patch(state: Any, host: Any, spec: PatroniInput, patch: dict[str, Any]) -> bool:
    if _gate(host, spec, "Patroni configuration change") is None:
        return False
    body = shlex.quote(json.dumps(patch, sort_keys=True))
    header = shlex.quote("Content-Type: application/json")
    ok, out, err = run(host, spec.curl("/config", "-f", "-XPATCH", "-H", header, "-d", body))
    if not ok:
        return refuse(host, f"PATCH /config refused: {' '.join(out + err)[-300:]}")
    note(host, "Patroni dynamic configuration: " + ", ".join(flatten(patch)))
    _PATCHED.add(spec.scope)
    return True


# Scopes whose dynamic configuration this run changed. Operation bodies are evaluated
# again when they execute: by then the configuration matches and Patroni may not have
# flagged pending restarts yet, so the roll must remember that a PATCH just happened.
_PATCHED: set[str] = set()


@operation()
def login_roles(roles: Sequence[str], port: int) -> Generator[StringCommand, None, None]:
    """Certificate-authenticated login roles, each with a schema of its own.

    Created on the primary only (decided by PostgreSQL itself when the command runs);
    replicas see them through replication, so the next run has nothing to do anywhere.
    """
    existing = host.get_fact(PostgresRoles, port=port)
    missing = [r for r in roles if existing is None or r not in existing]
    if not missing:
        host.noop("login roles present")
        return
    explain_change(f"create role(s) {', '.join(missing)}")
    array = "ARRAY[" + ",".join(f"'{r}'" for r in missing) + "]"
    sql = (
        f"SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest({array}) r "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \\gexec\n"
        f"SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', r, r) "
        f"FROM unnest({array}) r \\gexec\n"
    )
    psql = f"runuser -u postgres -- psql -p {port} -X -v ON_ERROR_STOP=1"
    yield StringCommand(
        f'cd / && if [ "$({psql} -Atqc "select pg_is_in_recovery()")" = f ]; then '
        f"printf '%s' {shlex.quote(sql)} | {psql} -q; fi"
    )


@operation()
def databases(wanted: Sequence[tuple[str, str]], port: int) -> Generator[StringCommand, None, None]:
    """Databases owned by login roles (``(name, owner)``); an existing one is left alone.

    Like :func:`login_roles`: created on the primary only (PostgreSQL decides when the
    command runs), replicas get them through replication. ``CREATE DATABASE`` cannot run
    in a transaction block or a function, hence ``\\gexec`` on a filtered select.
    """
    existing = host.get_fact(PostgresDatabases, port=port)
    missing = [(n, o) for n, o in wanted if existing is None or n not in existing]
    if not missing:
        host.noop("databases present")
        return
    explain_change(f"create database(s) {', '.join(n for n, _ in missing)}")
    rows = ",".join(f"('{n}','{o}')" for n, o in missing)
    sql = (
        f"SELECT format('CREATE DATABASE %I OWNER %I', d, o) FROM (VALUES {rows}) AS w(d, o) "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \\gexec\n"
        f"SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d) "
        f"FROM (VALUES {rows}) AS w(d, o) \\gexec\n"
    )
    psql = f"runuser -u postgres -- psql -p {port} -X -v ON_ERROR_STOP=1"
    yield StringCommand(
        f'cd / && if [ "$({psql} -Atqc "select pg_is_in_recovery()")" = f ]; then '
        f"printf '%s' {shlex.quote(sql)} | {psql} -q; fi"
    )


def _member_api(spec: PatroniInput, member: str, cluster: PatroniClusterState) -> str:
    found = cluster.member(member)
    address = found.host if found else member
    return f"https://{address}:{spec.settings.rest_api_port}"


def _post(host: Any, spec: PatroniInput, api: str, path: str, body: dict[str, Any]) -> bool:
    q = shlex.quote
    tls = spec.tls
    command = (
        f"curl -s -f -m 60 --cacert {q(tls.ca_path)} --cert {q(tls.chain_path)} "
        f"--key {q(tls.key_path)} -XPOST -H 'Content-Type: application/json' "
        f"-d {q(json.dumps(body))} {q(api + path)}"
    )
    ok, _, _ = run(host, command, timeout=90)
    return ok


def _wait_healthy(
    host: Any, spec: PatroniInput, seconds: float = 120
) -> PatroniClusterState | None:
    def probe() -> PatroniClusterState | None:
        cluster = _read(host, spec)
        if cluster is None or cluster.problems(spec.members, spec.settings.maximum_lag_on_failover):
            return None
        return cluster

    return wait_for(probe, seconds)[0]


def _roll(state: Any, host: Any, spec: PatroniInput, after_patch: bool) -> bool:
    """Execute-time: restart members with ``pending_restart``: replicas one at a time, one
    switchover, the old leader last; each step only after a live gate passes.

    Whichever member runs this first does the whole roll (the operation is serial); the
    others then find nothing pending.
    """
    if after_patch:
        # Each member flags pending_restart on its own next loop after a PATCH, so one
        # flagged member says nothing about the others: a replica not yet flagged would be
        # skipped, become the switchover candidate, and need a second switchover later.
        # A restart-requiring parameter concerns every member; wait (bounded) for all.
        def all_flagged() -> PatroniClusterState | None:
            cluster = _read(host, spec)
            return cluster if cluster and all(m.pending_restart for m in cluster.members) else None

        wait_for(all_flagged, 2 * spec.settings.loop_wait + 4)
    cluster = _read(host, spec)
    if cluster is None or not any(m.pending_restart for m in cluster.members):
        note(host, "no member needs a restart")
        return True
    started = time.monotonic()
    pending = sorted(m.name for m in cluster.members if m.pending_restart)
    note(host, f"rolling restart of {', '.join(pending)}")
    cluster = _gate(host, spec, "rolling restart")
    if cluster is None or cluster.leader is None:
        return False
    old_leader = cluster.leader.name
    restarted: set[str] = set()
    # Re-read before each step: a replica may flag pending_restart only after the
    # others restarted, and it must be restarted before it can become the new leader.
    while True:
        gated = _gate(host, spec, "restart of the next replica")
        if gated is None:
            return False
        waiting = [m for m in gated.replicas if m.pending_restart and m.name not in restarted]
        if not waiting:
            break
        replica = waiting[0]
        note(host, f"restarting replica {replica.name}")
        restarted.add(replica.name)
        api = _member_api(spec, replica.name, gated)
        if not _post(host, spec, api, "/restart", {"restart_pending": True}):
            return refuse(host, f"restart of replica {replica.name} failed (POST /restart)")
        if _wait_healthy(host, spec) is None:
            return refuse(host, f"replica {replica.name} did not come back healthy; stopping here")
    current = _read(host, spec)
    leader = current.member(old_leader) if current else None
    if current is not None and leader is not None and leader.pending_restart:
        gated = _gate(host, spec, f"switchover away from {old_leader}")
        if gated is None:
            return False

        # In synchronous mode Patroni only promotes a synchronous standby: after the
        # replica restarts one may not be assigned again yet, so wait for it.
        # A standby still pending a restart would itself need a switchover once promoted.
        def sync_standby() -> str | None:
            current = _read(host, spec)
            names = (
                [
                    m.name
                    for m in current.replicas
                    if m.role == "sync_standby" and not m.pending_restart
                ]
                if current
                else []
            )
            return names[0] if names else None

        candidate: str | None = None
        if spec.synchronous:
            candidate, _ = wait_for(sync_standby, 30)
        else:
            ready = [m.name for m in gated.replicas if not m.pending_restart]
            candidate = ready[0] if ready else None
        if candidate is None:
            return refuse(
                host, f"switchover away from {old_leader} refused: no synchronous standby"
            )
        note(host, f"switchover {old_leader} -> {candidate}")
        api = _member_api(spec, old_leader, gated)
        if not _post(
            host, spec, api, "/switchover", {"leader": old_leader, "candidate": candidate}
        ):
            return refuse(host, f"switchover {old_leader} -> {candidate} failed")
        after = _wait_healthy(host, spec)
        if after is None or after.leader is None or after.leader.name != candidate:
            return refuse(host, f"switchover to {candidate} did not settle; stopping here")
        demoted = after.member(old_leader)
        # A demoted primary restarts as a replica, usually with the new settings already.
        if demoted is not None and demoted.pending_restart:
            if _gate(host, spec, f"restart of the old leader {old_leader}") is None:
                return False
            note(host, f"restarting the old leader {old_leader}")
            api = _member_api(spec, old_leader, after)
            if not _post(host, spec, api, "/restart", {"restart_pending": True}):
                return refuse(host, f"restart of {old_leader} failed (POST /restart)")
            if _wait_healthy(host, spec) is None:
                return refuse(host, f"{old_leader} did not come back healthy")
    note(host, f"rolling restart done in {time.monotonic() - started:.1f} s")
    return True


@operation(is_idempotent=False)
def pending_restarts(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Roll the restarts PostgreSQL asks for (``pending_restart``), gated at each step.

    Run it ``_serial=True`` after :func:`dynamic_config`: the first member to run it
    rolls the whole cluster; the gate refuses (nothing restarted) when a member is
    missing, not running or lagging.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster")
        return
    pending = [m.name for m in cluster.members if m.pending_restart]
    patch = pending_config_patch(spec)
    after_patch = bool(patch) or spec.scope in _PATCHED
    if not pending and not after_patch:
        host.noop("no member needs a restart")
        return
    if pending:
        explain_change(f"pending restart: {', '.join(pending)}")
    yield FunctionCommand(_roll, (spec, after_patch), {})


# ---- the release roll: members on another Patroni release, one at a time ----


@dataclass(frozen=True)
class UpgradeStep:
    """One step of the release roll, as :func:`upgrade_steps` plans it."""

    action: Literal["restart", "switchover", "wait", "refuse"]
    """``restart``: stop Patroni (it stops PostgreSQL), start it on the wanted release;
    ``switchover``: leadership from ``member`` to ``candidate`` (None: decided when the
    replicas are done); ``wait``: nothing to do but wait (no upgraded synchronous standby
    yet); ``refuse``: the cluster is not fit for any step (``why``)."""
    member: str | None = None
    candidate: str | None = None
    why: str = ""


def upgrade_steps(
    cluster: PatroniClusterState,
    versions: Mapping[str, str | None],
    wanted: str,
    expected: tuple[str, ...],
    max_lag: int | None,
    synchronous: bool,
) -> list[UpgradeStep]:
    """Pure: the steps that bring every member of ``cluster`` to Patroni ``wanted``.

    + versions: each member's release as its own ``/patroni`` reports it (None: unread)
    + expected: the members the model names (all must be present and healthy)
    + max_lag: bytes a replica may lag for a step to go ahead
    + synchronous: synchronous mode is on (the switchover target must be a sync standby)

    Replicas first (asynchronous ones, then synchronous standbys, by name), then a
    switchover to an upgraded replica (a synchronous standby in synchronous mode), then
    the old leader, restarted as a replica. A standby cluster's ``standby_leader`` is the
    leader here. Empty when every member runs ``wanted``; one ``refuse`` when a member is
    missing, not running/streaming, lagging or of unknown release. The executor performs
    only the first step and plans again from a fresh reading, so a roll interrupted
    half-way resumes where it stopped.
    """
    # A member that is not running is not stale: whenever it starts, it starts on the
    # unit and venv in place. It still stops the roll below (every member must be there).
    stale = [
        m.name for m in cluster.members if m.name in expected and versions.get(m.name) != wanted
    ]
    if not stale:
        return []
    problems = cluster.problems(expected, max_lag)
    problems += [
        f"the Patroni release of {name} is unknown (its /patroni did not answer)"
        for name in expected
        if cluster.member(name) is not None and versions.get(name) is None
    ]
    leader = cluster.leader
    if problems or leader is None:
        return [UpgradeStep("refuse", why="; ".join(problems) or "no leader")]
    old_replicas = sorted(
        (m for m in cluster.replicas if m.name in stale),
        key=lambda m: (m.role == "sync_standby", m.name),
    )
    steps = [
        UpgradeStep("restart", m.name, why=f"replica on Patroni {versions.get(m.name)}")
        for m in old_replicas
    ]
    if leader.name not in stale:
        return steps
    why_leader = f"old leader on Patroni {versions.get(leader.name)}"
    if not cluster.replicas:
        # A one-member cluster has nobody to hand over to: restarted in place.
        return [*steps, UpgradeStep("restart", leader.name, why=why_leader + ", no replica")]
    if old_replicas:
        steps.append(UpgradeStep("switchover", leader.name, why="after the replicas"))
    else:
        targets = [m for m in cluster.replicas if m.role == "sync_standby" or not synchronous]
        if targets:
            steps.append(UpgradeStep("switchover", leader.name, targets[0].name, why_leader))
        else:
            steps.append(
                UpgradeStep("wait", leader.name, why="no upgraded synchronous standby yet")
            )
    steps.append(UpgradeStep("restart", leader.name, why=why_leader + ", now a replica"))
    return steps


def _member_apis(spec: PatroniInput, cluster: PatroniClusterState) -> dict[str, str]:
    return {m.name: _member_api(spec, m.name, cluster) for m in cluster.members}


def release_versions(spec: PatroniInput, cluster: PatroniClusterState) -> dict[str, str | None]:
    """Prepare time: each member's Patroni release from its own ``/patroni`` (facts)."""
    versions: dict[str, str | None] = {}
    for name, api in _member_apis(spec, cluster).items():
        seen: PatroniClusterState | None = host.get_fact(
            PatroniCluster,
            ca=spec.tls.ca_path,
            cert=spec.tls.chain_path,
            key=spec.tls.key_path,
            api=api,
        )
        versions[name] = seen.local_version if seen else None
    return versions


def _read_versions(
    executing: Any, spec: PatroniInput
) -> tuple[PatroniClusterState | None, dict[str, str | None]]:
    """Execute time: the cluster and each member's release, read right now."""
    cluster = _read(executing, spec)
    if cluster is None:
        return None, {}
    versions: dict[str, str | None] = {}
    for name, api in _member_apis(spec, cluster).items():
        tls = spec.tls
        ok, out, _ = run(
            executing, patroni_cluster_command(tls.ca_path, tls.chain_path, tls.key_path, api)
        )
        seen = parse_patroni_cluster(out) if ok else None
        versions[name] = seen.local_version if seen else None
    return cluster, versions


def _plan(executing: Any, spec: PatroniInput) -> tuple[list[UpgradeStep], dict[str, str | None]]:
    cluster, versions = _read_versions(executing, spec)
    if cluster is None:
        return [UpgradeStep("refuse", why=f"cannot read the cluster from {spec.name}")], {}
    settings = spec.settings
    steps = upgrade_steps(
        cluster,
        versions,
        settings.version,
        spec.members,
        settings.maximum_lag_on_failover,
        spec.synchronous,
    )
    return steps, versions


def restart_command(data_dir: str) -> str:
    """Stop Patroni, which stops PostgreSQL on its way out, then start it on the new unit.

    A postmaster still running after the stop (Patroni killed at the stop timeout) is
    stopped cleanly with ``pg_ctl``: a new Patroni must start PostgreSQL itself, never
    adopt a running one (on these machines the PID file's start time can disagree with the
    process's and the member then loops on "crashed").
    """
    q = shlex.quote
    pg_ctl = f"cd / && runuser -u postgres -- {PG_BIN}/pg_ctl -D {q(data_dir)}"
    return (
        "set -e; systemctl stop patroni.service; "
        f"if {pg_ctl} status >/dev/null 2>&1; then "
        f"{pg_ctl} stop -m fast -w -t {STOP_TIMEOUT_SECONDS}; fi; "
        "systemctl daemon-reload; systemctl start patroni.service"
    )


def _member_host(state: Any, executing: Any, name: str) -> Any:
    """The pyinfra host of member ``name`` if this run is connected to it, else None."""
    if name == executing.name:
        return executing
    try:
        target = state.inventory.get_host(name)
    except NoHostError:
        return None
    return target if getattr(target, "connected", False) else None


def _restart_member(state: Any, executing: Any, spec: PatroniInput, member: str) -> bool:
    target = _member_host(state, executing, member)
    if target is None:
        return refuse(
            executing,
            f"Patroni upgrade of {member} refused: {member} is not part of this run "
            "(--limit?); run the deploy on the whole stack",
        )
    if _gate(executing, spec, f"Patroni upgrade of {member}") is None:
        return False
    note(executing, f"Patroni upgrade: restarting {member} on {spec.settings.version}")
    arguments = connector_arguments(executing)
    arguments["_timeout"] = STOP_TIMEOUT_SECONDS + 120
    ok, output = target.run_shell_command(
        StringCommand(restart_command(spec.data_dir)), print_output=False, **arguments
    )
    if not ok:
        tail = " ".join(list(output.stderr_lines)[-3:])
        return refuse(executing, f"restart of Patroni on {member} failed: {tail}")

    def back() -> bool:
        cluster, versions = _read_versions(executing, spec)
        me = cluster.member(member) if cluster else None
        return bool(
            cluster is not None
            and me is not None
            and versions.get(member) == spec.settings.version
            and not cluster.problems(spec.members, spec.settings.maximum_lag_on_failover)
        )

    if not wait_for(back, READY_WAIT_SECONDS)[0]:
        return refuse(
            executing,
            f"{member} is not back running/streaming on Patroni {spec.settings.version} "
            f"after {READY_WAIT_SECONDS} s; stopping here (journalctl -u patroni on {member})",
        )
    return True


def _switchover(executing: Any, spec: PatroniInput, leader: str, candidate: str) -> bool:
    gated = _gate(executing, spec, f"switchover {leader} -> {candidate}")
    if gated is None:
        return False
    note(executing, f"Patroni upgrade: switchover {leader} -> {candidate}")
    body = {"leader": leader, "candidate": candidate}
    if not _post(executing, spec, _member_api(spec, leader, gated), "/switchover", body):
        return refuse(executing, f"switchover {leader} -> {candidate} failed")

    def settled() -> bool:
        cluster = _read(executing, spec)
        return bool(
            cluster is not None
            and cluster.leader is not None
            and cluster.leader.name == candidate
            and not cluster.problems(spec.members, spec.settings.maximum_lag_on_failover)
        )

    if not wait_for(settled, 120)[0]:
        return refuse(executing, f"switchover to {candidate} did not settle; stopping here")
    return True


def _release_roll(state: Any, host: Any, spec: PatroniInput) -> bool:
    """Execute-time: perform the first planned step, read the cluster again, repeat.

    Whichever member runs this first rolls the whole cluster (the operation is serial and
    reaches the other members over this run's connections); the others find nothing left.
    """
    started = time.monotonic()
    restarted: set[str] = set()
    # Each member is restarted at most once and a switchover happens once: the bound
    # only stops a plan that does not converge.
    for _ in range(2 * len(spec.members) + 4):
        steps, versions = _plan(host, spec)
        if not steps:
            if restarted:
                took = time.monotonic() - started
                note(host, f"Patroni upgrade done in {took:.1f} s ({', '.join(sorted(restarted))})")
            else:
                note(host, f"every member runs Patroni {spec.settings.version}")
            return True
        step = steps[0]
        if step.action == "refuse":
            return refuse(host, f"Patroni upgrade refused: {step.why}; nothing more was changed")
        if step.action == "wait":
            # In synchronous mode Patroni only hands over to a synchronous standby; after
            # the replicas restarted one may not be assigned again yet.
            def moved_on(waiting: UpgradeStep = step) -> bool:
                return _plan(host, spec)[0][:1] != [waiting]

            if not wait_for(moved_on, 60)[0]:
                return refuse(host, f"switchover away from {step.member} refused: {step.why}")
            continue
        assert step.member is not None
        if step.action == "switchover":
            if step.candidate is None:
                return refuse(host, f"switchover away from {step.member}: no candidate")
            if not _switchover(host, spec, step.member, step.candidate):
                return False
            continue
        if step.member in restarted:
            version = versions.get(step.member)
            return refuse(host, f"{step.member} still runs Patroni {version} after its restart")
        restarted.add(step.member)
        if not _restart_member(state, host, spec, step.member):
            return False
    return refuse(host, "Patroni upgrade did not converge; stopping here")


@operation(is_idempotent=False)
def release_rolled(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Every member on Patroni ``components.patroni.version``: replicas one at a time, a
    switchover to an upgraded (synchronous) standby, the old leader last; each member
    stopped through Patroni and started under plinth's unit, behind live gates.

    Run it ``_serial=True`` after :func:`patroni_installed` (which only installs): the
    first member to run it rolls the whole cluster. A new cluster (nothing running)
    starts on the wanted release and has nothing to roll.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster: members start on the wanted release")
        return
    versions = release_versions(spec, cluster)
    wanted = spec.settings.version
    stale = sorted(
        name for name, version in versions.items() if name in spec.members and version != wanted
    )
    if not stale:
        host.noop(f"every running member runs Patroni {wanted}")
        return
    old = ", ".join(f"{name} ({versions.get(name) or 'unknown'})" for name in stale)
    explain_change(f"Patroni {old} -> {wanted}: replicas, switchover, old leader")
    yield FunctionCommand(_release_roll, (spec,), {})


@deploy("Patroni")
def patroni_member(spec: PatroniInput, config_text: str, install: PatroniInstall) -> None:
    """One member of the DC's Patroni cluster (see the module docstring).

    + config_text: the rendered patroni.yml (:func:`render`), passed as text so the
      passwords inside never become an operation argument
    + install: the Patroni wheelhouse and where it goes (:class:`PatroniInstall`)
    """
    patroni_installed(install=install, version=spec.settings.version)
    files.directory(
        name="PostgreSQL data root", path=DATA_ROOT, user="postgres", group="postgres", mode="700"
    )
    # Debian's patroni package used to create it; Patroni now comes from the wheelhouse.
    files.directory(
        name="Patroni configuration directory",
        path=CONFIG_DIR,
        user="root",
        group="postgres",
        mode="750",
    )
    config = checked_file(
        name="Patroni configuration",
        path=CONFIG,
        src=StringIO(config_text),
        check=config_check(install),
        mode="600",
        user="postgres",
        group="postgres",
    )
    systemd.service(
        name="patroni enabled at boot", service="patroni.service", running=None, enabled=True
    )
    started = member_started(name="patroni started")
    reloaded(
        name="patroni reloaded for its new configuration",
        _if=lambda: config.did_change() and not started.did_change(),
    )
    member_ready(name="PostgreSQL running under Patroni", spec=spec)
    release_rolled(
        name="Patroni release rolled (replicas, switchover, old leader)",
        spec=spec,
        _serial=True,
    )
    dynamic_config(name="Patroni dynamic configuration", spec=spec)
    pending_restarts(
        name="PostgreSQL restarts rolled (replicas, switchover, old leader)",
        spec=spec,
        _serial=True,
    )
    login_roles(
        name="Login roles (client certificate)",
        roles=list(spec.login_roles),
        port=spec.settings.postgresql_port,
    )
    if spec.databases:
        databases(
            name="Databases of login roles",
            wanted=list(spec.databases),
            port=spec.settings.postgresql_port,
        )
