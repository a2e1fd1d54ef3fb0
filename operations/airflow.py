"""Apache Airflow on the stateless tier: the offline install (issue 7, first part).

The controller builds the wheelhouse (:mod:`plinth.wheelhouse`); each Airflow host
receives it as one tar and installs it into a virtualenv named after the wheelhouse's
content hash, ``/opt/airflow/venv-<tag>``, with ``pip install --no-index``. ``current``
points at the venv in use. A new version or extra builds a new venv beside the old one,
so what runs keeps running until the units are switched; the same wheelhouse on a second
run installs nothing (the venv's marker holds the hash it was built from).

The services (``components.airflow.services``, off by default) are the second part:
``airflow.cfg`` rendered from the model, the secrets that must match on every host in a
root:airflow 0640 environment file, the Celery configuration module (SASL EXTERNAL), the
DAGs, one systemd unit per component the host's roles name, ``airflow db migrate`` from
one host of the active site when ``airflow db check-migrations`` says it is needed, and
the units running in the active datacenter only (installed, stopped and disabled in the
others). Proven on both labs, which turn the services on (docs/components/airflow.md).
A changed configuration or venv rolls the units host by host behind live gates
(:func:`roll_steps`, :func:`rolled`: workers drained first, ``airflow jobs check``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Generator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.operations import apt, files, server, systemd

from facts.airflow import (
    HEALTH_PATH,
    AirflowCeleryImport,
    AirflowMigrations,
    celery_import_command,
)
from operations.wheelhouse import MARKER, VenvInstall, venv_from_wheelhouse
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.context import read_secrets as read_environment_secrets
from plinth.model import AIRFLOW_ROLES, AirflowSettings, Role
from plinth.reasons import explain_change
from plinth.render import render_template
from plinth.topology.airflow import COMPONENTS

__all__ = ["MARKER"]

USER = "airflow"
HOME = "/var/lib/airflow"
PREFIX = "/opt/airflow"


@dataclass(frozen=True)
class AirflowInstall(VenvInstall):
    """Airflow's wheelhouse on a host: ``/opt/airflow/venv-<tag>``, ``current`` → in use."""

    prefix: str = PREFIX


@deploy("Airflow user")
def airflow_user() -> None:
    """The ``airflow`` system user and group (before host TLS when the services are on:
    the Airflow certificates' keys belong to it)."""
    server.group(name="airflow group", group=USER, system=True)
    server.user(
        name="airflow user",
        user=USER,
        group=USER,
        home=HOME,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=True,
    )


@deploy("Airflow installed offline")
def airflow_installed(spec: AirflowInstall) -> None:
    apt.packages(name="python3-venv for Airflow's virtualenv", packages=["python3-venv"])
    airflow_user()
    files.directory(name="Airflow wheelhouse directory", path=f"{PREFIX}/wheelhouse", mode="755")
    files.put(
        name=f"Airflow wheelhouse {spec.wheelhouse.tarball.name}",
        src=str(spec.wheelhouse.tarball),
        dest=spec.remote_tarball,
        mode="644",
    )
    venv_from_wheelhouse(name="Airflow virtualenv (pip --no-index)", spec=spec)
    files.link(
        name="Airflow venv in use",
        path=f"{PREFIX}/current",
        target=spec.venv,
    )


# ---- the services (components.airflow.services) ----

