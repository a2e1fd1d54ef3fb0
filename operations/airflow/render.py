"""What an Airflow host's files hold, rendered from its :class:`.settings.AirflowConfig`
(pure: no secret except in :func:`render_secrets`, whose output is only ever uploaded as a
file compared by checksum)."""

from __future__ import annotations

import json
import shlex

from operations.airflow.install import HOME, USER
from operations.airflow.settings import (
    AIRFLOW_BIN,
    CONFIG,
    CONFIG_HOME,
    DAGS_FOLDER,
    ENV_FILE,
    GRID_CONNECTION,
    LOG_FOLDER,
    MANAGED_HEADER_TEXT,
    PASSWORDS_FILE,
    PYTHON_BIN,
    SECRET_ENV_NAMES,
    SECRETS_ENV,
    WORKER_STOP_SECONDS,
    AirflowConfig,
)
from plinth.render import render_template


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


def render_secrets(secrets: dict[str, str]) -> tuple[str, str]:
    """(secrets.env, the simple auth manager's passwords file): uploaded as files whose
    content is compared by checksum, never an operation argument."""
    lines = [f"# {MANAGED_HEADER_TEXT}"]
    for variable in SECRET_ENV_NAMES:
        lines.append(f'{variable}="{secrets[variable]}"')
    passwords = json.dumps({"admin": secrets["admin"]})
    return "\n".join(lines) + "\n", passwords + "\n"
