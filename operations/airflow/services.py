"""The services of one Airflow host (``components.airflow.services``): configuration,
secrets files, DAGs, units, the database migration, the units running on the active site
only, and the gated roll when an input of the units changed (:mod:`.roll`).
"""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd

from facts.airflow import AirflowCeleryImport, AirflowMigrations, celery_import_command
from operations.airflow.install import HOME, PREFIX, USER
from operations.airflow.render import (
    render_celery_module,
    render_config,
    render_environment,
    render_secrets,
    render_unit,
    render_wrapper,
)
from operations.airflow.roll import rolled
from operations.airflow.settings import (
    CELERY_MODULE,
    CONFIG,
    CONFIG_HOME,
    DAGS_FOLDER,
    ENV_FILE,
    LOG_FOLDER,
    PASSWORDS_FILE,
    REPO_DAGS,
    RESTART_MARKER,
    SECRETS_ENV,
    WRAPPER,
    AirflowConfig,
)
from plinth.reasons import explain_change


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
        pending_before = bool(host.get_fact(File, path=RESTART_MARKER))
        marked = server.shell(
            name="Airflow restart pending (an input of the running units changed)",
            commands=[f"touch {RESTART_MARKER}"],
            _if=lambda: any(i.did_change() for i in inputs),
        )
        rolled(
            name="Airflow restarted for its new configuration, host by host (gated)",
            spec=spec,
            just_started=started,
            _serial=True,
            _if=lambda: marked.did_change() or pending_before,
        )