CONFIG_HOME = "/etc/airflow"
CONFIG = f"{CONFIG_HOME}/airflow.cfg"
ENV_FILE = f"{CONFIG_HOME}/airflow.env"
SECRETS_ENV = f"{CONFIG_HOME}/secrets.env"
# The simple auth manager opens its passwords file for writing ("a+", "r+") even when
# every user has a password, and ProtectSystem=full keeps /etc read-only for the units:
# the file lives in the airflow user's home, airflow:airflow 0600, in the format Airflow
# itself writes (so it never rewrites it and the checksum stays put).
PASSWORDS_FILE = f"{HOME}/simple_auth_manager_passwords.json"
CELERY_MODULE = f"{CONFIG_HOME}/config/plinth_celery.py"
DAGS_FOLDER = f"{PREFIX}/dags"
LOG_FOLDER = "/var/log/airflow"
AIRFLOW_BIN = f"{PREFIX}/current/bin/airflow"
PYTHON_BIN = f"{PREFIX}/current/bin/python"
WRAPPER = "/usr/local/sbin/plinth-airflow"
REPO_DAGS = Path(__file__).resolve().parents[1] / "dags"
GRID_CONNECTION = "grid_db"
WORKER_STOP_SECONDS = 600

# Secrets every Airflow host must share, as the environment variables Airflow reads them
# from (AIRFLOW__<SECTION>__<KEY> overrides airflow.cfg).
SECRET_ENV_NAMES = {
    "AIRFLOW__CORE__FERNET_KEY": "airflow-fernet-key",
    "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-jwt-secret",
    "AIRFLOW__API__SECRET_KEY": "airflow-api-secret-key",
}
ADMIN_PASSWORD_SECRET = "airflow-admin-password"
MANAGED_HEADER_TEXT = "managed by plinth: secrets from the encrypted store, do not edit"

# Roles whose processes parse or run DAG files.
DAG_ROLES = (Role.AIRFLOW_SCHEDULER, Role.AIRFLOW_DAG_PROCESSOR, Role.AIRFLOW_WORKER)


@dataclass(frozen=True)
class AirflowConfig:
    """The slice of the model one Airflow host reads (no secrets: see :func:`read_secrets`)."""

    fqdn: str
    datacenter: str
    roles: tuple[Role, ...]
    settings: AirflowSettings
    active: bool
    """This host's datacenter is the active site: its units run."""
    migrates: bool
    """This host runs ``airflow db migrate`` (one host of the active site)."""
    client_tls: CertificateSpec
    """CN = identity: PostgreSQL login and RabbitMQ user."""
    api_tls: CertificateSpec | None
    """The api-server's certificate (airflow-api hosts)."""
    database_host: str
    """FQDN of the DC's PostgreSQL VIP (named in the servers' certificates)."""
    database_port: int
    """haproxy's port to the current primary."""
    broker_hosts: tuple[str, ...]
    """FQDNs of the DC's RabbitMQ nodes (their certificates carry DNS names only)."""
    broker_port: int
    execution_api_host: str
    """FQDN of the api-server the Task SDK of this host's workers and triggerer dials:
    the host itself when it runs one, otherwise one of the DC's chosen by the host's
    position (spreading the worker-only hosts)."""
    hosts_per_role: tuple[tuple[Role, int], ...] = ()
    """How many hosts of this datacenter run each Airflow role (the roll's gates)."""

    @property
    def units(self) -> list[tuple[str, str]]:
        """(unit name, airflow subcommand) of this host's components, in model order."""
        return [COMPONENTS[role] for role in COMPONENTS if role in self.roles]

    @property
    def has_dags(self) -> bool:
        return any(role in self.roles for role in DAG_ROLES)

    def _postgres_query(self) -> str:
        tls = self.client_tls
        return urlencode(
            {
                "sslmode": "verify-full",
                "sslrootcert": tls.ca_path,
                "sslcert": tls.chain_path,
                "sslkey": tls.key_path,
            },
            safe="/",
        )

    def postgres_url(self, scheme: str = "postgresql+psycopg2") -> str:
        """The metadata database through the VIP: verify-full, the client certificate is
        the login (no password anywhere)."""
        user = quote(self.settings.identity)
        return (
            f"{scheme}://{user}@{self.database_host}:{self.database_port}/"
            f"{self.settings.database}?{self._postgres_query()}"
        )

    @property
    def broker_url(self) -> str:
        vhost = quote(self.settings.broker_vhost, safe="")
        return ";".join(f"amqp://{h}:{self.broker_port}/{vhost}" for h in self.broker_hosts)

    @property
    def execution_api_server_url(self) -> str:
        return f"https://{self.execution_api_host}:{self.settings.api_port}/execution/"


