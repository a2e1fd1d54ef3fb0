"""Airflow on the small lab: the offline install, then the services as a user meets them.

The sample DAG is triggered through nginx's virtual host on the edge VIP with a
platform client certificate, runs on the Celery workers over RabbitMQ, and its rows are
read back from PostgreSQL; every Airflow session is checked to be TLS with the
certificate login. Figures are printed (pytest -s).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from operations.airflow import AIRFLOW_ROLES, PREFIX
from plinth.model import Role
from plinth.wheelhouse import airflow_wheelhouse
from tests.lab.conftest import Lab, plinth
from tests.lab.test_postgresql import psql, psql_binary

DAG_ID = "feeder_load_hourly"
# dags/data/feeder_loads.csv: its valid lines fall into this many (feeder, hour) rows.
SAMPLE_ROWS = 9
RUN_WAIT_SECONDS = 600
HEALTH_WAIT_SECONDS = 180

pytestmark = pytest.mark.lab


def test_every_airflow_host_runs_the_wheelhouse_installed_offline(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    env = deployed_small_lab.environment
    wheelhouse = airflow_wheelhouse(env)
    hosts = [h for h in env.hosts if any(r in h.roles for r in AIRFLOW_ROLES)]
    assert hosts
    for host in hosts:
        remote = deployed_small_lab.host(host.name, tmp_path)
        venv = remote.check_output(f"readlink -f {PREFIX}/current")
        assert venv == f"{PREFIX}/venv-{wheelhouse.tag}"
        version = remote.check_output(
            f'{venv}/bin/python -c "import importlib.metadata as m; '
            f"print(m.version('apache-airflow'))\""
        )
        assert version == env.components.airflow.version
        # Exactly the controller's resolution: every locked project at its locked version,
        # and nothing installed that the lock does not name (pip, setuptools aside).
        frozen = remote.check_output(f"{venv}/bin/pip freeze --all --disable-pip-version-check")
        installed = {
            line.split("==")[0].lower().replace("_", "-").replace(".", "-")
            + "=="
            + line.split("==")[1]
            for line in frozen.splitlines()
            if "==" in line
        }
        extra = installed - set(wheelhouse.lock)
        assert {e.split("==")[0] for e in extra} <= {"pip", "setuptools"}, extra
        assert set(wheelhouse.lock) <= installed
        assert remote.run(f"{venv}/bin/pip check --disable-pip-version-check").rc == 0


# ---- the services ----


def secret(name: str) -> str:
    return plinth("secrets", "get", "lab", name).stdout.strip()


class AirflowApi:
    """Airflow's REST API through nginx on the edge VIP, as an operator's client calls it:
    the platform root verifies nginx, a platform client certificate opens the virtual
    host, and a JWT from ``/auth/token`` authenticates to Airflow itself."""

    def __init__(self, lab: Lab, bundle: Path, cn: str) -> None:
        env = lab.environment
        vip = next(v for v in env.vips if "airflow" in v.services)
        vhost = next(v for v in env.components.nginx.virtual_hosts if v.name == "airflow")
        # By address (the controller does not resolve lab names); nginx's certificate
        # names the VIP's address too, so the handshake is verified either way.
        self.base = f"https://{vip.address}:{vhost.port}"
        self.context = ssl.create_default_context(cafile=str(bundle / "ca.crt"))
        self.context.load_cert_chain(str(bundle / f"{cn}.crt"), str(bundle / f"{cn}.key"))
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as answer:
                text = answer.read().decode()
                return answer.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                return error.code, json.loads(text)
            except json.JSONDecodeError:
                return error.code, text

    def login(self, password: str) -> None:
        status, answer = self.call(
            "POST", "/auth/token", {"username": "admin", "password": password}
        )
        assert status in (200, 201), (status, answer)
        self.token = answer["access_token"]


@pytest.fixture(scope="module")
def airflow_client(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("airflow-client")
    plinth("pki", "client-cert", "lab", "--cn", "grid-operator", "--out", str(out))
    plinth("pki", "client-cert", "lab", "--cn", "airflow", "--out", str(out))
    return out


def wait_healthy(api: AirflowApi, expected: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + HEALTH_WAIT_SECONDS
    while True:
        status, health = api.call("GET", "/api/v2/monitor/health")
        if (
            status == 200
            and isinstance(health, dict)
            and all((health.get(c) or {}).get("status") == "healthy" for c in expected)
        ):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"Airflow not healthy after {HEALTH_WAIT_SECONDS} s: {health}")
        time.sleep(3)


def test_health_through_nginx_reports_every_component_healthy(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    api = AirflowApi(deployed_small_lab, airflow_client, "grid-operator")
    health = wait_healthy(api, ("metadatabase", "scheduler", "triggerer", "dag_processor"))
    print(f"\nAirflow health through nginx: {json.dumps(health, sort_keys=True)}")
    # plinth status judges the same JSON fields
    status = json.loads(plinth("status", "lab-dc1", "--json", check=False).stdout)
    airflow = status["stacks"][0]["airflow"]
    assert airflow["problems"] == [], airflow


def test_the_virtual_host_refuses_a_client_without_a_certificate(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    api = AirflowApi(deployed_small_lab, airflow_client, "grid-operator")
    bare = ssl.create_default_context(cafile=str(airflow_client / "ca.crt"))
    request = urllib.request.Request(api.base + "/api/v2/monitor/health")
    try:
        with urllib.request.urlopen(request, context=bare, timeout=10) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (ssl.SSLError, urllib.error.URLError):
        status = -1  # refused during the handshake (TLS 1.3 alerts after it)
    assert status in (400, 403, -1), status


def test_sample_dag_triggered_through_the_api_runs_and_its_rows_are_in_postgresql(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    lab = deployed_small_lab
    api = AirflowApi(lab, airflow_client, "grid-operator")
    wait_healthy(api, ("metadatabase", "scheduler", "dag_processor"))
    api.login(secret("airflow-admin-password"))
    # The dag-processor parses the DAG folder shortly after it starts.
    deadline = time.monotonic() + HEALTH_WAIT_SECONDS
    while (status := api.call("GET", f"/api/v2/dags/{DAG_ID}")[0]) != 200:
        assert time.monotonic() < deadline, f"{DAG_ID} not parsed: {status}"
        time.sleep(3)
    status, _ = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    assert status == 200
    started = time.monotonic()
    status, run = api.call(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {}}
    )
    assert status in (200, 201), (status, run)
    run_id = run["dag_run_id"]
    state = run["state"]
    while state not in ("success", "failed"):
        assert time.monotonic() - started < RUN_WAIT_SECONDS, f"run {run_id} still {state}"
        time.sleep(3)
        state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")[1]["state"]
    took = time.monotonic() - started
    _, tasks = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    summary = {
        t["task_id"]: (t["state"], t["hostname"], t["try_number"]) for t in tasks["task_instances"]
    }
    print(f"\nrun {run_id}: {state} in {took:.1f} s; tasks {summary}")
    assert state == "success", summary

    # The rows, read back through the PostgreSQL VIP with the airflow certificate.
    rows = psql(grid_dsn(lab, airflow_client), "select count(*) from grid.feeder_load_hourly")
    assert rows.returncode == 0, rows.stderr
    assert int(rows.stdout.strip()) == SAMPLE_ROWS


def grid_dsn(lab: Lab, bundle: Path) -> str:
    env = lab.environment
    vip = next(v for v in env.vips if "postgresql" in v.services)
    params = {
        "host": env.vip_fqdn(vip),
        "hostaddr": str(vip.address),
        "port": str(env.components.haproxy.primary_port),
        "dbname": env.components.airflow.database,
        "user": "airflow",
        "sslmode": "verify-full",
        "sslrootcert": str(bundle / "ca.crt"),
        "sslcert": str(bundle / "airflow.crt"),
        "sslkey": str(bundle / "airflow.key"),
        "connect_timeout": "5",
    }
    return " ".join(f"{k}={v}" for k, v in params.items())


def test_every_airflow_session_is_tls_with_the_certificate_login(
    deployed_small_lab: Lab, airflow_client: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    psql_binary()
    sessions = psql(
        grid_dsn(lab, airflow_client),
        "select count(*), count(*) filter (where not s.ssl), "
        "count(*) filter (where s.client_dn not like '%CN=airflow%') "
        "from pg_stat_activity a join pg_stat_ssl s using (pid) "
        "where a.usename = 'airflow' and a.pid <> pg_backend_pid()",
    )
    assert sessions.returncode == 0, sessions.stderr
    total, plaintext, other_dn = (int(x) for x in sessions.stdout.strip().split("|"))
    print(f"\nAirflow's PostgreSQL sessions: {total}, without TLS: {plaintext}")
    assert total > 0 and plaintext == 0 and other_dn == 0

    broker = lab.environment.hosts_with(Role.RABBITMQ)[0]
    listed = lab.host(broker.name, tmp_path).run(
        "rabbitmqctl -q list_connections user vhost ssl auth_mechanism --formatter json"
    )
    assert listed.rc == 0, listed.stderr
    connections = [c for c in json.loads(listed.stdout) if c["user"] == "airflow"]
    print(f"Airflow's RabbitMQ connections: {len(connections)} on {broker.name}")
    assert connections
    assert all(c["ssl"] and c["auth_mechanism"] == "EXTERNAL" for c in connections)

    # No Airflow process listens on anything but the api-server's TLS port.
    for host in lab.environment.hosts:
        if not any(r in host.roles for r in AIRFLOW_ROLES):
            continue
        remote = lab.host(host.name, tmp_path)
        uid = remote.check_output("id -u airflow")
        ports = {
            line.split()[3].rsplit(":", 1)[1]
            for line in remote.check_output("ss -Hltne").splitlines()
            if f"uid:{uid} " in line + " "
        }
        wanted = (
            {str(lab.environment.components.airflow.api_port)}
            if Role.AIRFLOW_API in host.roles
            else set()
        )
        assert ports == wanted, (host.name, ports)
