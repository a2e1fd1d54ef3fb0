"""Airflow's shape: the systemd unit of each Airflow role, the health components a
datacenter's api-servers must report, and the api-server whose execution API each host's
Task SDK dials, from the hosts' roles."""

from __future__ import annotations

from plinth.model import AIRFLOW_ROLES, Environment, Host, Role

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


def execution_api_server(env: Environment, host: Host) -> Host:
    """The api-server whose Task Execution API the workers and triggerer on ``host`` dial
    (``[core] execution_api_server_url``): the host itself when it runs one, otherwise one
    of its datacenter's, chosen by the host's position in the DC (spreading the
    worker-only hosts). ValueError when the DC has no api-server (the model's rules refuse
    that environment when Airflow's services are on)."""
    api_hosts = env.hosts_with(Role.AIRFLOW_API, host.datacenter)
    if not api_hosts:
        raise ValueError(f"datacenter {host.datacenter!r} has no airflow-api host")
    if Role.AIRFLOW_API in host.roles:
        return host
    position = [h.name for h in env.hosts_in(host.datacenter)].index(host.name)
    return api_hosts[position % len(api_hosts)]