def airflow_config(context: HostContext, certificates: dict[str, CertificateSpec]) -> AirflowConfig:
    env = context.environment
    host_ = context.host
    dc = context.datacenter.name
    settings = env.components.airflow
    vip = env.vip_serving("postgresql", dc)
    if vip is None:  # the model's rules refuse this environment before any deploy
        raise ValueError(f"datacenter {dc!r} has no PostgreSQL VIP for Airflow")
    api_hosts = env.hosts_with(Role.AIRFLOW_API, dc)
    if not api_hosts:  # idem
        raise ValueError(f"datacenter {dc!r} has no airflow-api host")
    if Role.AIRFLOW_API in host_.roles:
        execution_api = env.fqdn(host_)
    else:
        position = [h.name for h in env.hosts_in(dc)].index(host_.name)
        execution_api = env.fqdn(api_hosts[position % len(api_hosts)])
    active = dc == env.active_site
    migrators = [
        h
        for h in env.hosts_in(dc)
        if Role.AIRFLOW_SCHEDULER in h.roles or Role.AIRFLOW_API in h.roles
    ]
    return AirflowConfig(
        fqdn=context.fqdn,
        datacenter=dc,
        roles=tuple(host_.roles),
        settings=settings,
        active=active,
        migrates=active and bool(migrators) and migrators[0].name == host_.name,
        client_tls=certificates["airflow-client"],
        api_tls=certificates.get("airflow-api"),
        database_host=env.vip_fqdn(vip),
        database_port=env.components.haproxy.primary_port,
        broker_hosts=tuple(env.fqdn(h) for h in env.hosts_with(Role.RABBITMQ, dc)),
        broker_port=env.components.rabbitmq.amqps_port,
        execution_api_host=execution_api,
        hosts_per_role=tuple((role, len(env.hosts_with(role, dc))) for role in AIRFLOW_ROLES),
    )


def render_config(spec: AirflowConfig) -> str:
    """airflow.cfg of one host (no secret in it)."""
    # The Task SDK reads [api] ssl_cert as extra trust for the execution API: on an
    # api-server host it is the server's chain, elsewhere the platform root.
    api_cert = spec.api_tls.chain_path if spec.api_tls else spec.client_tls.ca_path
    api_key = spec.api_tls.key_path if spec.api_tls else ""
    return render_template(
        "airflow/etc/airflow/airflow.cfg.j2",
        version=spec.settings.version,
        fqdn=spec.fqdn,
        datacenter=spec.datacenter,
        secrets_env=SECRETS_ENV,
        home=CONFIG_HOME,
        dags_folder=DAGS_FOLDER,
        log_folder=LOG_FOLDER,
        passwords_file=PASSWORDS_FILE,
        execution_api_server_url=spec.execution_api_server_url,
        identity=spec.settings.identity,
        sql_alchemy_conn=spec.postgres_url(),
        api_port=spec.settings.api_port,
        api_workers=spec.settings.api_workers,
        api_ssl_cert=api_cert,
        api_ssl_key=api_key,
        broker_url=spec.broker_url,
        result_backend=spec.postgres_url("db+postgresql+psycopg2"),
        client_tls=spec.client_tls,
        worker_concurrency=spec.settings.worker_concurrency,
        task_heartbeat_timeout=spec.settings.task_heartbeat_timeout,
    )


def render_environment(spec: AirflowConfig) -> str:
    """The units' non-secret environment: the sample DAG's connection (certificate login)."""
    return render_template(
        "airflow/etc/airflow/airflow.env.j2",
        grid_connection=GRID_CONNECTION,
        grid_connection_uri=json.dumps(spec.postgres_url("postgresql")),
    )


