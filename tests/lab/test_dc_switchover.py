"""The planned DC switchover drilled in the two-DC `full` lab (issue 14): `plinth
dc-switchover lab --to dc2 --yes` while a writer inserts rows through dc1's PostgreSQL
VIP, then the same back to dc1. Slow: run with PLINTH_FULL_LAB=1.

What it shows, each way: every row the writer had acknowledged is in the new active site;
the new site is writable and the old one streams from it; the Redis master is in the new
site and the old site's nodes replicate it; Airflow runs in the new site only;
inventory/lab.yaml names it; a second run finds the goal and does nothing. The write gap
(last row acknowledged through the old site's VIP to the first through the new one's) is
printed, not asserted (issue 14's target is 30 s).

The module brings up its own full lab through test_full's fixture (and takes it down).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from plinth.model import Environment, Role, load_environment
from plinth.topology.airflow import COMPONENTS
from tests.lab.conftest import LAB_ENV, Lab, full_lab_enabled, lab_secret, plinth
from tests.lab.partition import TABLE, Writer, connect, create_table
from tests.lab.test_full import docker_exec, full_lab
from tests.lab.test_postgresql import PROBE, dsn
from tests.lab.test_redis_cell import CLIENT_CN, tls_kwargs

__all__ = ["full_lab"]  # the module fixture of test_full: a fresh two-DC lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.full,
    pytest.mark.skipif(
        not full_lab_enabled(),
        reason="the two-DC rehearsal takes ~25 minutes; set PLINTH_FULL_LAB=1 to run it",
    ),
]

SWITCHOVER_TIMEOUT = 3600
"""The command converges both sites (two `plinth up` runs) besides the switch itself."""


def site_dsn(env: Environment, bundle: Path, dc: str) -> str:
    """The probe role through ``dc``'s PostgreSQL VIP and haproxy's primary port."""
    vip = env.vip_serving("postgresql", dc)
    assert vip is not None, dc
    return dsn(
        Lab(env), bundle, env.vip_fqdn(vip), str(vip.address),
        port=str(env.components.haproxy.primary_port),
    )  # fmt: skip


def patroni_list(host: str) -> list[dict[str, Any]]:
    result = docker_exec(host, "patronictl", "-c", "/etc/patroni/config.yml", "list", "-f", "json")
    assert result.returncode == 0, result.stderr
    return cast("list[dict[str, Any]]", json.loads(result.stdout))


def first_pg_host(env: Environment, dc: str) -> str:
    return env.hosts_with(Role.POSTGRESQL, dc)[0].name


def wait_following(env: Environment, follower: str, active: str, seconds: float = 120) -> None:
    """``follower``'s standby leader streams, and ``active``'s primary has its slot in use."""
    slot = f"standby_{follower}"
    deadline = time.monotonic() + seconds
    while True:
        members = patroni_list(first_pg_host(env, follower))
        leader = next((m for m in members if m["Role"] == "Standby Leader"), None)
        primary = next(
            (
                m["Member"]
                for m in patroni_list(first_pg_host(env, active))
                if m["Role"] == "Leader"
            ),
            None,
        )
        used = ""
        if primary is not None:
            used = docker_exec(
                primary, "runuser", "-u", "postgres", "--", "psql", "-XAtc",
                f"select active from pg_replication_slots where slot_name = '{slot}'",
            ).stdout.strip()  # fmt: skip
        if leader is not None and leader["State"] == "streaming" and used == "t":
            return
        assert time.monotonic() < deadline, (
            f"{follower} does not stream from {active}: {members}; slot {slot} active: {used!r}"
        )
        time.sleep(2)


def redis_roles(env: Environment, bundle: Path) -> dict[str, dict[str, Any]]:
    """Every data node's INFO replication, by host name."""
    client = tls_kwargs(bundle) | {
        "password": lab_secret("redis-default-password"),
        "decode_responses": True,
    }
    out = {}
    for host in env.hosts_with(Role.REDIS):
        node = redis.Redis(host=str(host.address), port=env.components.redis.port, **client)
        out[host.name] = cast("dict[str, Any]", node.info("replication"))
    return out


def airflow_active(env: Environment, dc: str) -> dict[str, bool]:
    """``host/unit`` -> active, for every Airflow unit of ``dc``."""
    out = {}
    for host in env.hosts_in(dc):
        for role, (unit, _) in COMPONENTS.items():
            if role in host.roles:
                state = docker_exec(host.name, "systemctl", "is-active", unit).stdout.strip()
                out[f"{host.name}/{unit}"] = state == "active"
    return out


@pytest.fixture()
def lab_model() -> Iterator[str]:
    """inventory/lab.yaml as the lab wrote it (no `active_datacenter`: dc1); put back once
    the lab is at dc1 again (the command leaves an `active_datacenter: dc1` line)."""
    original = LAB_ENV.read_text()
    yield original
    if load_environment(LAB_ENV).active_site == "dc1":
        LAB_ENV.write_text(original)


