"""The slice of the model one Airflow host reads, the paths on the host, the secrets.

The services (``components.airflow.services``, off by default): ``airflow.cfg`` rendered
from the model (:mod:`.render`), the secrets that must match on every host in a
root:airflow 0640 environment file, one systemd unit per component the host's roles name,
the units running in the active datacenter only (:mod:`.services`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from operations.airflow.install import HOME, PREFIX
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.context import read_secrets as read_environment_secrets
from plinth.model import AIRFLOW_ROLES, AirflowSettings, Role
from plinth.topology.airflow import COMPONENTS, execution_api_server

CONFIG_HOME = "/etc/airflow"
# Touched when an input of the running units changed, removed once the roll restarted
# them: a refused roll is retried by the next run instead of forgotten (the inputs no
# longer differ then).
RESTART_MARKER = f"{HOME}/plinth-restart-pending"
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
REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"
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
    execution_api = env.fqdn(execution_api_server(env, host_))  # idem: an api-server
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


def read_secrets(context: HostContext) -> dict[str, str]:
    """{environment variable or ``admin``: value} of Airflow's encrypted secrets."""
    names = {**SECRET_ENV_NAMES, "admin": ADMIN_PASSWORD_SECRET}
    return read_environment_secrets(context, names)