def render_celery_module() -> str:
    return render_template("airflow/etc/airflow/config/plinth_celery.py.j2")


def render_unit(spec: AirflowConfig, unit: str, subcommand: str) -> str:
    return render_template(
        "airflow/etc/systemd/system/airflow.service.j2",
        component=unit.removeprefix("airflow-"),
        home=CONFIG_HOME,
        env_file=ENV_FILE,
        secrets_env=SECRETS_ENV,
        state_dir=HOME,
        command=f"{AIRFLOW_BIN} {subcommand}",
        stop_timeout=WORKER_STOP_SECONDS,
    )


def render_wrapper() -> str:
    """``plinth-airflow ARGS``: the airflow CLI as the units run it (operators, facts)."""
    q = shlex.quote
    return (
        "#!/bin/sh\n"
        "# managed by plinth: the airflow CLI with the units' environment, as user airflow\n"
        "set -e\n"
        f"set -a; . {q(ENV_FILE)}; . {q(SECRETS_ENV)}; set +a\n"
        f"export AIRFLOW_HOME={q(CONFIG_HOME)} AIRFLOW_CONFIG={q(CONFIG)}\n"
        f"cd {q(HOME)}\n"
        "# --python: the venv's interpreter instead (the roll's job check)\n"
        'if [ "${1:-}" = --python ]; then\n'
        f'  shift; exec runuser -u {USER} -- {q(PYTHON_BIN)} "$@"\n'
        "fi\n"
        f'exec runuser -u {USER} -- {q(AIRFLOW_BIN)} "$@"\n'
    )


def read_secrets(context: HostContext) -> dict[str, str]:
    """{environment variable or ``admin``: value} of Airflow's encrypted secrets."""
    names = {**SECRET_ENV_NAMES, "admin": ADMIN_PASSWORD_SECRET}
    return read_environment_secrets(context, names)


def render_secrets(secrets: dict[str, str]) -> tuple[str, str]:
    """(secrets.env, the simple auth manager's passwords file): uploaded as files whose
    content is compared by checksum, never an operation argument."""
    lines = [f"# {MANAGED_HEADER_TEXT}"]
    for variable in SECRET_ENV_NAMES:
        lines.append(f'{variable}="{secrets[variable]}"')
    passwords = json.dumps({"admin": secrets["admin"]})
    return "\n".join(lines) + "\n", passwords + "\n"


@operation()
def celery_importable() -> Generator[StringCommand, None, None]:
    """Fail this host, with Python's own error, when the installed Airflow cannot import
    its Celery executor (e.g. celery 5.7 with provider 3.26: ``components.airflow.
    constraints`` must bound it); checked before anything migrates or starts."""
    python = f"{PREFIX}/current/bin/python"
    if host.get_fact(AirflowCeleryImport, python=python, home=CONFIG_HOME, workdir=HOME):
        host.noop("Airflow imports its Celery executor")
        return
    yield StringCommand(celery_import_command(python, CONFIG_HOME, HOME))


@operation()
def database_migrated(wrapper: str) -> Generator[StringCommand, None, None]:
    """``airflow db migrate`` when ``airflow db check-migrations`` says it is needed.

    Runs on one host of the active site only (the caller decides), so two hosts never
    migrate at once; ``airflow db check`` first waits (bounded) for the database through
    the VIP, so an unhealthy PostgreSQL cell stops the deploy here, before any unit
    starts on a schema it does not match.
    """
    current = host.get_fact(AirflowMigrations, wrapper=wrapper)
    if current:
        host.noop("Airflow's database schema is current")
        return
    explain_change("airflow db migrate (check-migrations: pending)")
    yield StringCommand(
        f"{wrapper} db check --retry 12 --retry-delay 5 && "
        f"{{ {wrapper} db check-migrations --migration-wait-timeout 0 >/dev/null 2>&1 "
        f"|| {wrapper} db migrate; }}"
    )


