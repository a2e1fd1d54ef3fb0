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
    PatroniClusterState,
    normalise_role,
    parse_cluster_document,
    parse_patroni_cluster,
)
from operations.patroni.decide import upgrade_steps
from operations.patroni.install import PatroniInstall, config_check, render_unit
from operations.patroni.packages import cell_packages
from operations.patroni.release import restart_command
from operations.patroni.settings import (
    PatroniInput,
    StandbySource,
    config_difference,
    dynamic_settings,
    flatten,
    render,
)
from plinth.certificates import CertificateSpec
from plinth.model import PatroniSettings, Role
from plinth.pki import Profile
from plinth.releases import BOOKWORM, TRIXIE
from plinth.topology.patroni import standby_slot


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
    assert patch == {"ttl": 20, "postgresql": {"parameters": {"shared_buffers": "128MB"}}}
    assert flatten(patch) == ["postgresql.parameters.shared_buffers=128MB", "ttl=20"]


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
        member_addresses=("10.0.0.11", "10.0.0.12", "10.0.0.13"),
        tls=cert("patroni", Profile.PEER, "dc1-n1.dc1.example.internal"),
        replication=cert("pg-replicator", Profile.CLIENT, "replicator"),
        rewind=cert("pg-rewind", Profile.CLIENT, "rewind_user"),
    )


def test_patroni_yml_is_tls_only_and_carries_the_passwords_it_is_given() -> None:
    passwords = {"superuser": "s3cr'et: #1", "replication": "r", "rewind": "w", "restapi": "a"}
    text = render(spec(), passwords)
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
    assert config["bootstrap"]["dcs"]["ttl"] == 20


def test_timing_rule_and_role_names() -> None:
    with pytest.raises(ValueError, match="ttl"):
        PatroniSettings(ttl=12)  # below Patroni's own minimum (it would run with 20)
    with pytest.raises(ValueError, match="ttl"):
        PatroniSettings(ttl=20, loop_wait=10, retry_timeout=6)
    with pytest.raises(ValueError, match="reserved"):
        PatroniSettings(login_roles=("replicator",))
    with pytest.raises(ValueError, match="plain PostgreSQL role name"):
        PatroniSettings(login_roles=("x'; drop",))


def test_cell_packages_by_role() -> None:
    assert cell_packages([Role.HAPROXY], BOOKWORM) == ["haproxy"]
    # Patroni and its driver come from the wheelhouse, not from Debian.
    postgresql = cell_packages([Role.POSTGRESQL, Role.ETCD], BOOKWORM)
    assert "patroni" not in postgresql and "python3-psycopg2" not in postgresql
    assert "python3-venv" in postgresql and "postgresql-15" in postgresql
    assert cell_packages([Role.REDIS, Role.SENTINEL], BOOKWORM) == [
        "redis-server",
        "redis-tools",
        "redis-sentinel",
    ]
    # The release's table decides the PostgreSQL line: trixie installs 17, not 15.
    assert "postgresql-17" in cell_packages([Role.POSTGRESQL], TRIXIE)
    assert "postgresql-15" not in cell_packages([Role.POSTGRESQL], TRIXIE)


def test_standby_site_bootstraps_from_the_active_vip_and_never_patches_it_away() -> None:
    from dataclasses import replace

    standby = replace(
        spec(),
        scope="pg-dc2",
        standby=StandbySource("10.0.0.100", 5000, standby_slot("dc2")),
    )
    passwords = {"superuser": "s", "replication": "r", "rewind": "w", "restapi": "a"}
    dcs = yaml.safe_load(render(standby, passwords))["bootstrap"]["dcs"]
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
    from plinth.model import parse_environment
    from plinth.status import add_standby_lag
    from plinth.status import render as render_status

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


# ---- Patroni from the wheelhouse: version, unit, config check ----


def test_the_patroni_version_needs_a_committed_hash_lock() -> None:
    from plinth.model import ModelError, parse_environment
    from plinth.wheelhouse import locked_pins

    lock = PatroniSettings.lock_path(PatroniSettings().version)
    assert lock.is_file()
    text = lock.read_text()
    assert f"patroni=={PatroniSettings().version}" in locked_pins(text)
    assert {"psycopg==3.3.9", "psycopg-binary==3.3.9", "python-etcd==0.4.5"} <= set(
        locked_pins(text)
    )
    # every requirement carries at least one hash (pip --require-hashes needs it)
    requirements = [line for line in text.splitlines() if line and line[0].isalpha()]
    assert all(line.endswith("\\") for line in requirements)
    with pytest.raises(ModelError, match=r"components\.patroni\.version: no hash lock"):
        parse_environment(
            {
                "name": "unit",
                "datacenters": [
                    {"name": "dc1", "subnet": "10.0.1.0/24", "domain": "dc1.unit.internal"}
                ],
                "hosts": [
                    {"name": "h1", "address": "10.0.1.11", "datacenter": "dc1", "roles": ["nginx"]}
                ],
                "components": {"patroni": {"version": "4.0.1"}},
            }
        )


