"""Airflow's shape: the systemd unit of each Airflow role and the health components a
datacenter's api-servers must report, from the hosts' roles."""

from __future__ import annotations

from plinth.model import AIRFLOW_ROLES, Role

# role -> (unit name, airflow command). The Celery worker's SIGTERM is its warm shutdown.
# ``--skip-serve-logs``: the log servers (8793/8794) speak plain HTTP, and no Airflow
# process may talk without TLS; task logs stay in /var/log/airflow on the host that ran
# the task until remote logging (MinIO) lands.
COMPONENTS: dict[Role, tuple[str, str]] = {
    Role.AIRFLOW_API: ("airflow-api-server", "api-server"),
    Role.AIRFLOW_SCHEDULER: ("airflow-scheduler", "scheduler --skip-serve-logs"),
    Role.AIRFLOW_DAG_PROCESSOR: ("airflow-dag-processor", "dag-processor"),
    Role.AIRFLOW_TRIGGERER: ("airflow-triggerer", "triggerer --skip-serve-logs"),
    Role.AIRFLOW_WORKER: ("airflow-worker", "celery worker --skip-serve-logs"),
}


def has_airflow(roles: tuple[Role, ...] | list[Role]) -> bool:
    return any(role in roles for role in AIRFLOW_ROLES)


def expected_components(env_roles: list[tuple[Role, ...]]) -> tuple[str, ...]:
    """Health components a DC's api-servers must report healthy, from its hosts' roles."""
    wanted = ["metadatabase"]
    for role, name in (
        (Role.AIRFLOW_SCHEDULER, "scheduler"),
        (Role.AIRFLOW_TRIGGERER, "triggerer"),
        (Role.AIRFLOW_DAG_PROCESSOR, "dag_processor"),
    ):
        if any(role in roles for roles in env_roles):
            wanted.append(name)
    return tuple(wanted)
