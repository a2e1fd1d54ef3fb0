"""Stacks and the pyinfra inventories derived from the model (no hosts contacted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth.cli import main
from plinth.model import load_environment
from plinth.stacks import StackError, pyinfra_groups, resolve, write_inventory_files


def test_environment_name_means_every_datacenter_in_order(project: Path) -> None:
    assert [s.name for s in resolve("example-prod")] == ["example-prod-dc1", "example-prod-dc2"]
    assert [s.datacenter for s in resolve("example-prod-dc2")] == ["dc2"]


def test_unknown_stack_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(StackError, match=r"unknown stack 'example-prod-dc7'.*example-prod-dc1"):
        resolve("example-prod-dc7")
    with pytest.raises(StackError, match=r"unknown stack or environment 'nope'.*example-prod"):
        resolve("nope")


def test_inventory_groups_are_named_after_roles(project: Path) -> None:
    env_file = project / "inventory" / "example-prod.yaml"
    (inv,) = [
        p
        for p in write_inventory_files(load_environment(env_file), env_file)
        if p.name == "example-prod-dc2.py"
    ]
    groups = pyinfra_groups(inv)
    hosts, all_data = groups["all"]
    assert [h for h, _ in hosts][:3] == ["dc2-db1", "dc2-db2", "dc2-db3"]
    assert all_data["plinth_stack"] == "example-prod-dc2"
    assert groups["etcd"] == ["dc2-db1", "dc2-db2", "dc2-db3"]
    assert groups["airflow_dag_processor"] == ["dc2-app1"]
    assert "dc1-db1" not in {h for h, _ in hosts}
    db1 = dict(hosts)["dc2-db1"]
    assert db1["ssh_hostname"] == "10.40.2.11"
    assert db1["ssh_user"] == "plinth" and db1["_sudo"] is True


def test_pyinfra_reads_the_generated_inventory(project: Path) -> None:
    """pyinfra's own loader sees the role groups: `pyinfra inventory/<stack>.py` works."""
    env_file = project / "inventory" / "example-prod.yaml"
    write_inventory_files(load_environment(env_file), env_file)
    code = (
        "from pyinfra.api import State\n"
        "from pyinfra.context import ctx_state\n"
        "from pyinfra_cli.inventory import make_inventory\n"
        "with ctx_state.use(State()):\n"
        "    inv = make_inventory('inventory/example-prod-dc1.py', cwd='.')\n"
        "print(sorted(h.name for h in inv.get_group('rabbitmq')))\n"
        "print(inv.get_host('dc1-edge1').data.plinth_datacenter)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["['dc1-db1', 'dc1-db2', 'dc1-db3']", "dc1"]


def test_validate_command_lists_every_problem(project: Path) -> None:
    bad = project / "inventory" / "bad.yaml"
    bad.write_text(
        (project / "inventory" / "example-prod.yaml")
        .read_text()
        .replace("10.40.1.12, datacenter", "10.40.1.11, datacenter")
        .replace("router_id: 52", "router_id: 51")
    )
    result = CliRunner().invoke(main, ["validate", "bad"])
    assert result.exit_code == 1
    assert f"{bad}: hosts[1].address: 10.40.1.11 is already used by hosts[0]" in result.output
    assert "vips[1].router_id: 51 is already used by vips[0] on dc1's network" in result.output


def test_validate_ok_and_unknown_stack_messages(project: Path) -> None:
    ok = CliRunner().invoke(main, ["validate", "example-prod"])
    assert ok.exit_code == 0 and "stacks: example-prod-dc1, example-prod-dc2" in ok.output
    unknown = CliRunner().invoke(main, ["preview", "prod-dc3"])
    assert unknown.exit_code == 1
    assert unknown.output.startswith("error: unknown stack or environment 'prod-dc3'")


def test_outputs_json_names_vips_per_datacenter(project: Path) -> None:
    import json

    result = CliRunner().invoke(main, ["outputs", "example-prod", "--json"])
    data = json.loads(result.output)
    assert data["datacenters"]["dc2"]["vips"]["pg"] == {
        "fqdn": "pg.dc2.grid.plinth.internal",
        "address": "10.40.2.100",
        "services": ["postgresql"],
    }