def install() -> PatroniInstall:
    from pathlib import Path

    from plinth.wheelhouse import Wheelhouse

    tarball = Path("/cache/patroni-etcd3-psycopg3-4.1.5-h0000-cp311.tar")
    wheelhouse = Wheelhouse("patroni[etcd3,psycopg3]==4.1.5", tarball, "ab" * 32, (), True)
    return PatroniInstall(wheelhouse)


def test_our_unit_runs_the_venv_patroni_and_stops_postgresql_through_it() -> None:
    unit = render_unit(install(), "4.1.5")
    lines = {line.partition("=")[0]: line.partition("=")[2] for line in unit.splitlines()}
    assert lines["ExecStart"] == "/opt/patroni/current/bin/patroni /etc/patroni/config.yml"
    assert lines["User"] == lines["Group"] == "postgres"
    assert lines["ExecReload"] == "/bin/kill -s HUP $MAINPID"
    assert lines["KillMode"] == "process"
    assert lines["Restart"] == "no"
    assert int(lines["TimeoutSec"]) >= 300  # a shutdown checkpoint, not Debian's 30 s
    assert lines["WantedBy"] == "multi-user.target"
    assert install().venv == "/opt/patroni/venv-" + "ab" * 6
    assert install().patronictl == "/opt/patroni/current/bin/patronictl"


def test_config_yml_is_checked_by_the_venv_patroni_ignoring_busy_ports() -> None:
    check = config_check(install())
    assert check == (
        "/opt/patroni/current/bin/patroni --validate-config --ignore-listen-port {path}"
    )


def test_a_member_restart_stops_postgresql_through_patroni_and_never_adopts() -> None:
    command = restart_command("/var/lib/postgresql/15/pg-dc1", "/usr/lib/postgresql/15/bin")
    stop = command.index("systemctl stop patroni.service")
    leftover = command.index("pg_ctl -D /var/lib/postgresql/15/pg-dc1 stop -m fast")
    start = command.index("systemctl start patroni.service")
    assert stop < leftover < command.index("systemctl daemon-reload") < start
    assert "restart" not in command  # stop, then start: the new unit starts PostgreSQL
    assert command.startswith("set -e;")


# ---- the release roll: a table of observed clusters and the planned steps ----

V3, V4 = "3.0.2", "4.1.5"
NAMES = ("n1", "n2", "n3")


def member(
    name: str, role: str, state: str = "streaming", lag: int | None = 0
) -> dict[str, object]:
    raw: dict[str, object] = {"name": name, "role": role, "state": state, "host": name}
    if role not in ("leader", "standby_leader"):
        raw["lag"] = lag
    elif state == "streaming":
        raw["state"] = "running"
    return raw


def observed(*members: dict[str, object]) -> PatroniClusterState:
    return parse_cluster_document({"members": list(members)}, None)


HEALTHY = (member("n1", "leader"), member("n2", "sync_standby"), member("n3", "replica"))
STANDBY_SITE = (
    member("n1", "standby_leader"),
    member("n2", "replica"),
    member("n3", "replica"),
)


def plan(
    members: tuple[dict[str, object], ...],
    versions: dict[str, str | None],
    synchronous: bool = True,
) -> list[tuple[str, str | None, str | None]]:
    steps = upgrade_steps(observed(*members), versions, V4, NAMES, 1024, synchronous)
    return [(s.action, s.member, s.candidate) for s in steps]