def switch(
    env: Environment, bundles: tuple[Path, Path], source: str, target: str, original: str
) -> dict[str, float]:
    """``dc-switchover --to target`` under a writer through ``source``'s VIP (and one through
    ``target``'s, which succeeds once it is promoted); then every check of the module
    docstring. Returns the figures."""
    bundle, redis_bundle = bundles  # PostgreSQL's probe role, Redis's probe client
    old, new = site_dsn(env, bundle, source), site_dsn(env, bundle, target)
    create_table(old)
    through_old = Writer(old).start()
    through_new = Writer(new).start()
    time.sleep(5)
    assert through_old.acknowledged, f"the writer through {source}'s VIP wrote nothing"
    started = time.monotonic()
    run = plinth("dc-switchover", "lab", "--to", target, "--yes", timeout=SWITCHOVER_TIMEOUT)
    took = time.monotonic() - started
    print(f"\ndc-switchover --to {target} ({took:.0f} s):\n{run.stdout}")
    time.sleep(5)
    through_old.finish()
    through_new.finish()
    assert any(line.startswith("done: ") for line in run.stdout.splitlines()), run.stdout
    assert f"it names {target} active now" in run.stdout, run.stdout

    # Zero loss: every row acknowledged through the old site is in the new one.
    assert through_old.acknowledged
    lost = through_old.lost(new)
    assert lost == [], f"{len(lost)} acknowledged rows missing in {target}: {lost[:5]}"
    assert through_new.acknowledged, f"{target} took no write through its VIP"
    assert through_new.lost(new) == []
    last_old = through_old.times()[-1]
    first_new = through_new.times()[0]
    gap = first_new - last_old
    print(
        f"rows acknowledged: {len(through_old.acknowledged)} through {source}, "
        f"{len(through_new.acknowledged)} through {target}; write gap {gap:.1f} s"
    )

    # The new site is writable, the old one streams from it.
    with connect(new) as conn:
        conn.execute(f"insert into {TABLE} (token) values (%s)", (f"after-{time.time_ns()}",))
    wait_following(env, source, target)
    roles = {m["Role"] for m in patroni_list(first_pg_host(env, source))}
    assert "Leader" not in roles, roles

    # Redis: the master in the new site, the old site's nodes replicate it.
    nodes = redis_roles(env, redis_bundle)
    targets = {str(h.address) for h in env.hosts_with(Role.REDIS, target)}
    masters = [name for name, info in nodes.items() if info["role"] == "master"]
    assert len(masters) == 1 and masters[0].startswith(f"{target}-"), nodes
    master_address = next(
        str(h.address) for h in env.hosts_with(Role.REDIS) if h.name == masters[0]
    )
    for name, info in nodes.items():
        if name != masters[0]:
            assert info["master_host"] == master_address, (name, info)
            assert info["master_link_status"] == "up", (name, info)
    assert master_address in targets

    # Airflow in the new site only.
    assert all(airflow_active(env, target).values()), airflow_active(env, target)
    assert not any(airflow_active(env, source).values()), airflow_active(env, source)

    # The model names the new site, and only that line changed.
    assert load_environment(LAB_ENV).active_site == target
    added = set(LAB_ENV.read_text().splitlines()) - set(original.splitlines())
    assert added <= {f"active_datacenter: {target}"}, added

    # A second run finds the goal and does nothing.
    again = plinth("dc-switchover", "lab", "--to", target, "--yes", timeout=600)
    assert "nothing to do: the goal is already reached" in again.stdout, again.stdout
    assert "\n-> " not in again.stdout, again.stdout
    return {"seconds": took, "write_gap": gap, "rows": float(len(through_old.acknowledged))}


def test_switchover_to_dc2_and_back_loses_no_acknowledged_row(
    full_lab: Lab, tmp_path: Path, lab_model: str
) -> None:
    env = full_lab.environment
    bundles = (tmp_path / "client", tmp_path / "redis-client")
    plinth("pki", "client-cert", "lab", "--cn", PROBE, "--out", str(bundles[0]))
    plinth("pki", "client-cert", "lab", "--cn", CLIENT_CN, "--out", str(bundles[1]))
    assert env.active_site == "dc1"

    dry = plinth("dc-switchover", "lab", "--to", "dc2", "--dry")
    # (a sync of RabbitMQ definitions into dc2 may come first: Celery declares its queues
    # in dc1 at run time)
    assert ". dc1: stop-airflow [" in dry.stdout and "dc2: promote-postgresql" in dry.stdout
    assert LAB_ENV.read_text() == lab_model  # --dry changed nothing

    there = switch(env, bundles, "dc1", "dc2", lab_model)
    back = switch(load_environment(LAB_ENV), bundles, "dc2", "dc1", lab_model)
    print(f"\nswitchover dc1 -> dc2: {there}\nswitchover dc2 -> dc1: {back}")
