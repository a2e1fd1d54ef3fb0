"""Patroni without Docker: the PatroniCluster parser, the dynamic-config diff, patroni.yml."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pyinfra.api.exceptions import FactProcessError

from facts.patroni import (
    MISSING,
    UNREACHABLE,
    normalise_role,
    parse_cluster_document,
    parse_patroni_cluster,
)
from operations.patroni import (
    PatroniInput,
    StandbySource,
    cell_packages,
    config_difference,
    dynamic_settings,
    flatten,
    render,
    standby_slot,
)
from plinth.certificates import CertificateSpec
from plinth.model import PatroniSettings, Role
from plinth.pki import Profile


def cluster_output(members: list[dict[str, object]], local_role: str = "master") -> list[str]:
    cluster = {"members": members, "scope": "pg-dc1"}
    local = {"state": "running", "role": local_role, "patroni": {"scope": "pg-dc1"}}
    return [
        "--plinth-patroni-cluster--", json.dumps(cluster),
        "--plinth-patroni-self--", json.dumps(local),
    ]  # fmt: skip


MEMBERS: list[dict[str, object]] = [
    {"name": "dc1-n1", "role": "leader", "state": "running", "host": "10.0.0.11", "timeline": 3},
    {"name": "dc1-n2", "role": "sync_standby", "state": "streaming", "host": "10.0.0.12",
     "timeline": 3, "lag": 0, "pending_restart": True},
    {"name": "dc1-n3", "role": "replica", "state": "running", "host": "10.0.0.13",
     "timeline": 3, "lag": "unknown"},
]  # fmt: skip


@pytest.mark.parametrize("role", ["master", "primary"])
def test_patroni_3_and_4_primary_roles_are_one(role: str) -> None:
    state = parse_patroni_cluster(cluster_output(MEMBERS, local_role=role))
    assert state is not None
    assert state.local_role == "primary" == normalise_role(role)
    assert state.leader is not None and state.leader.name == "dc1-n1"
    assert [m.name for m in state.replicas] == ["dc1-n2", "dc1-n3"]
    n2 = state.member("dc1-n2")
    assert n2 is not None and n2.pending_restart and n2.lag == 0


def test_problems_name_missing_lagging_and_stopped_members() -> None:
    members = [dict(m) for m in MEMBERS[:2]]
    members[1]["state"] = "stopped"
    state = parse_patroni_cluster(cluster_output(members))
    assert state is not None
    assert state.problems(expected=("dc1-n1", "dc1-n2", "dc1-n3")) == [
        "member dc1-n3 is missing (stopped?)",
        "replica dc1-n2 is stopped",
    ]
    healthy = parse_patroni_cluster(cluster_output(MEMBERS))
    assert healthy is not None
    assert healthy.problems(max_lag=1024) == ["replica dc1-n3 lags unknown"]
    assert healthy.problems() == []


def test_unreachable_missing_and_garbage() -> None:
    assert parse_patroni_cluster([MISSING]) is None
    assert (
        parse_patroni_cluster(
            ["--plinth-patroni-cluster--", UNREACHABLE, "--plinth-patroni-self--", UNREACHABLE]
        )
        is None
    )
    with pytest.raises(FactProcessError):
        parse_patroni_cluster(["--plinth-patroni-cluster--", "<html>", "--plinth-patroni-self--"])


def test_config_difference_touches_only_managed_keys() -> None:
    wanted = dynamic_settings(spec())
    current = json.loads(json.dumps(wanted))
    current["postgresql"]["parameters"]["max_connections"] = 200  # number vs "200": equal
    current["postgresql"]["parameters"]["work_mem"] = "8MB"  # set by the cluster: kept
    current["synchronous_mode"] = "true"
    assert config_difference(current, wanted) == {}
    current["postgresql"]["parameters"]["shared_buffers"] = "64MB"
    current["ttl"] = 30
    patch = config_difference(current, wanted)
    assert patch == {"ttl": 12, "postgresql": {"parameters": {"shared_buffers": "128MB"}}}
    assert flatten(patch) == ["postgresql.parameters.shared_buffers=128MB", "ttl=12"]


def spec() -> PatroniInput:
    def cert(service: str, profile: Profile, cn: str) -> CertificateSpec:
        return CertificateSpec(service, profile, cn, (), (), "postgres", "postgres")

    return PatroniInput(
        name="dc1-n1",
        address="10.0.0.11",
        scope="pg-dc1",
        settings=PatroniSettings(),
        etcd_hosts=("10.0.0.11:2379", "10.0.0.12:2379", "10.0.0.13:2379"),
        networks=("10.0.0.0/24", "10.0.1.0/24"),
        members=("dc1-n1", "dc1-n2", "dc1-n3"),
        tls=cert("patroni", Profile.PEER, "dc1-n1.dc1.example.internal"),
        replication=cert("pg-replicator", Profile.CLIENT, "replicator"),
        rewind=cert("pg-rewind", Profile.CLIENT, "rewind_user"),
    )


def test_patroni_yml_is_tls_only_and_carries_the_passwords_it_is_given() -> None:
    text = render(spec(), {"superuser": "s3cr'et: #1", "replication": "r", "rewind": "w"})
    config = yaml.safe_load(text)
    assert config["postgresql"]["authentication"]["superuser"]["password"] == "s3cr'et: #1"
    assert config["restapi"]["verify_client"] == "required"
    assert config["etcd3"]["protocol"] == "https"
    replication = config["postgresql"]["authentication"]["replication"]
    assert replication["sslmode"] == "verify-full" and replication["username"] == "replicator"
    hba = config["postgresql"]["pg_hba"]
    assert not [line for line in hba if line.split()[0] in ("host", "hostnossl")]
    assert hba[-1] == "hostssl all all 0.0.0.0/0 cert"
    assert "hostssl replication replicator 10.0.1.0/24 scram-sha-256 clientcert=verify-full" in hba
    assert config["postgresql"]["parameters"]["ssl"] == "on"
    assert config["bootstrap"]["dcs"]["synchronous_mode"] is True
    assert config["bootstrap"]["dcs"]["ttl"] == 12


def test_timing_rule_and_role_names() -> None:
    with pytest.raises(ValueError, match="ttl"):
        PatroniSettings(ttl=10, loop_wait=2, retry_timeout=5)
    with pytest.raises(ValueError, match="reserved"):
        PatroniSettings(login_roles=("replicator",))
    with pytest.raises(ValueError, match="plain PostgreSQL role name"):
        PatroniSettings(login_roles=("x'; drop",))


def test_cell_packages_by_role() -> None:
    assert cell_packages([Role.HAPROXY]) == ["haproxy"]
    assert "patroni" in cell_packages([Role.POSTGRESQL, Role.ETCD])
    assert cell_packages([Role.REDIS]) == []


def test_standby_site_bootstraps_from_the_active_vip_and_never_patches_it_away() -> None:
    from dataclasses import replace

    standby = replace(
        spec(),
        scope="pg-dc2",
        standby=StandbySource("10.0.0.100", 5000, standby_slot("dc2")),
    )
    dcs = yaml.safe_load(render(standby, {"superuser": "s", "replication": "r", "rewind": "w"}))[
        "bootstrap"
    ]["dcs"]
    assert dcs["standby_cluster"] == {
        "host": "10.0.0.100",
        "port": 5000,
        "primary_slot_name": "standby_dc2",
        "create_replica_methods": ["basebackup"],
    }
    # Cascading replicas of a standby leader are asynchronous.
    assert dcs["synchronous_mode"] is False
    # After an operator promoted the site (standby_cluster removed), a run keeps it so.
    assert "standby_cluster" not in dynamic_settings(standby)


def test_active_site_keeps_a_slot_per_standby_site() -> None:
    from dataclasses import replace

    active = replace(spec(), standby_slots=(standby_slot("dc-2"),))
    assert dynamic_settings(active)["slots"] == {"standby_dc_2": {"type": "physical"}}
    assert "slots" not in dynamic_settings(spec())


def test_wal_position_of_a_primary_and_of_a_standby_leader() -> None:
    cluster = {"members": [{"name": "a", "role": "leader", "state": "running"}]}
    primary = parse_cluster_document(cluster, {"role": "master", "xlog": {"location": 900}})
    standby = parse_cluster_document(
        cluster,
        {"role": "standby_leader", "xlog": {"received_location": 880, "replayed_location": 860}},
    )
    assert (primary.local_wal, standby.local_wal) == (900, 860)
    assert parse_cluster_document(cluster, None).local_wal is None


def test_standby_lag_is_the_active_primary_minus_what_the_standby_replayed() -> None:
    from plinth.cli.cluster import add_standby_lag
    from plinth.cli.cluster import render as render_status
    from plinth.model import parse_environment

    env = parse_environment(
        {
            "name": "unit",
            "datacenters": [
                {"name": "dc1", "subnet": "10.0.1.0/24", "domain": "dc1.unit.internal"},
                {"name": "dc2", "subnet": "10.0.2.0/24", "domain": "dc2.unit.internal"},
            ],
            "hosts": [
                {"name": "h1", "address": "10.0.1.11", "datacenter": "dc1", "roles": ["nginx"]}
            ],
        }
    )

    def result(stack: str, standby: bool, wal: int | None) -> dict[str, Any]:
        patroni = {"scope": stack, "problems": [], "members": [], "standby": standby}
        return {"stack": stack, "etcd": None, "vips": [], "patroni": patroni | {"leader_wal": wal}}

    results = [result("unit-dc1", False, 5000), result("unit-dc2", True, 4200)]
    add_standby_lag(results, env)
    assert "standby_of" not in results[0]["patroni"]
    assert results[1]["patroni"]["standby_of"] == {"datacenter": "dc1", "lag_bytes": 800}
    assert "standby cluster of dc1: lag 800 B" in render_status(results[1])