@pytest.mark.parametrize(
    ("members", "versions", "synchronous", "expected"),
    [
        pytest.param(
            HEALTHY, dict.fromkeys(NAMES, V3), True,
            [("restart", "n3", None), ("restart", "n2", None),
             ("switchover", "n1", None), ("restart", "n1", None)],
            id="all-old: async replica, sync standby, switchover, old leader",
        ),
        pytest.param(HEALTHY, dict.fromkeys(NAMES, V4), True, [], id="all-current: nothing"),
        pytest.param(
            HEALTHY, {"n1": V3, "n2": V4, "n3": V4}, True,
            [("switchover", "n1", "n2"), ("restart", "n1", None)],
            id="replicas done: switchover to the upgraded sync standby",
        ),
        pytest.param(
            (member("n1", "leader"), member("n2", "replica"), member("n3", "replica")),
            {"n1": V3, "n2": V4, "n3": V4}, True,
            [("wait", "n1", None), ("restart", "n1", None)],
            id="replicas done, no sync standby assigned yet: wait",
        ),
        pytest.param(
            (member("n1", "leader"), member("n2", "replica"), member("n3", "replica")),
            {"n1": V3, "n2": V4, "n3": V4}, False,
            [("switchover", "n1", "n2"), ("restart", "n1", None)],
            id="asynchronous cluster: any upgraded replica takes over",
        ),
        pytest.param(
            (member("n1", "replica"), member("n2", "leader"), member("n3", "sync_standby")),
            {"n1": V3, "n2": V4, "n3": V4}, True,
            [("restart", "n1", None)],
            id="mid-roll resumed: the switched-over old leader is a replica now",
        ),
        pytest.param(
            HEALTHY, {"n1": V3, "n2": V4, "n3": V3}, True,
            [("restart", "n3", None), ("switchover", "n1", None), ("restart", "n1", None)],
            id="mid-roll resumed: one replica left",
        ),
        pytest.param(
            STANDBY_SITE, dict.fromkeys(NAMES, V3), False,
            [("restart", "n2", None), ("restart", "n3", None),
             ("switchover", "n1", None), ("restart", "n1", None)],
            id="standby cluster: the standby leader is rolled like a leader",
        ),
        pytest.param(
            STANDBY_SITE, {"n1": V3, "n2": V4, "n3": V4}, False,
            [("switchover", "n1", "n2"), ("restart", "n1", None)],
            id="standby cluster: switchover away from the standby leader",
        ),
        pytest.param(
            (member("n1", "leader"),), {"n1": V3}, True,
            [("restart", "n1", None)],
            id="one-member cluster: restarted in place",
        ),
    ],
)  # fmt: skip
def test_upgrade_steps(
    members: tuple[dict[str, object], ...],
    versions: dict[str, str | None],
    synchronous: bool,
    expected: list[tuple[str, str | None, str | None]],
) -> None:
    if len(members) == 1:
        steps = upgrade_steps(observed(*members), versions, V4, ("n1",), 1024, synchronous)
        assert [(s.action, s.member, s.candidate) for s in steps] == expected
        return
    assert plan(members, versions, synchronous) == expected


@pytest.mark.parametrize(
    ("members", "versions", "why"),
    [
        pytest.param(
            HEALTHY[:2], {"n1": V3, "n2": V3}, "member n3 is missing",
            id="a member is missing",
        ),
        pytest.param(
            (member("n1", "leader"), member("n2", "sync_standby"),
             member("n3", "replica", state="starting")),
            dict.fromkeys(NAMES, V3), "replica n3 is starting",
            id="a replica is not streaming",
        ),
        pytest.param(
            (member("n1", "leader"), member("n2", "sync_standby"),
             member("n3", "replica", lag=10**9)),
            dict.fromkeys(NAMES, V3), "replica n3 lags",
            id="a replica lags",
        ),
        pytest.param(
            HEALTHY, {"n1": V3, "n2": None, "n3": V3}, "release of n2 is unknown",
            id="a member's release cannot be read",
        ),
        pytest.param(
            (member("n1", "replica"), member("n2", "sync_standby"), member("n3", "replica")),
            dict.fromkeys(NAMES, V3), "no leader",
            id="no leader",
        ),
    ],
)  # fmt: skip
def test_upgrade_refused_when_the_cluster_is_not_fit(
    members: tuple[dict[str, object], ...], versions: dict[str, str | None], why: str
) -> None:
    steps = upgrade_steps(observed(*members), versions, V4, NAMES, 1024, True)
    assert [s.action for s in steps] == ["refuse"]
    assert why in steps[0].why


def test_a_stopped_member_alone_is_no_reason_to_roll() -> None:
    # All running members current, one stopped: it starts on the new release anyway.
    assert plan(HEALTHY[:2], {"n1": V4, "n2": V4}) == []


def test_patroni_3_master_and_4_primary_are_read_alike_mid_roll() -> None:
    cluster = {"members": [member("n1", "leader"), member("n2", "sync_standby")]}
    old = parse_cluster_document(cluster, {"role": "master", "patroni": {"version": V3}})
    new = parse_cluster_document(cluster, {"role": "primary", "patroni": {"version": V4}})
    assert old.local_role == new.local_role == "primary"
    assert (old.local_version, new.local_version) == (V3, V4)


def test_postgresql_checks_client_certificates_against_the_root_and_every_dc_crl() -> None:
    passwords = {"superuser": "s", "replication": "r", "rewind": "w", "restapi": "a"}
    parameters = yaml.safe_load(render(spec(), passwords))["postgresql"]["parameters"]
    # One file with the root's CRL and every DC's: PostgreSQL checks the whole chain.
    assert parameters["ssl_crl_file"] == "/etc/plinth/tls/crl/all.crl.pem"
    assert parameters["ssl_ca_file"] == "/etc/plinth/tls/patroni/ca.crt"
