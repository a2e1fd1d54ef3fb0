"""``plinth import ansible``: reading Ansible inventories without Ansible, building and
writing the environment skeleton (no hosts contacted)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from plinth.cli import main
from plinth.importers.ansible import (
    PLACEHOLDER,
    AnsibleImportError,
    ImportMapping,
    Origin,
    add_datacenter_option,
    add_role_option,
    build_skeleton,
    expand_host_range,
    read_inventory,
    read_mapping_file,
)
from plinth.model import ModelError, load_environment

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ansible"
AUTOBASE_ROLES = (
    "--role",
    "etcd_cluster=etcd",
    "--role",
    "postgres_cluster=postgresql",
    "--role",
    "balancers=haproxy,keepalived",
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def mapping(roles: dict[str, str], datacenters: dict[str, str]) -> ImportMapping:
    built = ImportMapping()
    for group, role_list in roles.items():
        add_role_option(built, f"{group}={role_list}")
    for group, dc in datacenters.items():
        add_datacenter_option(built, f"{group}={dc}")
    return built


# ---- reading ----


def test_ini_ranges_ports_and_literal_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hosts",
        """\
        stray.example ansible_host=10.0.0.9
        [db]
        db[01:03] ansible_host=10.0.0.1  # comment
        node-[a:c]:2222 tags="a=b" enabled=True count=3
        [db:vars]
        ansible_user = 'admin'
        """,
    )
    inventory = read_inventory(path)
    assert inventory.groups["db"].hosts == ["db01", "db02", "db03", "node-a", "node-b", "node-c"]
    assert inventory.groups["ungrouped"].hosts == ["stray.example"]
    node = inventory.host_variables("node-b")
    assert node == {
        "ansible_user": "admin",
        "ansible_port": 2222,
        "tags": "a=b",
        "enabled": True,
        "count": 3,
    }
    assert expand_host_range("n[1:7:3]", Origin(path)) == ["n1", "n4", "n7"]


def test_variables_combine_as_ansible_combines_them(tmp_path: Path) -> None:
    """all < parent < child (and a higher ansible_group_priority at the same depth) <
    group_vars files < the host's own variables."""
    path = write(
        tmp_path,
        "hosts",
        """\
        [site:children]
        db
        [db]
        h1 level=host
        h2
        [extra]
        h2
        [site:vars]
        level=site
        from_site=1
        [db:vars]
        level=db
        [extra:vars]
        level=extra
        ansible_group_priority=10
        [all:vars]
        level=all
        from_all=1
        """,
    )
    write(tmp_path, "group_vars/db.yml", "from_file: db\n")
    write(tmp_path, "host_vars/h2/main.yml", "from_file: h2\n")
    write(tmp_path, "group_vars/site", "$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    inventory = read_inventory(path)
    h1 = inventory.host_variables("h1")
    assert (h1["level"], h1["from_site"], h1["from_all"], h1["from_file"]) == ("host", 1, 1, "db")
    # db (depth 2) beats site (depth 1); extra (depth 1) is below db despite its priority
    h2 = inventory.host_variables("h2")
    assert (h2["level"], h2["from_file"]) == ("db", "h2")
    assert inventory.skipped_files == [tmp_path / "group_vars" / "site"]


def test_group_priority_breaks_ties_at_the_same_depth(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "inv.yaml",
        """\
        all:
          children:
            alpha: {hosts: {h1: null}, vars: {level: alpha, ansible_group_priority: 5}}
            beta: {hosts: {h1: null}, vars: {level: beta}}
        """,
    )
    assert read_inventory(path).host_variables("h1")["level"] == "alpha"


def test_yaml_children_and_line_numbers_in_errors(tmp_path: Path) -> None:
    inventory = read_inventory(FIXTURES / "grid.yml")
    assert inventory.members("databases")[:1] == ["pg-n1.north.grid.example"]
    assert inventory.host_variables("edge-s2.south.grid.example")["ntp_server"] == "10.40.0.6"
    assert "south" in inventory.groups_of("worker-s1.south.grid.example")

    bad = write(
        tmp_path,
        "bad.yml",
        """\
        all:
          children:
            db:
              hosts: [h1, h2]
        """,
    )
    with pytest.raises(AnsibleImportError, match=r"bad.yml:4: hosts of group 'db' must be a"):
        read_inventory(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[db]\nh1 novalue\n", r"hosts:2: expected key=value after host 'h1', got 'novalue'"),
        ("[db:weird]\n", r"hosts:1: section type 'weird' is unknown"),
        ("[db]\nh[1:\n", r"hosts:2: 'h\[1:' is not a host range"),
        ("[a:children]\nb\n[b:children]\na\n", r"group 'a' is its own descendant \(a -> b -> a\)"),
    ],
)
def test_ini_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AnsibleImportError, match=message):
        read_inventory(write(tmp_path, "hosts", text))


