"""Every validation rule of the environment model, each asserting the field it names."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from plinth.model import ModelError, Role, load_environment, parse_environment

REPO = Path(__file__).resolve().parents[2]


def base_environment() -> dict[str, Any]:
    """A valid one-DC environment every test mutates."""
    all_roles = [r.value for r in Role]
    return {
        "name": "unit",
        "datacenters": [
            {"name": "dc1", "subnet": "10.231.1.0/24", "domain": "dc1.unit.plinth.internal"},
            {"name": "dc2", "subnet": "10.231.2.0/24", "domain": "dc2.unit.plinth.internal"},
        ],
        "hosts": [
            {
                "name": f"dc1-n{i}",
                "address": f"10.231.1.1{i}",
                "datacenter": "dc1",
                "roles": all_roles,
            }
            for i in (1, 2, 3)
        ],
        "vips": [
            {"name": "pg", "datacenter": "dc1", "address": "10.231.1.100", "router_id": 51},
        ],
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ModelError) as caught:
        parse_environment(data, "env.yaml")
    assert str(caught.value).startswith("env.yaml: ")
    return caught.value.problems


def single_problem(data: dict[str, Any]) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def test_base_environment_is_valid() -> None:
    env = parse_environment(base_environment())
    assert env.stack_names() == ["unit-dc1", "unit-dc2"]
    assert [h.name for h in env.hosts_with(Role.ETCD, "dc1")] == ["dc1-n1", "dc1-n2", "dc1-n3"]


def test_shipped_example_environment_is_valid() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    assert len(env.datacenters) == 2
    assert env.package_sources_for("dc2").http_proxy == "http://10.40.2.101:3128"


def test_unknown_top_level_key_is_rejected() -> None:
    data = base_environment()
    data["hostz"] = []
    assert single_problem(data).startswith("hostz: Extra inputs are not permitted")


def test_unknown_nested_key_names_the_path() -> None:
    data = base_environment()
    data["hosts"][1]["adress"] = "10.231.1.50"
    assert single_problem(data).startswith("hosts[1].adress: Extra inputs")


def test_duplicate_host_name() -> None:
    data = base_environment()
    data["hosts"][2]["name"] = "dc1-n1"
    assert "hosts[2].name: duplicate name 'dc1-n1' (also hosts[0])" in problems_of(data)


def test_duplicate_host_address() -> None:
    data = base_environment()
    data["hosts"][1]["address"] = "10.231.1.11"
    assert single_problem(data) == (
        "hosts[1].address: 10.231.1.11 is already used by hosts[0] (dc1-n1)"
    )


def test_host_outside_its_datacenter_subnet() -> None:
    data = base_environment()
    data["hosts"][0]["address"] = "10.231.2.11"
    assert single_problem(data) == (
        "hosts[0].address: 10.231.2.11 is outside dc1's subnet 10.231.1.0/24"
    )


def test_host_on_network_address() -> None:
    data = base_environment()
    data["hosts"][0]["address"] = "10.231.1.0"
    assert single_problem(data).startswith("hosts[0].address: 10.231.1.0 is the network")


def test_unknown_datacenter() -> None:
    data = base_environment()
    data["hosts"][0]["datacenter"] = "dc9"
    problem = problems_of(data)[0]
    assert problem.startswith("hosts[0].datacenter: unknown datacenter 'dc9'; known: dc1, dc2")


def test_vip_outside_subnet() -> None:
    data = base_environment()
    data["vips"][0]["address"] = "10.231.2.100"
    assert single_problem(data) == (
        "vips[0].address: 10.231.2.100 is outside dc1's subnet 10.231.1.0/24"
    )


def test_vip_equal_to_a_host_address() -> None:
    data = base_environment()
    data["vips"][0]["address"] = "10.231.1.12"
    assert single_problem(data) == "vips[0].address: 10.231.1.12 is the address of host 'dc1-n2'"


def test_vrrp_router_id_unique_per_datacenter() -> None:
    data = base_environment()
    data["vips"].append(
        {"name": "edge", "datacenter": "dc1", "address": "10.231.1.101", "router_id": 51}
    )
    assert single_problem(data) == (
        "vips[1].router_id: 51 is already used by vips[0] on dc1's network"
    )


def test_same_router_id_in_another_datacenter_is_fine() -> None:
    data = base_environment()
    data["hosts"].append(
        {"name": "dc2-e1", "address": "10.231.2.21", "datacenter": "dc2", "roles": ["keepalived"]}
    )
    data["vips"].append(
        {"name": "pg", "datacenter": "dc2", "address": "10.231.2.100", "router_id": 51}
    )
    parse_environment(data)


def test_vip_needs_a_holder_in_its_datacenter() -> None:
    data = base_environment()
    data["vips"].append(
        {"name": "pg", "datacenter": "dc2", "address": "10.231.2.100", "router_id": 51}
    )
    assert single_problem(data) == (
        "vips[1]: no host in dc2 has the 'keepalived' role to hold this VIP"
    )


def test_vrrp_router_id_range() -> None:
    data = base_environment()
    data["vips"][0]["router_id"] = 256
    assert single_problem(data).startswith("vips[0].router_id: Input should be less than")


@pytest.mark.parametrize("role", ["etcd", "sentinel", "rabbitmq"])
@pytest.mark.parametrize("count", [1, 2, 4])
def test_quorum_groups_need_an_odd_size_of_at_least_three(role: str, count: int) -> None:
    data = base_environment()
    data["hosts"] = [
        {
            "name": f"dc1-n{i}",
            "address": f"10.231.1.1{i}",
            "datacenter": "dc1",
            "roles": ["keepalived", "redis", role],
        }
        for i in range(1, count + 1)
    ]
    problem = single_problem(data)
    assert problem.startswith(f"hosts[*].roles: the {role} cluster of datacenter 'dc1' has {count}")
    assert "odd number >= 3 inside one datacenter" in problem


def test_quorum_group_split_across_datacenters_is_rejected() -> None:
    # Three etcd members, but two in dc1 and one in dc2: two clusters of 2 and 1,
    # never one stretched cluster.
    data = base_environment()
    data["hosts"][2] = {
        "name": "dc2-n3",
        "address": "10.231.2.13",
        "datacenter": "dc2",
        "roles": ["etcd"],
    }
    problems = problems_of(data)
    assert any(
        p.startswith("hosts[*].roles: the etcd cluster of datacenter 'dc1' has 2") for p in problems
    )
    assert any(
        p.startswith("hosts[*].roles: the etcd cluster of datacenter 'dc2' has 1") for p in problems
    )


def test_unknown_role_lists_the_known_ones() -> None:
    data = base_environment()
    data["hosts"][0]["roles"] = ["etcd", "mongodb"]
    problem = single_problem(data)
    assert problem.startswith("hosts[0].roles: unknown role(s) mongodb; known roles: airflow-api")


def test_overlapping_datacenter_subnets() -> None:
    data = base_environment()
    data["datacenters"][1]["subnet"] = "10.231.1.128/25"
    assert "datacenters[1].subnet: 10.231.1.128/25 overlaps datacenter 'dc1' (10.231.1.0/24)" in (
        problems_of(data)
    )


def test_invalid_names_and_domains() -> None:
    data = base_environment()
    data["datacenters"][0]["domain"] = "Not A Domain"
    data["hosts"][0]["name"] = "Bad_Name"
    problems = problems_of(data)
    assert any(p.startswith("datacenters[0].domain: String should match pattern") for p in problems)
    assert any(p.startswith("hosts[0].name: String should match pattern") for p in problems)


def test_all_problems_are_reported_at_once() -> None:
    data = base_environment()
    data["hosts"][1]["address"] = "10.231.1.11"
    data["vips"][0]["address"] = "10.231.9.1"
    data["hosts"][2]["roles"] = ["etcd"]
    assert len(problems_of(data)) >= 2


def test_model_is_frozen() -> None:
    env = parse_environment(base_environment())
    with pytest.raises(Exception, match="frozen"):
        env.hosts[0].name = "other"  # type: ignore[misc]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ModelError, match=r"nope\.yaml: 1 problem"):
        load_environment(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ModelError) as caught:
        load_environment(broken)
    assert "broken.yaml" in str(caught.value)
    assert caught.value.problems[0].startswith("line ")


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(base_environment())))
    assert load_environment(path).name == "unit"


def test_every_field_is_documented() -> None:
    from pydantic import BaseModel

    from plinth import model

    undocumented = []
    for obj in vars(model).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseModel)
            and obj.__module__ == model.__name__
        ):
            for field_name, info in obj.model_fields.items():
                if not info.description:
                    undocumented.append(f"{obj.__name__}.{field_name}")
    assert undocumented == []


def test_reference_doc_is_current() -> None:
    from plinth import docgen

    assert docgen.OUTPUT.read_text() == docgen.render(), "run: python -m plinth.docgen"


def test_active_datacenter_must_be_known() -> None:
    data = base_environment()
    data["active_datacenter"] = "dc9"
    assert single_problem(data) == "active_datacenter: unknown datacenter 'dc9'; known: dc1, dc2"


def standby_site(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with a second PostgreSQL cluster (and its etcd) in dc2."""
    data["hosts"] += [
        {
            "name": f"dc2-n{i}",
            "address": f"10.231.2.1{i}",
            "datacenter": "dc2",
            "roles": ["etcd", "postgresql"],
        }
        for i in (1, 2, 3)
    ]
    return data


