"""The two-datacenter rehearsal (`full` profile). Slow: run with PLINTH_FULL_LAB=1."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.model import load_environment
from tests.lab.conftest import LAB_ENV, Lab, full_lab_enabled, plinth

pytestmark = [
    pytest.mark.lab,
    pytest.mark.full,
    pytest.mark.skipif(
        not full_lab_enabled(),
        reason="the full two-DC rehearsal adds ~6 minutes; set PLINTH_FULL_LAB=1 to run it",
    ),
]


@pytest.fixture(scope="module")
def full_lab() -> Iterator[Lab]:
    plinth("lab", "up", "--profile", "full")
    plinth("up", "lab", "--yes")
    yield Lab(load_environment(LAB_ENV))
    # Leave the machine with the small lab the other tests expect (or nothing).
    plinth("lab", "down")


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


def test_dc2_redis_nodes_replicate_dc1s_master_never_promoted(
    full_lab: Lab, tmp_path: Path
) -> None:
    import redis

    from plinth.model import Role
    from tests.lab.test_redis_cell import CLIENT_CN, secret, tls_kwargs

    env = full_lab.environment
    settings = env.components.redis
    name = f"{settings.master_name_prefix}-dc1"
    bundle = tmp_path / "redis-client"
    plinth("pki", "client-cert", "lab", "--cn", CLIENT_CN, "--out", str(bundle))
    password, sentinel_password = (
        secret("redis-default-password"),
        secret("redis-sentinel-password"),
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
    master_host, master_port = dc1_sentinel.execute_command(
        "SENTINEL GET-MASTER-ADDR-BY-NAME", name
    )
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
        info = node.info("replication")
        assert info["role"] == "slave", (address, info)
        assert info["master_host"] == master_host and info["master_link_status"] == "up", info
        assert node.config_get("replica-priority") == {"replica-priority": "0"}
    visible = time.monotonic() - written
    print(f"\nkey written on dc1's master read on all dc2 nodes after {visible:.2f} s")

    # dc1's Sentinels know them (through the master's INFO) with priority 0
    # (SENTINEL SLAVES: redis-py's name for SENTINEL REPLICAS).
    deadline = time.monotonic() + 30
    while True:
        listed = {str(r["ip"]): r for r in dc1_sentinel.sentinel_slaves(name)}
        if set(dc2) <= set(listed) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(dc2) <= set(listed), sorted(listed)
    assert all(str(listed[a].get("slave-priority")) == "0" for a in dc2), listed
    # dc2's own Sentinels stay stopped: no second cell around a replica.
    assert docker_exec("dc2-db1", "systemctl", "is-active", "redis-sentinel").stdout.strip() != (
        "active"
    )
    status = json.loads(plinth("status", "lab-dc2", "--json", check=False).stdout)
    cell = status["stacks"][0]["redis"]
    assert cell["follows"] == {"datacenter": "dc1", "master": master_host}, cell
    assert cell["problems"] == [], cell