# ---- mapping and building ----


def test_unknown_role_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(AnsibleImportError) as error:
        add_role_option(ImportMapping(), "etcd_cluster=etcd,postgres")
    assert str(error.value).startswith(
        "--role etcd_cluster=etcd,postgres: unknown role(s) 'postgres'; known roles: "
        "airflow-api, airflow-dag-processor"
    )
    map_file = write(tmp_path, "map.yaml", "roles:\n  db: [etcd]\n  edge: [haproxy, nginxx]\n")
    with pytest.raises(AnsibleImportError, match=r"map.yaml:3 edge=haproxy,nginxx: unknown role"):
        read_mapping_file(map_file)


def test_host_in_two_datacenter_groups_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hosts",
        """\
        [north]
        db1 ansible_host=10.0.1.1
        [south]
        db2 ansible_host=10.0.2.1
        db1
        """,
    )
    with pytest.raises(AnsibleImportError) as error:
        build_skeleton(
            read_inventory(path), mapping({"all": "etcd"}, {"north": "dc1", "south": "dc2"}), "x"
        )
    assert str(error.value) == (
        f"host 'db1' ({path}:2) is in the datacenter groups north (dc1), south (dc2); a host "
        "sits in one datacenter: fix the inventory or the --dc mapping"
    )


def test_a_mapped_group_the_inventory_lacks_is_refused() -> None:
    inventory = read_inventory(FIXTURES / "autobase.ini")
    with pytest.raises(AnsibleImportError, match=r"^--role balancer=haproxy: .* has no group"):
        build_skeleton(inventory, mapping({"balancer": "haproxy"}, {"master": "dc1"}), "x")


def test_autobase_inventory_becomes_one_datacenter_cell() -> None:
    inventory = read_inventory(FIXTURES / "autobase.ini")
    skeleton = build_skeleton(
        inventory,
        mapping(
            {
                "etcd_cluster": "etcd",
                "postgres_cluster": "postgresql",
                "balancers": "haproxy,keepalived",
            },
            {"postgres_cluster": "dc1"},
        ),
        "pgcell",
    )
    hosts = skeleton.data["hosts"]
    assert [(h["name"], h["address"]) for h in hosts] == [
        ("pgnode01", "10.128.64.140"),
        ("pgnode02", "10.128.64.142"),
        ("pgnode03", "10.128.64.143"),
    ]
    # autobase's convention: the inventory name is the cluster address, ansible_host dialled
    assert hosts[2]["ssh_address"] == "203.0.113.43"
    assert hosts[0]["roles"] == ["etcd", "postgresql", "haproxy", "keepalived"]
    assert skeleton.data["vips"][0]["address"] == "10.128.64.200"  # its cluster_vip
    assert [d.field for d in skeleton.decisions] == ["datacenters[0].domain", "vips[0].router_id"]
    assert skeleton.data["ssh"] == {"user": "root"}
    assert any("postgresql_exists=true" in c for c in skeleton.checks)
    assert skeleton.unmapped[0].startswith("host 10.128.64.110 (groups: pgbackrest)")


# ---- the command ----


def fill(text: str, values: list[str]) -> str:
    """Replace the placeholders of an environment file, in order (the header comment,
    which lists them, is left as it is)."""
    header, body = text.split("\nname: ", 1)
    for value in values:
        assert PLACEHOLDER in body
        body = body.replace(PLACEHOLDER, value, 1)
    assert PLACEHOLDER not in body
    return f"{header}\nname: {body}"


