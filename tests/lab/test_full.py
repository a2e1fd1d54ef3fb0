"""The two-datacenter rehearsal (`full` profile). Slow: run with PLINTH_FULL_LAB=1."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from operations.airflow import PREFIX
from plinth.airflow_api import HEALTH_COMPONENTS, AirflowApi, api_base
from plinth.model import AIRFLOW_ROLES, Role, load_environment
from plinth.rolling import wait_for
from plinth.topology.airflow import COMPONENTS
from plinth.wheelhouse import airflow_wheelhouse
from tests.lab.conftest import DEPLOY, LAB_ENV, Lab, full_lab_enabled, lab_secret, plinth

# Imported at module level so that `pytest --co` (CI, without the full lab) catches a
# broken import here.
from tests.lab.test_redis_cell import CLIENT_CN, tls_kwargs

pytestmark = [
    pytest.mark.lab,
    pytest.mark.full,
    pytest.mark.skipif(
        not full_lab_enabled(),
        reason="the two-DC rehearsal takes ~25 minutes; set PLINTH_FULL_LAB=1 to run it",
    ),
]


@pytest.fixture(scope="module")
def full_lab() -> Iterator[Lab]:
    # Isolated (the full profile's default): only the squid hosts have a way out.
    up = plinth("lab", "up", "--profile", "full")
    assert "(full, isolated)" in up.stdout, up.stdout
    plinth(*DEPLOY)
    yield Lab(load_environment(LAB_ENV))
    # Leave the machine with the small lab the other tests expect (or nothing).
    plinth("lab", "down")
    rules = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True, text=True)
    assert "plinth-lab" not in rules.stdout, f"lab down left DOCKER-USER rules: {rules.stdout}"


def docker_exec(container: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", f"plinth-lab-{container}", *cmd],
        capture_output=True,
        text=True,
        check=False,
    )


def test_both_stacks_deployed_and_idempotent(full_lab: Lab) -> None:
    plan = json.loads(plinth("preview", "lab", "--json").stdout)
    assert [(s["stack"], s["change_count"]) for s in plan["stacks"]] == [
        ("lab-dc1", 0),
        ("lab-dc2", 0),
    ]


def test_dc2_reads_dc1_outputs_and_names(full_lab: Lab, tmp_path: Path) -> None:
    outputs = json.loads(plinth("outputs", "lab", "--json").stdout)
    assert outputs["datacenters"]["dc1"]["vips"]["pg"]["fqdn"] == "pg.dc1.lab.plinth.internal"
    host = full_lab.host("dc2-db1", tmp_path)
    assert host.check_output("getent hosts pg.dc1.lab.plinth.internal").startswith("10.231.1.100")


def test_inter_dc_routes_survive_restart_and_partition_cuts_them(full_lab: Lab) -> None:
    assert docker_exec("dc1-db1", "ping", "-c1", "-W2", "10.231.2.11").returncode == 0
    subprocess.run(["docker", "restart", "plinth-lab-dc2-app1"], check=True, capture_output=True)
    routed = False
    for _ in range(30):
        if docker_exec("dc2-app1", "ping", "-c1", "-W1", "10.231.1.11").returncode == 0:
            routed = True
            break
    assert routed, "plinth-routes did not restore the route to dc1 after a restart"
    plinth("lab", "partition", "dc1", "dc2")
    try:
        assert docker_exec("dc1-db1", "ping", "-c1", "-W2", "10.231.2.11").returncode != 0
        assert docker_exec("dc1-db1", "ping", "-c1", "-W2", "10.231.1.12").returncode == 0
    finally:
        plinth("lab", "heal")
    assert docker_exec("dc1-db1", "ping", "-c1", "-W2", "10.231.2.11").returncode == 0


def test_certificates_of_both_datacenters(full_lab: Lab) -> None:
    status = plinth("pki", "status", "lab", "--json")
    rows = json.loads(status.stdout)["certificates"]
    assert {r["stack"] for r in rows} == {"lab-dc1", "lab-dc2"}
    assert all(r["ok"] for r in rows)
    host_rows = [r for r in rows if r["service"] == "host"]
    assert len(host_rows) == len(full_lab.environment.hosts)


def test_dc2_is_a_standby_cluster_streaming_from_dc1(full_lab: Lab, tmp_path: Path) -> None:
    from tests.lab.test_postgresql import PROBE, dsn, psql

    env = full_lab.environment
    bundle = tmp_path / "client"
    plinth("pki", "client-cert", "lab", "--cn", PROBE, "--out", str(bundle))
    vip = env.vip_serving("postgresql", "dc1")
    assert vip is not None
    dc1 = dsn(
        full_lab, bundle, env.vip_fqdn(vip), str(vip.address),
        port=str(env.components.haproxy.primary_port),
    )  # fmt: skip
    marker = f"m{time.time_ns()}"
    for sql in (
        "create table if not exists dc_probe (marker text primary key)",
        f"insert into dc_probe values ('{marker}')",
    ):
        result = psql(dc1, sql)
        assert result.returncode == 0, result.stderr

    dc2 = full_lab.host("dc2-db1", tmp_path)
    members = json.loads(dc2.check_output("patronictl -c /etc/patroni/config.yml list -f json"))
    assert sorted(m["Role"] for m in members) == ["Replica", "Replica", "Standby Leader"], members
    assert all(m["State"] in ("running", "streaming") for m in members), members
    standby_leader = next(m["Member"] for m in members if m["Role"] == "Standby Leader")

    def local_sql(host: str, sql: str) -> Any:
        return full_lab.host(host, tmp_path).run(
            f"cd / && runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}"
        )

    started = time.monotonic()
    seen = ""
    while time.monotonic() - started < 60:
        seen = local_sql(
            standby_leader, f"select count(*) from plinth_probe.dc_probe where marker='{marker}'"
        ).stdout.strip()
        if seen == "1":
            break
        time.sleep(0.5)
    assert seen == "1", f"row written in dc1 not on dc2's standby leader {standby_leader}"
    delay = time.monotonic() - started
    print(f"\nrow written through dc1's VIP visible on dc2 after {delay:.1f} s")

    refused = local_sql(standby_leader, "create table dc2_write (x int)")
    assert refused.rc != 0 and "read-only transaction" in refused.stderr, refused.stderr

    # dc1 keeps a slot for dc2's standby leader, and it is in use (WAL is retained for it).
    dc1_leader = next(
        m["Member"]
        for m in json.loads(
            full_lab.host("dc1-db1", tmp_path).check_output(
                "patronictl -c /etc/patroni/config.yml list -f json"
            )
        )
        if m["Role"] == "Leader"
    )
    active = local_sql(
        dc1_leader, "select active from pg_replication_slots where slot_name = 'standby_dc2'"
    )
    assert active.stdout.strip() == "t", (active.stdout, active.stderr)


def test_status_shows_the_standby_sites_lag(full_lab: Lab) -> None:
    result = plinth("status", "lab", "--json", check=False)
    stacks = {s["stack"]: s for s in json.loads(result.stdout)["stacks"]}
    standby = stacks["lab-dc2"]["patroni"]
    assert standby["standby"] is True and not stacks["lab-dc1"]["patroni"]["standby"]
    lag = standby["standby_of"]["lag_bytes"]
    assert standby["standby_of"]["datacenter"] == "dc1" and isinstance(lag, int), standby
    print(f"\ndc2 standby lag behind dc1: {lag} bytes")
    assert "standby cluster of dc1: lag" in plinth("status", "lab-dc2", check=False).stdout


def test_every_vip_held_by_one_node_and_status_healthy_in_both_dcs(full_lab: Lab) -> None:
    """The standby site's PostgreSQL VIP too (its local reads): the VIP check once required
    a primary everywhere and released dc2's VIP for good, which `check=False` above let by."""
    result = plinth("status", "lab", "--json", check=False)
    stacks = json.loads(result.stdout)["stacks"]
    held = {(s["stack"], v["name"]): v["holders"] for s in stacks for v in s["vips"]}
    assert ("lab-dc2", "pg") in held, held
    assert all(len(holders) == 1 for holders in held.values()), held
    assert result.returncode == 0, plinth("status", "lab", check=False).stdout[-4000:]


