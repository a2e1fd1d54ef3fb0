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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from operations.airflow import PREFIX
from plinth.airflow_api import HEALTH_COMPONENTS, AirflowApi, api_base
from plinth.model import AIRFLOW_ROLES, Role
from plinth.rolling import wait_for
from plinth.topology.airflow import COMPONENTS
from plinth.wheelhouse import airflow_wheelhouse
from tests.lab.conftest import DEPLOY, LAB_ENV, Lab, lab_secret, plinth
from tests.lab.test_postgresql import leader_of, psql, psql_binary
from tests.lab.test_postgresql_failover import wait_cluster_healthy

DAG_ID = "feeder_load_hourly"
RELEASE_VARIABLE = "feeder_load_hourly_release"  # dags/feeder_load.py
OPERATOR = "grid-operator"
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


@pytest.fixture(scope="module")
def airflow_client(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An operator's certificate (for nginx) and the airflow role's (to read the rows)."""
    out = tmp_path_factory.mktemp("airflow-client")
    plinth("pki", "client-cert", "lab", "--cn", OPERATOR, "--out", str(out))
    # ``airflow`` is the identity the platform issues its Airflow hosts: reading their rows
    # as that role is exactly what client-cert refuses unless told it is meant.
    plinth("pki", "client-cert", "lab", "--cn", "airflow", "--reserved-identity", "--out", str(out))
    return out


def api(lab: Lab, bundle: Path, cn: str | None = OPERATOR) -> AirflowApi:
    return AirflowApi(
        base=api_base(lab.environment, "dc1"),
        ca=bundle / "ca.crt",
        cert=bundle / f"{cn}.crt" if cn else None,
        key=bundle / f"{cn}.key" if cn else None,
    )


def test_health_through_nginx_reports_every_component_healthy(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    health = api(deployed_small_lab, airflow_client).wait_healthy(
        HEALTH_COMPONENTS, HEALTH_WAIT_SECONDS
    )
    print(f"\nAirflow health through nginx: {json.dumps(health, sort_keys=True)}")
    # plinth status judges the same JSON fields, and every unit of every host
    status = json.loads(plinth("status", "lab-dc1", "--json", check=False).stdout)
    airflow = status["stacks"][0]["airflow"]
    assert airflow["problems"] == [], airflow


def test_the_virtual_host_refuses_a_client_without_a_certificate(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    try:
        status, _ = api(deployed_small_lab, airflow_client, cn=None).call(
            "GET", "/api/v2/monitor/health"
        )
    except (ssl.SSLError, urllib.error.URLError, ConnectionError):
        status = -1  # refused in the handshake
    # nginx answers 400 "No required SSL certificate was sent" when not refused earlier
    assert status in (400, -1), status


def test_sample_dag_triggered_through_the_api_runs_and_its_rows_are_in_postgresql(
    deployed_small_lab: Lab, airflow_client: Path
) -> None:
    lab = deployed_small_lab
    psql_binary()
    client = api(lab, airflow_client)
    client.wait_healthy(("metadatabase", "scheduler", "dag_processor"), HEALTH_WAIT_SECONDS)
    client.login(lab_secret("airflow-admin-password"))
    client.open_dag(DAG_ID, HEALTH_WAIT_SECONDS)
    started = time.monotonic()
    run_id = client.trigger(DAG_ID)
    state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
    took = time.monotonic() - started
    tasks = {
        t["task_id"]: (t["state"], t["hostname"], t["try_number"])
        for t in client.task_instances(DAG_ID, run_id)
    }
    print(f"\nrun {run_id}: {state} in {took:.1f} s; tasks {tasks}")
    assert state == "success", tasks

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

    connections = []
    for broker in lab.environment.hosts_with(Role.RABBITMQ):
        listed = lab.host(broker.name, tmp_path).run(
            "rabbitmqctl -q list_connections user ssl auth_mechanism --formatter json"
        )
        assert listed.rc == 0, listed.stderr
        connections += [c for c in json.loads(listed.stdout) if c["user"] == "airflow"]
    print(f"Airflow's RabbitMQ connections: {len(connections)}")
    assert connections
    assert all(c["ssl"] and c["auth_mechanism"] == "EXTERNAL" for c in connections), connections

    # No Airflow process listens on anything but the api-server's TLS port.
    api_port = str(lab.environment.components.airflow.api_port)
    for host in lab.environment.hosts:
        if not any(r in host.roles for r in AIRFLOW_ROLES):
            continue
        remote = lab.host(host.name, tmp_path)
        uid = remote.check_output("id -u airflow")
        ports = {
            line.split()[3].rsplit(":", 1)[1]
            for line in remote.check_output("ss -Hltne").splitlines()
            if f" uid:{uid} " in f"{line} "
        }
        wanted = {api_port} if Role.AIRFLOW_API in host.roles else set()
        assert ports == wanted, (host.name, ports)


# ---- failure drill ----


def task_instance(client: AirflowApi, run_id: str, task_id: str) -> dict[str, Any]:
    return next(t for t in client.task_instances(DAG_ID, run_id) if t["task_id"] == task_id)


def running_task(
    client: AirflowApi, run_id: str, task_id: str = "ingest"
) -> Callable[[], dict[str, Any] | None]:
    """A probe for :func:`wait_for`: the task instance once it runs on a known host."""

    def probe() -> dict[str, Any] | None:
        found = task_instance(client, run_id, task_id)
        return found if found["state"] == "running" and found.get("hostname") else None

    return probe


def ready_client(lab: Lab, bundle: Path) -> AirflowApi:
    """Logged in, every component healthy, the sample DAG parsed and unpaused, and no
    earlier run of it still going: a drill's run that outlived its test (one that failed
    before waiting for it) must not share the hosts, the database rows or the roll with
    the next drill's (stop 26's CI and a rehearsal failed the rolling drill right after
    the failover drill had failed that way)."""
    client = api(lab, bundle)
    client.wait_healthy(HEALTH_COMPONENTS, HEALTH_WAIT_SECONDS)
    client.login(lab_secret("airflow-admin-password"))
    client.open_dag(DAG_ID, HEALTH_WAIT_SECONDS)
    for run_id in client.unfinished_runs(DAG_ID):
        client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
    return client


def held_run(client: AirflowApi, hold_seconds: int) -> tuple[str, dict[str, Any]]:
    """A sample run whose ``ingest`` holds its first try; returned once it runs."""
    run_id = client.trigger(DAG_ID, {"hold_seconds": hold_seconds})
    ingest, _ = wait_for(running_task(client, run_id), HEALTH_WAIT_SECONDS)
    assert ingest is not None, f"ingest never ran: {task_instance(client, run_id, 'ingest')}"
    return run_id, ingest


HOLD_SECONDS = 45


def test_a_worker_killed_mid_task_the_task_is_retried_elsewhere_and_the_run_completes(
    deployed_small_lab: Lab, airflow_client: Path, tmp_path: Path
) -> None:
    """The worker host's Airflow processes die (SIGKILL to the whole unit) while a task
    runs there: the task's heartbeats stop, the scheduler fails that try after
    ``task_heartbeat_timeout`` and another worker runs the retry; the run succeeds."""
    lab = deployed_small_lab
    client = ready_client(lab, airflow_client)
    run_id, ingest = held_run(client, HOLD_SECONDS)
    victim = ingest["hostname"].split(".")[0]
    remote = lab.host(victim, tmp_path)
    killed_at = time.monotonic()
    # Killed, then kept down (stop cancels the unit's restart): the host's worker is gone,
    # as when the host dies, and comes back only after the run.
    killed = remote.run(
        "systemctl kill -s KILL airflow-worker.service && systemctl stop airflow-worker.service"
    )
    assert killed.rc == 0, killed.stderr
    try:
        state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
        took = time.monotonic() - killed_at
        final = task_instance(client, run_id, "ingest")
        print(
            f"\nworker on {victim} killed mid-task: run {state} {took:.1f} s later; ingest "
            f"try {final['try_number']} on {final['hostname']}"
        )
        assert state == "success"
        assert final["try_number"] >= 2, final
        assert final["hostname"].split(".")[0] != victim, final
    finally:
        remote.run("systemctl start airflow-worker.service")
        assert remote.run("systemctl is-active airflow-worker.service").rc == 0


def airflow_units_killed(remote: Any) -> None:
    """Every Airflow unit of a host killed (SIGKILL) and kept down, as when the host dies."""
    killed = remote.run(
        "systemctl kill -s KILL 'airflow-*.service'; systemctl stop 'airflow-*.service'"
    )
    assert killed.rc == 0, killed.stderr


def test_scheduler_hosts_lost_mid_run_the_run_still_completes(
    deployed_small_lab: Lab, airflow_client: Path, tmp_path: Path
) -> None:
    """While ``ingest`` holds on one host, every Airflow process of the other hosts dies
    (schedulers, dag-processors, triggerers, api-servers, workers): the one scheduler left
    carries the run to success through the api-server left behind nginx."""
    lab = deployed_small_lab
    client = ready_client(lab, airflow_client)
    run_id, ingest = held_run(client, hold_seconds=20)
    keeper = ingest["hostname"].split(".")[0]
    victims = [
        h.name
        for h in lab.environment.hosts
        if Role.AIRFLOW_SCHEDULER in h.roles and h.name != keeper
    ]
    assert victims, "the lab has a single scheduler: nothing to lose"
    lost_at = time.monotonic()
    try:
        for victim in victims:
            airflow_units_killed(lab.host(victim, tmp_path))
        state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
        took = time.monotonic() - lost_at
        tasks = {
            t["task_id"]: (t["state"], t["hostname"].split(".")[0], t["try_number"])
            for t in client.task_instances(DAG_ID, run_id)
        }
        print(f"\nAirflow on {victims} killed mid-run: run {state} {took:.1f} s later; {tasks}")
        assert state == "success", tasks
    finally:
        for victim in victims:
            host = next(h for h in lab.environment.hosts if h.name == victim)
            units = " ".join(
                f"{unit}.service" for role, (unit, _) in COMPONENTS.items() if role in host.roles
            )
            started = lab.host(victim, tmp_path).run(f"systemctl start {units}")
            assert started.rc == 0, started.stderr
    client.wait_healthy(HEALTH_COMPONENTS, HEALTH_WAIT_SECONDS)


def test_the_postgresql_primary_killed_mid_run_the_run_completes_after_failover(
    deployed_small_lab: Lab, airflow_client: Path, tmp_path: Path
) -> None:
    """Patroni and PostgreSQL on the primary die (SIGKILL, kept down) while ``ingest``
    holds: a replica takes the leader key, the VIP follows, and Airflow's scheduler, api-
    servers and tasks reconnect; the run succeeds and its rows are in the new primary."""
    lab = deployed_small_lab
    client = ready_client(lab, airflow_client)
    run_id, _ = held_run(client, hold_seconds=20)
    leader = leader_of(lab, tmp_path)
    remote = lab.host(leader, tmp_path)
    killed_at = time.monotonic()
    killed = remote.run("systemctl kill -s KILL patroni.service && systemctl stop patroni.service")
    assert killed.rc == 0, killed.stderr
    try:

        def another_leader() -> str | None:
            found = leader_of_or_none(lab, tmp_path)
            return found if found != leader else None

        new_leader, waited = wait_for(another_leader, 120, interval=2)
        assert new_leader, f"no new PostgreSQL leader {waited:.0f} s after killing {leader}"
        state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
        took = time.monotonic() - killed_at
        tasks = {
            t["task_id"]: (t["state"], t["try_number"])
            for t in client.task_instances(DAG_ID, run_id)
        }
        print(
            f"\nPostgreSQL primary {leader} killed mid-run: leader {new_leader} after "
            f"{waited:.1f} s; run {state} {took:.1f} s after the kill; "
            f"{client.unanswered_polls} API poll(s) unanswered meanwhile; {tasks}"
        )
        assert state == "success", tasks
        rows = psql(grid_dsn(lab, airflow_client), "select count(*) from grid.feeder_load_hourly")
        assert rows.returncode == 0, rows.stderr
        assert int(rows.stdout.strip()) == SAMPLE_ROWS
    finally:
        remote.run("systemctl start patroni.service")
        wait_cluster_healthy(lab, tmp_path)
    client.wait_healthy(HEALTH_COMPONENTS, HEALTH_WAIT_SECONDS)


def leader_of_or_none(lab: Lab, tmp: Path) -> str | None:
    try:
        return leader_of(lab, tmp)
    except (AssertionError, StopIteration, RuntimeError):
        return None


# ---- rolling ----


def set_worker_concurrency(value: int) -> None:
    data = yaml.safe_load(LAB_ENV.read_text())
    data.setdefault("components", {}).setdefault("airflow", {})["worker_concurrency"] = value
    LAB_ENV.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_setting_change_rolls_host_by_host_with_no_failed_task(
    deployed_small_lab: Lab,
    airflow_client: Path,
    disposable_lab: Lab,
    tmp_path: Path,
) -> None:
    """A run is in flight when a changed setting rolls: the worker running its task gets
    the warm shutdown (SIGTERM) while the task runs and waits for it, the jobs restart
    one host at a time, and the run finishes with every task on its first try."""
    lab = deployed_small_lab
    client = ready_client(lab, airflow_client)
    wanted = lab.environment.components.airflow.worker_concurrency + 1
    set_worker_concurrency(wanted)
    # ingest holds until released: the worker holding it must be draining when released.
    run_id, ingest = held_run(client, hold_seconds=1200)
    holder_name = ingest["hostname"].split(".")[0]
    holder = lab.host(holder_name, tmp_path)
    worker_state = "systemctl show -p ActiveState --value airflow-worker.service"

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as pool:
        rolling = pool.submit(plinth, *DEPLOY, timeout=1500)
        try:

            def draining() -> bool | None:
                if rolling.done():
                    return True
                return holder.run(worker_state).stdout.strip() == "deactivating" or None

            wait_for(draining, 900, interval=1)
            assert not rolling.done(), (
                "the roll ended without stopping the worker that ran ingest:\n"
                + rolling.result().stdout[-3000:]
            )
            drain_began = time.monotonic()
            during = task_instance(client, run_id, "ingest")
            assert (during["state"], during["try_number"]) == ("running", 1), during
        finally:
            client.set_variable(RELEASE_VARIABLE, run_id)
        result = rolling.result()
    rolled = time.monotonic() - started
    client.delete_variable(RELEASE_VARIABLE)
    assert "stack lab-dc1: applied" in result.stdout, result.stdout[-3000:]
    state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
    tasks = {
        t["task_id"]: (t["state"], t["hostname"].split(".")[0], t["try_number"])
        for t in client.task_instances(DAG_ID, run_id)
    }
    print(
        f"\nsetting rolled in {rolled:.1f} s (whole `plinth up`; the worker on "
        f"{holder_name} began draining {drain_began - started:.1f} s in); run "
        f"{state}: {tasks}"
    )
    assert state == "success", tasks
    assert all(try_number == 1 for _, _, try_number in tasks.values()), tasks
    assert holder.run(worker_state).stdout.strip() == "active"
    for host in lab.environment.hosts:
        if Role.AIRFLOW_WORKER in host.roles:
            config = lab.host(host.name, tmp_path).check_output("cat /etc/airflow/airflow.cfg")
            assert f"worker_concurrency = {wanted}" in config
    client.wait_healthy(HEALTH_COMPONENTS, HEALTH_WAIT_SECONDS)