def test_standby_site_needs_a_postgresql_vip_at_the_active_site() -> None:
    data = standby_site(base_environment())
    assert single_problem(data) == (
        "vips: standby PostgreSQL clusters replicate from the active datacenter 'dc1', "
        "which has no VIP with the 'postgresql' service"
    )
    data["vips"][0]["services"] = ["postgresql"]
    env = parse_environment(data)
    assert env.active_site == "dc1"
    # Making dc2 active moves the requirement there.
    data["active_datacenter"] = "dc2"
    assert "active datacenter 'dc2'" in single_problem(data)


def test_network_defaults_declare_nobody() -> None:
    env = parse_environment(base_environment())
    assert env.network.controllers == () and env.network.clients == ()


def test_network_entries_are_addresses_or_networks() -> None:
    data = base_environment()
    data["network"] = {"controllers": ["10.9.0.5"], "clients": ["10.50.0.0/16", "0.0.0.0/0"]}
    env = parse_environment(data)
    assert [str(n) for n in env.network.controllers] == ["10.9.0.5/32"]
    assert [str(n) for n in env.network.clients] == ["10.50.0.0/16", "0.0.0.0/0"]


def test_network_entry_with_host_bits_names_both_readings() -> None:
    data = base_environment()
    data["network"] = {"controllers": ["10.9.0.0/24", "10.9.0.5/24"]}
    assert single_problem(data) == (
        "network.controllers[1]: '10.9.0.5/24' has host bits set: write 10.9.0.0/24 for the "
        "network, or 10.9.0.5/32 (or 10.9.0.5) for the one address"
    )
    data["network"] = {"clients": ["10.50.0.0/16", "nowhere"]}
    assert single_problem(data) == "network.clients[1]: Input is not a valid IPv4 network"


def test_network_entries_once_and_the_controller_never_anywhere() -> None:
    data = base_environment()
    data["network"] = {
        "controllers": ["0.0.0.0/0"],
        "clients": ["10.50.0.0/16", "10.60.0.0/16", "10.50.0.0/16"],
    }
    assert sorted(problems_of(data)) == [
        "network.clients[2]: 10.50.0.0/16 is also network.clients[0]",
        "network.controllers[0]: 0.0.0.0/0 would let every address in as the controller "
        "(SSH to every host); name the controller's addresses",
    ]