def test_dc2_rabbitmq_cluster_gets_dc1_topology_without_messages(
    full_lab: Lab, tmp_path: Path
) -> None:
    """DC2's own cluster runs; a queue, exchange and binding an application declared in
    DC1 reach it through `plinth rabbitmq sync-definitions`, its messages do not; a
    second sync creates nothing."""
    import pika

    from plinth.model import Role
    from tests.lab.test_rabbitmq_cluster import PROBE_USER, VHOST, parameters

    env = full_lab.environment
    dc1_nodes = [
        (h.name, env.fqdn(h), str(h.address)) for h in env.hosts_with(Role.RABBITMQ, "dc1")
    ]
    dc2 = full_lab.host(env.hosts_with(Role.RABBITMQ, "dc2")[0].name, tmp_path)

    def ctl(host: Any, args: str) -> Any:
        return json.loads(host.check_output(f"rabbitmqctl -q {args} --formatter json"))

    status = ctl(dc2, "cluster_status")
    assert sorted(status["running_nodes"]) == sorted(
        f"rabbit@{env.fqdn(h)}" for h in env.hosts_with(Role.RABBITMQ, "dc2")
    ), status

    bundle = tmp_path / "mq"
    plinth("pki", "client-cert", "lab", "--cn", PROBE_USER, "--out", str(bundle))
    params = parameters(full_lab, bundle, dc1_nodes[0])
    params.heartbeat = 0  # the connection idles while the sync runs
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare("sync-probe-x", "direct", durable=True)
    channel.queue_declare("sync-probe-q", durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind("sync-probe-q", "sync-probe-x", routing_key="sync")
    channel.basic_publish("sync-probe-x", "sync", b"not for dc2", mandatory=True)
    # A server-named exclusive queue of this connection: never copied.
    private = channel.queue_declare("", exclusive=True).method.queue
    try:
        started = time.monotonic()
        dry = plinth("rabbitmq", "sync-definitions", "lab", "--dry")
        first = plinth("rabbitmq", "sync-definitions", "lab")
        seconds = time.monotonic() - started
    finally:
        connection.close()
    print(f"\n{dry.stdout}{first.stdout}dry run + sync: {seconds:.1f} s")
    for output in (dry.stdout, first.stdout):
        assert f"+ queue {VHOST}/sync-probe-q (quorum)" in output, output
        assert f"+ exchange {VHOST}/sync-probe-x (direct)" in output, output
        assert f"+ binding {VHOST}/sync-probe-x -> queue sync-probe-q (key 'sync')" in output
        assert private not in output.replace(f"left out queue {VHOST}/{private}", "")
        assert "password" not in output
    assert "lab-dc2 (through" in first.stdout and "created" in first.stdout

    queues = ctl(dc2, f"list_queues -p {VHOST} name type durable messages")
    assert {"name": "sync-probe-q", "type": "quorum", "durable": True, "messages": 0} in queues
    assert not any(q["name"] == private for q in queues)
    exchanges = ctl(dc2, f"list_exchanges -p {VHOST} name type durable")
    assert {"name": "sync-probe-x", "type": "direct", "durable": True} in exchanges
    bindings = ctl(dc2, f"list_bindings -p {VHOST} source_name destination_name routing_key")
    assert {
        "source_name": "sync-probe-x", "destination_name": "sync-probe-q", "routing_key": "sync"
    } in bindings  # fmt: skip
    dc1 = full_lab.host(dc1_nodes[0][0], tmp_path)
    source: list[dict[str, Any]] = []
    for _ in range(10):  # the message stayed in dc1 (counters may lag a moment)
        source = ctl(dc1, f"list_queues -p {VHOST} name messages")
        if {"name": "sync-probe-q", "messages": 1} in source:
            break
        time.sleep(1)
    assert {"name": "sync-probe-q", "messages": 1} in source, source

    again = plinth("rabbitmq", "sync-definitions", "lab")
    print(again.stdout)
    assert "lab-dc2 (through" in again.stdout
    assert "created 0 queue(s), 0 exchange(s), 0 binding(s)" in again.stdout, again.stdout


MIRROR_RELEASE = "http://deb.debian.org/debian/dists/bookworm/Release"


def test_a_non_edge_host_cannot_reach_the_outside_directly(full_lab: Lab, tmp_path: Path) -> None:
    for name in ("dc1-db1", "dc1-app1", "dc2-db2"):
        host = full_lab.host(name, tmp_path)
        assert host.check_output("ip -4 route show default") == "", f"{name} has a default route"
        direct = host.run(
            f"curl -sS --noproxy '*' --max-time 5 -o /dev/null {MIRROR_RELEASE}"
        )  # fmt: skip
        assert direct.rc != 0, f"{name} reached the mirror directly"
        # Its own DC still answers, and so does the other DC (through the router).
        other = "10.231.2.11" if name.startswith("dc1") else "10.231.1.11"
        assert host.run(f"ping -c1 -W2 {other}").rc == 0, f"{name} cannot reach {other}"


def test_an_edge_host_reaches_the_mirror(full_lab: Lab, tmp_path: Path) -> None:
    for name in ("dc1-edge1", "dc2-edge2"):
        host = full_lab.host(name, tmp_path)
        assert host.check_output("ip -4 route show default").startswith("default via 10.231.250.1")
        code = host.check_output(
            "curl -sS --noproxy '*' --max-time 15 -o /dev/null -w '%{http_code}' " + MIRROR_RELEASE
        )
        assert code == "200", f"{name}: {code}"
        # The way out goes direct: no apt proxy on a squid host.
        assert not host.file("/etc/apt/apt.conf.d/80plinth-proxy").exists


def test_apt_on_a_non_edge_host_installs_through_squid(full_lab: Lab, tmp_path: Path) -> None:
    app = full_lab.host("dc1-app1", tmp_path)
    # By now keepalived runs: the detection picks the DC's edge VIP.
    assert app.check_output("/usr/local/lib/plinth/apt-proxy-detect") == (
        "http://edge.dc1.lab.plinth.internal:3128"
    )
    app.run("apt-get purge -y -q hello")
    try:
        installed = app.run(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends hello"
        )
        assert installed.rc == 0, installed.stdout + installed.stderr
        assert app.run("hello").stdout.strip() == "Hello, world!"
    finally:
        app.run("apt-get purge -y -q hello")
    logs = "".join(
        full_lab.host(edge, tmp_path)
        .run("grep -h 'pool/main/h/hello/hello_' /var/log/squid/access.log")
        .stdout
        for edge in ("dc1-edge1", "dc1-edge2")
    )
    assert "10.231.1.31" in logs, f"the .deb did not go through dc1's squid: {logs!r}"


def test_dc2_redis_nodes_replicate_dc1s_master_never_promoted(
    full_lab: Lab, tmp_path: Path
) -> None:
    env = full_lab.environment
    settings = env.components.redis
    name = f"{settings.master_name_prefix}-dc1"
    bundle = tmp_path / "redis-client"
    plinth("pki", "client-cert", "lab", "--cn", CLIENT_CN, "--out", str(bundle))
    password, sentinel_password = (
        lab_secret("redis-default-password"),
        lab_secret("redis-sentinel-password"),
    )
    dc1_sentinel = redis.Redis(
        host=str(env.hosts_with(Role.SENTINEL, "dc1")[0].address),
        port=settings.sentinel_port,
        password=sentinel_password,
        decode_responses=True,
        **tls_kwargs(bundle),
    )
    # redis-py's sentinel_get_master_addr_by_name passes `once=True`, which its own reply
    # parser rejects on a plain client: send the command itself.
    # (redis-py's execute_command and sentinel_slaves are unannotated: called through types.)
    execute_command = cast("Callable[..., list[str]]", dc1_sentinel.execute_command)
    master_host, master_port = execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", name)
    client = tls_kwargs(bundle) | {"password": password, "decode_responses": True}
    master = redis.Redis(host=master_host, port=int(master_port), **client)
    key = f"plinth:dc2-probe:{time.time_ns()}"
    assert master.set(key, "written-in-dc1") is True
    written = time.monotonic()

    dc2 = [str(h.address) for h in env.hosts_with(Role.REDIS, "dc2")]
    for address in dc2:
        node = redis.Redis(host=address, port=settings.port, **client)
        while node.get(key) != "written-in-dc1":
            assert time.monotonic() - written < 30, f"key written on dc1's master not on {address}"
            time.sleep(0.1)
        info = cast("dict[str, Any]", node.info("replication"))
        assert info["role"] == "slave", (address, info)
        assert info["master_host"] == master_host and info["master_link_status"] == "up", info
        assert node.config_get("replica-priority") == {"replica-priority": "0"}
    visible = time.monotonic() - written
    print(f"\nkey written on dc1's master read on all dc2 nodes after {visible:.2f} s")

    # dc1's Sentinels know them (through the master's INFO) with priority 0
    # (SENTINEL SLAVES: redis-py's name for SENTINEL REPLICAS).
    sentinel_slaves = cast("Callable[[str], list[dict[str, Any]]]", dc1_sentinel.sentinel_slaves)
    deadline = time.monotonic() + 30
    while True:
        listed = {str(r["ip"]): r for r in sentinel_slaves(name)}
        if set(dc2) <= set(listed) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(dc2) <= set(listed), sorted(listed)
    assert all(str(listed[a].get("slave-priority")) == "0" for a in dc2), listed
    # dc2's own Sentinels stay stopped: no second cell around a replica.
    sentinel_unit = env.debian.key_value_store.sentinel_unit  # redis-sentinel, valkey-sentinel
    assert docker_exec("dc2-db1", "systemctl", "is-active", sentinel_unit).stdout.strip() != (
        "active"
    )
    status = json.loads(plinth("status", "lab-dc2", "--json", check=False).stdout)
    cell = status["stacks"][0]["redis"]
    assert cell["follows"] == {"datacenter": "dc1", "master": master_host}, cell
    assert cell["problems"] == [], cell


def dc1_airflow(lab: Lab, tmp_path: Path) -> AirflowApi:
    """DC1's Airflow through its nginx, as an operator with a platform certificate."""
    bundle = tmp_path / "client"
    plinth("pki", "client-cert", "lab", "--cn", "grid-operator", "--out", str(bundle))
    client = AirflowApi(
        base=api_base(lab.environment, "dc1"),
        ca=bundle / "ca.crt",
        cert=bundle / "grid-operator.crt",
        key=bundle / "grid-operator.key",
    )
    client.wait_healthy(HEALTH_COMPONENTS, 300)
    client.login(lab_secret("airflow-admin-password"))
    client.open_dag("feeder_load_hourly", 300)
    return client


def test_airflow_runs_in_dc1_and_dc2_carries_the_same_installation_stopped(
    full_lab: Lab, tmp_path: Path
) -> None:
    """DC1 (the active site) runs the sample DAG through its nginx; DC2's app hosts hold
    the same venv and a configuration of their own DC (its PostgreSQL VIP and brokers),
    every unit installed, stopped and disabled: they start only on a DC failover."""
    env = full_lab.environment
    client = dc1_airflow(full_lab, tmp_path)
    run_id = client.trigger("feeder_load_hourly")
    assert client.wait_run("feeder_load_hourly", run_id, 600) == "success"

    venv = f"{PREFIX}/venv-{airflow_wheelhouse(env).tag}"
    pg_vip = env.vip_serving("postgresql", "dc2")
    assert pg_vip is not None
    standby_hosts = [h for h in env.hosts_in("dc2") if any(r in h.roles for r in AIRFLOW_ROLES)]
    assert len(standby_hosts) == 2
    for host in standby_hosts:
        remote = full_lab.host(host.name, tmp_path)
        assert remote.check_output(f"readlink -f {PREFIX}/current") == venv
        config = remote.check_output("cat /etc/airflow/airflow.cfg")
        assert env.vip_fqdn(pg_vip) in config, host.name
        assert ".dc2." in config.split("broker_url", 1)[1].splitlines()[0], host.name
        for role, (unit, _) in COMPONENTS.items():
            if role not in host.roles:
                continue
            assert remote.run(f"systemctl is-active {unit}.service").stdout.strip() in (
                "inactive",
                "unknown",
            ), (host.name, unit)
            assert remote.run(f"systemctl is-enabled {unit}.service").stdout.strip() == (
                "disabled"
            ), (host.name, unit)

    status = plinth("status", "lab", check=False).stdout
    assert "airflow (active): healthy" in status, status[-3000:]
    assert "airflow (standby): healthy" in status, status[-3000:]


def test_a_dc1_app_host_stopped_mid_run_the_run_still_completes(
    full_lab: Lab, tmp_path: Path
) -> None:
    """The stateless tier apart: the DC1 app host that is *not* running the held
    ``ingest`` is stopped outright (its scheduler, dag-processor, triggerer, api-server
    and worker go with it); the other app host carries the run to success."""
    env = full_lab.environment
    client = dc1_airflow(full_lab, tmp_path)
    run_id = client.trigger("feeder_load_hourly", {"hold_seconds": 30})

    def ingest_host() -> str | None:
        for task in client.task_instances("feeder_load_hourly", run_id):
            if task["task_id"] == "ingest" and task["state"] == "running":
                return str(task.get("hostname") or "").split(".")[0] or None
        return None

    keeper, _ = wait_for(ingest_host, 300)
    assert keeper, "ingest never ran"
    app_hosts = [h.name for h in env.hosts_in("dc1") if any(r in h.roles for r in AIRFLOW_ROLES)]
    victim = next(name for name in app_hosts if name != keeper)
    stopped_at = time.monotonic()
    subprocess.run(["docker", "stop", "--time", "60", f"plinth-lab-{victim}"], check=True)
    try:
        state = client.wait_run("feeder_load_hourly", run_id, 600)
        took = time.monotonic() - stopped_at
        tasks = {
            t["task_id"]: (t["state"], str(t["hostname"]).split(".")[0], t["try_number"])
            for t in client.task_instances("feeder_load_hourly", run_id)
        }
        print(f"\napp host {victim} stopped mid-run: run {state} {took:.1f} s later; {tasks}")
        assert state == "success", tasks
    finally:
        subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True)
        full_lab.wait_for_ssh(victim, tmp_path)
    client.wait_healthy(HEALTH_COMPONENTS, 300)
    # The host came back by itself: its /etc/hosts is the lab's own, not the engine's,
    # so nothing needs a deploy.
    preview = plinth("preview", "lab-dc1", "--expect-no-changes", check=False)
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-2000:]
