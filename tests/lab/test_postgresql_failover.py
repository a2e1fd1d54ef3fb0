"""The cell under failure, with a client writing through the VIP all along: the primary's
container stopped, the keepalived MASTER stopped. Figures are printed (pytest -s)."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plinth.model import Role
from tests.lab.conftest import Lab
from tests.lab.test_postgresql import client_bundle, dsn, leader_of, patroni_members, psql

pytestmark = pytest.mark.lab
__all__ = ["client_bundle"]  # the session fixture, shared with test_postgresql


@dataclass
class Writer:
    """Inserts one row per attempt through the VIP; records what was committed, and when."""

    conninfo: str
    committed: list[int] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            result = psql(self.conninfo, "insert into failover_probe default values returning id")
            if result.returncode == 0 and result.stdout.strip():
                self.committed.append(int(result.stdout.strip().splitlines()[-1]))
                self.successes.append(time.monotonic())
            time.sleep(0.1)

    def longest_gap(self, since: float) -> float:
        times = [t for t in self.successes if t >= since - 5]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def vip_conninfo(lab: Lab, bundle: Path) -> str:
    env = lab.environment
    vip = next(v for v in env.vips if "postgresql" in v.services)
    return dsn(
        lab, bundle, env.vip_fqdn(vip), str(vip.address),
        port=str(env.components.haproxy.primary_port),
    )  # fmt: skip


def vip_holder(lab: Lab, tmp: Path) -> str | None:
    vip = next(v for v in lab.environment.vips if "postgresql" in v.services)
    for host in lab.environment.hosts_with(Role.KEEPALIVED):
        try:
            out = lab.host(host.name, tmp).run("ip -4 -o addr show").stdout
        except RuntimeError:  # ssh could not reach this container
            continue
        if f" {vip.address}/" in out:
            return host.name
    return None


def wait_cluster_healthy(lab: Lab, tmp: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        members = patroni_members(lab, tmp)
        running = [m for m in members or [] if m["State"] in ("running", "streaming")]
        if len(running) == 3:
            return
        time.sleep(2)
    raise AssertionError("the Patroni cluster did not come back to 3 running members")


def test_writes_through_the_vip_survive_the_primary_container_stopping(
    deployed_small_lab: Lab, client_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    conninfo = vip_conninfo(lab, client_bundle)
    created = psql(conninfo, "create table if not exists failover_probe (id bigserial primary key)")
    assert created.returncode == 0, created.stderr
    leader = leader_of(lab, tmp_path)
    survivor = next(h.name for h in lab.environment.hosts if h.name != leader)
    writer = Writer(conninfo)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        time.sleep(3)
        assert writer.committed, "no write went through the VIP before the failure"
        stopped_at = time.monotonic()
        subprocess.run(["docker", "stop", "-t", "10", f"plinth-lab-{leader}"], check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [t for t in writer.successes if t > stopped_at]:
            time.sleep(0.5)
        time.sleep(2)
    finally:
        writer.stop.set()
        thread.join(timeout=30)
    try:
        resumed = [t for t in writer.successes if t > stopped_at]
        assert resumed, "writes did not resume through the VIP within 60 s"
        gap = writer.longest_gap(stopped_at)
        print(f"\nprimary {leader} stopped: write gap {gap:.1f} s")
        new_leader = leader_of(lab, tmp_path) if survivor else None
        assert new_leader != leader
        # not one committed row lost
        ids = psql(conninfo, "select id from failover_probe")
        assert ids.returncode == 0, ids.stderr
        present = {int(x) for x in ids.stdout.split()}
        lost = [i for i in writer.committed if i not in present]
        assert lost == [], f"committed rows lost: {lost[:10]}"
    finally:
        # the old primary comes back as a replica, whatever happened above
        subprocess.run(["docker", "start", f"plinth-lab-{leader}"], check=True)
        lab.wait_for_ssh(leader, tmp_path)
        wait_cluster_healthy(lab, tmp_path)


def test_vip_moves_when_the_keepalived_master_stops(
    deployed_small_lab: Lab, client_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    holder = vip_holder(lab, tmp_path)
    assert holder is not None, "nobody holds the pg VIP"
    remote = lab.host(holder, tmp_path)
    remote.run("systemctl stop keepalived")
    started = time.monotonic()
    try:
        new_holder = None
        while time.monotonic() - started < 30:
            new_holder = vip_holder(lab, tmp_path)
            if new_holder not in (None, holder):
                break
            time.sleep(0.2)
        moved = time.monotonic() - started
        assert new_holder not in (None, holder), "the VIP did not move within 30 s"
        print(f"\nkeepalived MASTER {holder} stopped: VIP on {new_holder} after {moved:.1f} s")
        result = psql(vip_conninfo(lab, client_bundle), "select 1")
        assert result.returncode == 0, result.stderr
    finally:
        remote.run("systemctl start keepalived")
