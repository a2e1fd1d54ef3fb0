"""Rolling a restart-requiring PostgreSQL parameter: gated, replicas first, one switchover."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from plinth.model import PatroniSettings, Role
from tests.lab.conftest import DEPLOY, LAB_ENV, REPO, Baseline, Lab, plinth
from tests.lab.test_postgresql import client_bundle, leader_of, psql
from tests.lab.test_postgresql_failover import Writer, vip_conninfo, wait_cluster_healthy

pytestmark = pytest.mark.lab
__all__ = ["client_bundle"]


def patronictl(lab: Lab, tmp: Path, args: str) -> Any:
    first = lab.environment.hosts_with(Role.POSTGRESQL)[0].name
    out = lab.host(first, tmp).check_output(f"patronictl -c /etc/patroni/config.yml {args}")
    return json.loads(out) if "-f json" in args else out


def leader_timeline(lab: Lab, tmp: Path) -> int:
    members = patronictl(lab, tmp, "list -f json")
    return int(next(m["TL"] for m in members if m["Role"] == "Leader"))


def set_shared_buffers(value: str) -> None:
    data = yaml.safe_load(LAB_ENV.read_text())
    parameters = dict(PatroniSettings().parameters, shared_buffers=value)
    data.setdefault("components", {}).setdefault("patroni", {})["parameters"] = parameters
    LAB_ENV.write_text(yaml.safe_dump(data, sort_keys=False))


def shared_buffers(lab: Lab, tmp: Path, skip: str = "") -> dict[str, str]:
    return {
        h.name: lab.host(h.name, tmp).check_output(
            "cd / && runuser -u postgres -- psql -XAtc 'show shared_buffers'"
        )
        for h in lab.environment.hosts_with(Role.POSTGRESQL)
        if h.name != skip
    }


def test_rolling_restart_refuses_while_a_replica_is_down(
    deployed_small_lab: Lab, lab_model: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader = leader_of(lab, tmp_path)
    victim = next(h.name for h in lab.environment.hosts_with(Role.POSTGRESQL) if h.name != leader)
    before = shared_buffers(lab, tmp_path)
    lab.host(victim, tmp_path).run("systemctl stop patroni")
    limit = [a for h in lab.environment.hosts if h.name != victim for a in ("--limit", h.name)]
    try:
        set_shared_buffers("112MB")
        # `plinth up` would start the stopped member first (the deploy repairs it); a
        # plain pyinfra run limited to the other hosts must still refuse to roll.
        result = subprocess.run(
            ["pyinfra", "inventory/lab-dc1.py", "deploy.py", "-y", *limit],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        refusal = [line for line in output.splitlines() if "refused:" in line]
        assert refusal and victim in refusal[0] and "nothing was changed" in refusal[0], output
        print(f"\n{refusal[0].strip()}")
        config = patronictl(lab, tmp_path, "show-config")
        assert "shared_buffers: 128MB" in config  # nothing was changed
        after = shared_buffers(lab, tmp_path, skip=victim)
        assert after == {k: v for k, v in before.items() if k != victim}
    finally:
        lab.host(victim, tmp_path).run("systemctl start patroni")
        wait_cluster_healthy(lab, tmp_path)
    undoable_lab.undone()


def test_restart_parameter_rolls_with_exactly_one_switchover(
    deployed_small_lab: Lab, disposable_lab: Lab, client_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    wait_cluster_healthy(lab, tmp_path)
    timeline_before = leader_timeline(lab, tmp_path)
    leader_before = leader_of(lab, tmp_path)
    conninfo = vip_conninfo(lab, client_bundle)
    assert (
        psql(
            conninfo, "create table if not exists failover_probe (id bigserial primary key)"
        ).returncode
        == 0
    )
    writer = Writer(conninfo)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        time.sleep(2)
        set_shared_buffers("112MB")
        started = time.monotonic()
        result = plinth(*DEPLOY, timeout=900)
        rolled = time.monotonic() - started
        time.sleep(2)
    finally:
        writer.stop.set()
        thread.join(timeout=30)
    assert "stack lab-dc1: applied" in result.stdout
    assert set(shared_buffers(lab, tmp_path).values()) == {"112MB"}
    members = patronictl(lab, tmp_path, "list -f json")
    assert not any(m.get("Pending restart") for m in members), members
    # One promotion = one new timeline (read from the members, not the DCS history key,
    # which the leader refreshes on a later loop).
    roll_notes = [line for line in result.stdout.splitlines() if "switchover" in line]
    assert leader_timeline(lab, tmp_path) == timeline_before + 1, (roll_notes, members)
    assert leader_of(lab, tmp_path) != leader_before
    gap = writer.longest_gap(started)
    print(f"\nrolling restart: {rolled:.1f} s for `plinth up`, write gap {gap:.1f} s")
    present = {int(x) for x in psql(conninfo, "select id from failover_probe").stdout.split()}
    assert [i for i in writer.committed if i not in present] == []
    assert plinth("preview", "lab", "--expect-no-changes", check=False).returncode == 0