# ---- rolling (issue 7 item 5) ----

JOB_TYPES: dict[Role, str] = {
    Role.AIRFLOW_SCHEDULER: "SchedulerJob",
    Role.AIRFLOW_TRIGGERER: "TriggererJob",
    Role.AIRFLOW_DAG_PROCESSOR: "DagProcessorJob",
}
JOB_WAIT_SECONDS = 180
# Run by ``plinth-airflow --python -c`` after a roll restarts a host's jobs: ``airflow
# jobs check --local`` as Airflow writes it, but counting only jobs started since the
# restart. (Right after a restart the old process's row may still look alive by its
# last heartbeat, for up to Airflow's 30 s threshold, if it did not exit cleanly.)
# argv: the host's epoch seconds before the restart, then the job types. Exit 1 with the
# job types not yet alive on stdout.
JOBS_STARTED_SINCE = """
import sys
from datetime import datetime, timezone
from sqlalchemy import select
from airflow.jobs.job import Job, JobState
from airflow.utils.net import get_hostname
from airflow.utils.session import create_session
since = datetime.fromtimestamp(float(sys.argv[1]), timezone.utc)
missing = []
with create_session() as session:
    for job_type in sys.argv[2:]:
        query = select(Job).where(
            Job.state == JobState.RUNNING, Job.job_type == job_type,
            Job.hostname == get_hostname(), Job.start_date >= since,
        )
        if not any(job.is_alive() for job in session.scalars(query)):
            missing.append(job_type)
print(" ".join(missing))
sys.exit(1 if missing else 0)
"""


@dataclass(frozen=True)
class RollStep:
    """One ``systemctl`` action of a host's roll and the check that must pass after it."""

    action: str  # stop | start | restart
    units: tuple[str, ...]
    check: str | None = None  # "health": the api-server answers; "jobs": alive locally


def roll_steps(units_by_role: dict[Role, str]) -> list[RollStep]:
    """The order of one host's roll (only the units it runs and this run did not start).

    1. The worker stops first: SIGTERM is Celery's warm shutdown, so it takes no new
       task and finishes those it runs (up to ``TimeoutStopSec``).
    2. The api-server restarts while the worker is down: the worker's tasks reach the
       execution API on this host, so none runs while it restarts (nginx sends users
       to the others), and it must answer its health endpoint before going on.
    3. The worker starts again on the new configuration.
    4. Triggerer, dag-processor and scheduler restart together (their peers on other
       hosts carry on) and must each be alive on this host afterwards.
    """
    worker = units_by_role.get(Role.AIRFLOW_WORKER)
    api_server = units_by_role.get(Role.AIRFLOW_API)
    jobs = tuple(units_by_role[r] for r in JOB_TYPES if r in units_by_role)
    steps = []
    if worker:
        steps.append(RollStep("stop", (worker,)))
    if api_server:
        steps.append(RollStep("restart", (api_server,), "health"))
    if worker:
        steps.append(RollStep("start", (worker,)))
    if jobs:
        steps.append(RollStep("restart", jobs, "jobs"))
    return steps


def alive_jobs(lines: list[str]) -> int | None:
    """Alive jobs from ``airflow jobs check --allow-multiple`` output (None: unreadable)."""
    for line in lines:
        found = re.search(r"Found (one|\d+) alive jobs?", line)
        if found:
            return 1 if found.group(1) == "one" else int(found.group(1))
        if "No alive jobs found" in line:
            return 0
    return None


def roll_refusal(job: str, alive: int | None, expected: int, host_name: str) -> str | None:
    """Why restarting ``host_name``'s ``job`` now would leave the DC without one."""
    if alive is None:
        return f"cannot count the alive {job}s (airflow jobs check failed)"
    if alive < expected:
        return (
            f"only {alive} of {expected} {job}s alive: another is already down, and "
            f"restarting the one on {host_name} could leave none"
        )
    return None