def test_import_autobase_writes_a_skeleton_that_validates_once_filled(project: Path) -> None:
    code, out, err = run(
        "import",
        "ansible",
        str(FIXTURES / "autobase.ini"),
        *AUTOBASE_ROLES,
        "--dc-by-subnet",
        "10.128.64.0/24=dc1",
        "--name",
        "pgcell",
    )
    assert (code, err) == (0, "")
    written = project / "inventory" / "pgcell.yaml"
    assert out.splitlines()[:4] == [
        f"wrote {written}: environment 'pgcell', 3 host(s) in 1 datacenter(s) (dc1), 1 VIP(s)",
        "still to decide (2, written as DECIDE):",
        "  datacenters[0].domain (dc1): the DNS domain of dc1 (a host's FQDN is <host>.<domain>)",
        "  vips[0].router_id (VIP pg of dc1): a VRRP router id 1-255 no other VRRP instance "
        "uses on dc1's network",
    ]
    assert "the model's rules, placeholders aside: no problem" in out
    with pytest.raises(ModelError) as error:
        load_environment(written)
    # validate names each placeholder (and, here, what the invalid domain drags along)
    assert {"datacenters[0].domain", "vips[0].router_id"} <= {
        p.split(":")[0] for p in error.value.problems
    }
    written.write_text(fill(written.read_text(), ["pg.grid.example", "51"]))
    env = load_environment(written)
    assert [h.name for h in env.hosts] == ["pgnode01", "pgnode02", "pgnode03"]
    assert env.vips[0].router_id == 51


def test_import_yaml_with_a_mapping_file(project: Path) -> None:
    code, out, _ = run(
        "import",
        "ansible",
        str(FIXTURES / "grid.yml"),
        "--map",
        str(FIXTURES / "grid-map.yaml"),
        "--out",
        str(project / "inventory" / "grid.yaml"),
    )
    assert code == 0
    assert "11 host(s) in 2 datacenter(s) (dc1, dc2), 4 VIP(s)" in out
    assert "  hosts[8].address (edge-s1): its IPv4 address" in out
    assert "  host mon1.ops.grid.example (groups: monitoring): in no group mapped" in out
    assert "the model's rules, placeholders aside: no problem" in out
    written = project / "inventory" / "grid.yaml"
    data = yaml.safe_load(written.read_text())
    assert [dc["domain"] for dc in data["datacenters"]] == [
        "north.grid.example",
        "south.grid.example",
    ]
    assert data["vips"][1] == {
        "name": "edge",
        "datacenter": "dc1",
        "address": PLACEHOLDER,
        "router_id": PLACEHOLDER,
        "services": ["squid"],
    }
    filled = fill(
        written.read_text(),
        [
            *("10.40.2.21", "10.40.2.22"),  # the two edge hosts of dc2
            *("10.40.1.100", "51", "10.40.1.101", "52"),  # dc1's VIPs
            *("10.40.2.100", "51", "10.40.2.101", "52"),  # dc2's VIPs
        ],
    )
    written.write_text(filled)
    env = load_environment(written)
    assert env.active_site == "dc1" and len(env.hosts_in("dc2")) == 6


def test_import_refuses_to_replace_a_file_and_reports_errors(project: Path) -> None:
    target = project / "inventory" / "example-prod.yaml"
    before = target.read_text()
    args = ("import", "ansible", str(FIXTURES / "autobase.ini"), *AUTOBASE_ROLES)
    code, _, err = run(*args, "--dc", "postgres_cluster=dc1", "--out", str(target))
    assert code == 1
    assert err == f"error: {target} exists: not replaced (pass --force to replace it)\n"
    assert target.read_text() == before
    code, _, _ = run(*args, "--dc", "postgres_cluster=dc1", "--out", str(target), "--force")
    assert code == 0 and target.read_text() != before

    code, _, err = run(*args, "--dc", "master=dc1", "--dc", "replica=Site2", "--name", "x")
    assert code == 1
    assert err.startswith("error: --dc replica=Site2: 'Site2' is not a datacenter name")
    assert err.endswith("; nothing was written\n")
    code, _, err = run("import", "ansible", str(FIXTURES / "autobase.ini"), "--name", "x")
    assert code == 1 and "no group is mapped to a role" in err
    assert not (project / "inventory" / "x.yaml").exists()