def _gated_roll(state: Any, host: Any, spec: AirflowConfig, just_started: dict[str, Any]) -> bool:
    """Execute-time: walk this host's :func:`roll_steps`, gated live.

    Before anything stops, every job type this host runs that has peers on other hosts
    must count all of them alive (``airflow jobs check``): one already down refuses the
    roll. After each step its check must pass, or the roll stops and names what it left.
    """
    from plinth.rolling import note, refuse, run, wait_for

    counts = dict(spec.hosts_per_role)
    by_role = {
        role: unit
        for role, (unit, _) in COMPONENTS.items()
        if role in spec.roles and not just_started[unit].did_change()
    }  # a unit this run just started already runs the new configuration
    units_role = {unit: role for role, unit in by_role.items()}
    done: list[str] = []

    def refused(why: str) -> bool:
        left = f"; done so far: {', '.join(done)}" if done else "; nothing was stopped"
        return refuse(host, f"Airflow roll of {spec.fqdn} refused: {why}{left}")

    for role, job in JOB_TYPES.items():
        if role in by_role and counts.get(role, 0) > 1:
            check = f"{WRAPPER} jobs check --job-type {job} --allow-multiple --limit 100"
            _, out, err = run(host, check, timeout=120)
            refusal = roll_refusal(job, alive_jobs(out + err), counts[role], spec.fqdn)
            if refusal:
                return refused(refusal)

    for step in roll_steps(by_role):
        names = " ".join(f"{u}.service" for u in step.units)
        since = ""  # the host's clock before a jobs' restart (their start_date's clock)
        if step.check == "jobs":
            clock = run(host, "date +%s", 30)[1]
            since = clock[-1].strip() if clock else ""
            if not since.isdigit():
                return refused(f"cannot read the host's clock: {clock}")
        ok, _, err = run(host, f"systemctl {step.action} {names}", WORKER_STOP_SECONDS + 60)
        if not ok:
            return refused(f"systemctl {step.action} {names} failed: {' '.join(err)[-300:]}")
        done.append(f"{step.action} {' '.join(step.units)}")
        if step.check == "health" and spec.api_tls is not None:
            health = (
                f"curl -sf -m 5 --cacert {shlex.quote(spec.api_tls.ca_path)} "
                f"https://{spec.fqdn}:{spec.settings.api_port}{HEALTH_PATH}"
            )

            def answers(command: str = health) -> bool:
                return run(host, command, 30)[0]

            answered, waited = wait_for(answers, JOB_WAIT_SECONDS, interval=3)
            if not answered:
                return refused(f"the api-server's health endpoint is silent after {waited:.0f} s")
        if step.check == "jobs":
            jobs = " ".join(JOB_TYPES[units_role[unit]] for unit in step.units)
            check = f"{WRAPPER} --python -c {shlex.quote(JOBS_STARTED_SINCE)} {since} {jobs}"
            missing: list[str] = []

            def started(command: str = check, missing: list[str] = missing) -> bool:
                ok, out, _ = run(host, command, 120)
                missing[:] = out[-1:]  # the job types not yet alive, for the refusal
                return ok

            alive, waited = wait_for(started, JOB_WAIT_SECONDS, interval=5)
            if not alive:
                return refused(
                    f"not alive on this host {waited:.0f} s after their restart: "
                    f"{' '.join(missing) or jobs}"
                )
    note(host, f"Airflow on {spec.fqdn} rolled: {'; '.join(done) or 'nothing to restart'}")
    return True


@operation(is_idempotent=False)
def rolled(
    spec: AirflowConfig, just_started: dict[str, Any]
) -> Generator[FunctionCommand, None, None]:
    """Restart this host's Airflow units behind live gates (run it ``_serial=True``):
    hosts one after the other, so two schedulers are never down together."""
    yield FunctionCommand(_gated_roll, (spec, just_started), {})


@deploy("Airflow services")
def airflow_services(spec: AirflowConfig, secrets: dict[str, str], venv: str) -> None:
    """Configuration, DAGs and units of one Airflow host (see the module docstring).

    + secrets: :func:`read_secrets`; they reach the host only inside uploaded files.
    + venv: the venv ``current`` points at (a new one is an upgrade: the units roll)
    """
    secrets_text, passwords_text = render_secrets(secrets)
    for path, mode in (
        (CONFIG_HOME, "755"),
        (f"{CONFIG_HOME}/config", "755"),
        (f"{CONFIG_HOME}/plugins", "755"),
    ):
        files.directory(name=f"Airflow directory {path}", path=path, mode=mode)
    files.directory(name="Airflow logs", path=LOG_FOLDER, user=USER, group=USER, mode="750")
    changed = [
        files.put(
            name="airflow.cfg",
            src=StringIO(render_config(spec)),
            dest=CONFIG,
            user="root",
            group=USER,
            mode="640",
        ),
        files.put(
            name="Airflow units' environment",
            src=StringIO(render_environment(spec)),
            dest=ENV_FILE,
            user="root",
            group=USER,
            mode="640",
        ),
        files.put(
            name="Airflow secrets (fernet key, JWT secret, API secret key)",
            src=StringIO(secrets_text),
            dest=SECRETS_ENV,
            user="root",
            group=USER,
            mode="640",
        ),
        files.put(
            name="Airflow admin password (simple auth manager)",
            src=StringIO(passwords_text),
            dest=PASSWORDS_FILE,
            user=USER,
            group=USER,
            mode="600",
        ),
        files.put(
            name="Celery configuration (SASL EXTERNAL)",
            src=StringIO(render_celery_module()),
            dest=CELERY_MODULE,
            mode="644",
        ),
    ]
    files.put(
        name="plinth-airflow (the CLI with the units' environment)",
        src=StringIO(render_wrapper()),
        dest=WRAPPER,
        mode="755",
    )
    if spec.has_dags:
        files.directory(name="Airflow DAGs folder", path=DAGS_FOLDER, mode="755")
        # Not a restart input: the dag-processor re-parses changed files on its own, and a
        # worker loads a task's DAG file afresh for every task it runs.
        files.sync(
            name="Airflow DAGs from the repository",
            src=str(REPO_DAGS),
            dest=DAGS_FOLDER,
            mode="644",
            dir_mode="755",
            delete=True,
            exclude=["*.pyc", "__pycache__"],
            exclude_dir=["__pycache__"],
        )
    units = []
    for unit, subcommand in spec.units:
        units.append(
            files.put(
                name=f"{unit}.service",
                src=StringIO(render_unit(spec, unit, subcommand)),
                dest=f"/etc/systemd/system/{unit}.service",
                mode="644",
            )
        )
    systemd.daemon_reload(
        name="systemd reloaded for the Airflow units",
        _if=lambda: any(u.did_change() for u in units),
    )
    celery_importable(name="Airflow's Celery executor importable")
    if spec.migrates:
        database_migrated(name="Airflow database migrated", wrapper=WRAPPER)
    venv_marker = files.put(
        name="Airflow venv the units were started from",
        src=StringIO(f"{venv}\n"),
        dest=f"{CONFIG_HOME}/venv-in-use",
        mode="644",
    )
    started = {}
    for unit, _ in spec.units:
        # The standby site keeps its units installed, stopped and disabled: they start on
        # a DC failover (docs/components/airflow.md), never beside the active site's.
        started[unit] = systemd.service(
            name=f"{unit} {'running' if spec.active else 'stopped (standby site)'}",
            service=f"{unit}.service",
            running=spec.active,
            enabled=spec.active,
        )
    if spec.active:
        inputs = [*changed, *units, venv_marker]
        rolled(
            name="Airflow restarted for its new configuration, host by host (gated)",
            spec=spec,
            just_started=started,
            _serial=True,
            _if=lambda: any(i.did_change() for i in inputs),
        )
