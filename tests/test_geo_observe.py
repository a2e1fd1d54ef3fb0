"""What the DC commands observe: the sites' shape from the model (plinth/topology/geo.py)
and the parsers from what the existing facts read (plinth/geo/observe.py).

The documents are written from the code that produces them: Patroni 4.1.5's
``get_postgresql_status``/``_write_status_response`` (``/patroni``) and ``/config``,
``pg_controldata``'s labels (PostgreSQL 15, C locale), the timeline fact's rows
(facts/postgresql.py) and pyinfra's ``SystemdStatus``."""

from __future__ import annotations

from pathlib import Path

import pytest

from facts.postgresql import TimelineSwitch, parse_lsn, parse_postgres_timeline
from facts.redis import RedisNode
from plinth.geo.observe import (
    PgMember,
    PgRole,
    PgSite,
    RedisSite,
    airflow_units,
    parse_controldata,
    pg_member,
    pg_site,
    running,
    slots,
    standby_source,
    stopped_member,
    with_lineage,
)
from plinth.model import Role, load_environment
from plinth.topology.geo import geo_topology

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = geo_topology(load_environment(REPO / "inventory" / "example-prod.yaml"))

# GET /patroni of a Patroni 4.1.5 primary (xlog.location: pg_current_wal_flush_lsn()).
PRIMARY = {
    "state": "running",
    "postmaster_start_time": "2026-12-07 10:00:01.123456+00:00",
    "role": "primary",
    "server_version": 150010,
    "xlog": {"location": 1514933032},
    "timeline": 3,
    "replication": [
        {
            "usename": "replicator",
            "application_name": "dc1-db2",
            "client_addr": "10.40.1.12",
            "state": "streaming",
            "sync_state": "sync",
            "sync_priority": 1,
        }
    ],
    "dcs_last_seen": 1765101601,
    "database_system_identifier": "7446120339251961874",
    "patroni": {"version": "4.1.5", "scope": "pg-dc1", "name": "dc1-db1"},
}

# GET /patroni of dc2's standby leader, streaming from dc1's VIP.
STANDBY_LEADER = {
    "state": "running",
    "role": "standby_leader",
    "server_version": 150010,
    "xlog": {
        "received_location": 1514933032,
        "replayed_location": 1514929832,
        "replayed_timestamp": "2026-12-07 10:20:11.512345+00:00",
        "paused": False,
    },
    "timeline": 3,
    "latest_end_lsn": 1514933032,
    "replication_state": "streaming",
    "database_system_identifier": "7446120339251961874",
    "patroni": {"version": "4.1.5", "scope": "pg-dc2", "name": "dc2-db1"},
}

# /config of dc2 (bootstrapped as a standby cluster of dc1's VIP).
DC2_CONFIG = {
    "ttl": 20,
    "loop_wait": 2,
    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": {}},
    "standby_cluster": {
        "host": "10.40.1.100",
        "port": 5000,
        "primary_slot_name": "standby_dc2",
        "create_replica_methods": ["basebackup"],
    },
}
DC1_CONFIG = {"ttl": 20, "slots": {"standby_dc2": {"type": "physical"}}, "pause": False}

CONTROLDATA_PRIMARY = """\
pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7446120339251961874
Database cluster state:               shut down
pg_control last modified:             Mon 07 Dec 2026 10:21:40 AM UTC
Latest checkpoint location:           0/5A4C0F28
Latest checkpoint's REDO location:    0/5A4C0F28
Latest checkpoint's REDO WAL file:    00000003000000000000005A
Latest checkpoint's TimeLineID:       3
Latest checkpoint's PrevTimeLineID:   3
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
wal_level setting:                    replica
""".splitlines()

CONTROLDATA_STANDBY = """\
Database system identifier:           7446120339251961874
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/5A000060
Latest checkpoint's TimeLineID:       3
Minimum recovery ending location:     0/5A3C0F28
Min recovery ending loc's timeline:   3
""".splitlines()

HISTORY_3 = "1\t0/3000000\tno recovery target specified\n2\t0/4000000\tno recovery target\n"


def test_topology_of_the_example() -> None:
    dc1, dc2 = TOPOLOGY.site("dc1"), TOPOLOGY.site("dc2")
    assert TOPOLOGY.model_active == "dc1"
    assert dc1.postgresql == dc1.etcd == dc1.redis == ("dc1-db1", "dc1-db2", "dc1-db3")
    assert dc1.schedulers == ("dc1-app1", "dc1-app2")
    assert dc1.airflow == ("dc1-app1", "dc1-app2", "dc1-app3")
    assert dc1.keepalived == ("dc1-edge1", "dc1-edge2")
    assert (dc2.scope, dc2.slot, dc2.redis_master_name) == ("pg-dc2", "standby_dc2", "redis-dc2")
    assert dc1.postgresql_vip == "10.40.1.100:5000"
    assert TOPOLOGY.site_streaming_from("10.40.1.100") == "dc1"
    assert TOPOLOGY.site_streaming_from("10.40.2.11") is None
    assert TOPOLOGY.host_at("10.40.2.12") == "dc2-db2"
    assert TOPOLOGY.site_of("dc2-app3") == "dc2"
    assert TOPOLOGY.self_demotion_seconds == 22  # ttl 20 + loop_wait 2


def test_a_primary_from_its_patroni() -> None:
    member = pg_member("dc1-db1", PRIMARY)
    assert member.role is PgRole.PRIMARY and member.writable and member.running
    assert (member.timeline, member.flushed) == (3, 1514933032)
    assert member.received is None and member.replayed is None
    assert member.system_id == "7446120339251961874"
    assert member.position == 1514933032


def test_patroni_3_calls_the_primary_master() -> None:
    assert pg_member("n1", {**PRIMARY, "role": "master"}).role is PgRole.PRIMARY


def test_a_standby_leader_from_its_patroni() -> None:
    member = pg_member("dc2-db1", STANDBY_LEADER)
    assert member.role is PgRole.STANDBY_LEADER and not member.writable
    assert member.state == "streaming"  # replication_state, as /cluster shows it
    assert (member.received, member.replayed, member.sender_end) == (
        1514933032,
        1514929832,
        1514933032,
    )
    assert member.flushed is None


def test_a_standby_whose_receiver_stopped_is_running_not_streaming() -> None:
    doc = {k: v for k, v in STANDBY_LEADER.items() if k != "replication_state"}
    assert pg_member("dc2-db1", doc).state == "running"


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"state": "stopped", "role": "primary"},
        {"state": "starting", "role": "replica"},
        {"state": "running", "role": "uninitialized"},
    ],
)
def test_no_running_postgresql_is_no_role(doc: dict[str, object] | None) -> None:
    member = pg_member("dc1-db1", doc)
    assert member.role is None and not member.writable and not member.running


def test_lineage_from_the_timeline_fact() -> None:
    rows = [
        "recovery|f",
        "timeline|3",
        "lsn|0/5A4C0F28",
        "received|",
        f"history|00000003.history|{HISTORY_3.encode().hex()}",
    ]
    position = parse_postgres_timeline(rows)
    member = with_lineage(pg_member("dc1-db1", PRIMARY), position)
    assert member.history == (TimelineSwitch(1, 0x3000000), TimelineSwitch(2, 0x4000000))
    assert member.flushed == 1514933032  # Patroni's flushed position is kept
    assert with_lineage(member, None) is member


def test_a_stopped_primary_from_pg_controldata() -> None:
    control = parse_controldata(CONTROLDATA_PRIMARY)
    assert control.cluster_state == "shut down"
    assert (control.checkpoint, control.timeline) == (parse_lsn("0/5A4C0F28"), 3)
    assert control.min_recovery_end is None and control.min_recovery_timeline is None
    member = stopped_member("dc1-db1", control, HISTORY_3)
    assert member.role is None and member.state == "stopped" and not member.writable
    assert member.checkpoint == parse_lsn("0/5A4C0F28") == member.position
    assert member.history is not None and len(member.history) == 2
    assert member.system_id == "7446120339251961874"


def test_a_stopped_standby_from_pg_controldata() -> None:
    member = stopped_member("dc1-db2", parse_controldata(CONTROLDATA_STANDBY))
    assert member.replayed == parse_lsn("0/5A3C0F28") == member.position
    assert member.timeline == 3
    assert member.history is None  # not read: unknown, not empty


def test_pg_controldata_must_be_pg_controldata() -> None:
    with pytest.raises(ValueError):
        parse_controldata(["hello: world"])


def test_the_standby_source_is_the_site_whose_vip_it_names() -> None:
    assert standby_source(DC2_CONFIG, TOPOLOGY) == "dc1"
    assert standby_source(DC1_CONFIG, TOPOLOGY) is None
    assert standby_source(None, TOPOLOGY) is None
    assert standby_source({"standby_cluster": None}, TOPOLOGY) is None
    with pytest.raises(ValueError, match=r"10\.9\.9\.9 is no site"):
        standby_source({"standby_cluster": {"host": "10.9.9.9"}}, TOPOLOGY)
    assert slots(DC1_CONFIG) == {"standby_dc2"}
    assert slots(DC2_CONFIG) == frozenset()


def test_a_site_from_its_members_and_config() -> None:
    site = pg_site(
        [pg_member("dc2-db2", None), pg_member("dc2-db1", STANDBY_LEADER)], DC2_CONFIG, TOPOLOGY
    )
    assert [m.name for m in site.members] == ["dc2-db1", "dc2-db2"]
    assert site.standby_of == "dc1" and site.config_read and not site.paused
    assert site.leader is not None and site.leader.name == "dc2-db1"
    assert site.position == 1514933032 and site.timeline == 3
    unread = pg_site([], None, TOPOLOGY, last_known=42)
    assert not unread.config_read and unread.position == 42 and unread.leader is None


def test_two_primaries_are_no_leader() -> None:
    one, two = pg_member("a", PRIMARY), pg_member("b", PRIMARY)
    site = PgSite(members=(one, two))
    assert site.leader is None and len(site.writable) == 2


def test_a_paused_redis_master_is_not_writable() -> None:
    master = RedisNode(address="10.40.1.11", role="master", offset=7)
    replica = RedisNode(address="10.40.1.12", role="slave", master_host="10.40.1.11")
    down = RedisNode(address="10.40.1.13", error="Could not connect")
    site = RedisSite(nodes=(master, replica, down))
    assert site.master == master and site.writable == (master,)
    assert RedisSite(nodes=(master,), paused=True).writable == ()


def test_units_from_systemd_status() -> None:
    status = {
        "airflow-scheduler.service": True,
        "airflow-api-server.service": True,
        "airflow-worker.service": False,
        "redis-sentinel.service": True,
    }
    roles = (Role.AIRFLOW_API, Role.AIRFLOW_SCHEDULER, Role.AIRFLOW_WORKER)
    assert airflow_units(roles, status) == {
        "airflow-api-server": True,
        "airflow-scheduler": True,
        "airflow-worker": False,
    }
    assert airflow_units((Role.REDIS,), status) == {}
    hosts = {"dc1-db1": status, "dc1-db2": {"redis-sentinel.service": False}}
    assert running(hosts, "redis-sentinel") == {"dc1-db1"}


def test_positions_of_a_member() -> None:
    member = PgMember("x", PgRole.REPLICA, "streaming", received=10, replayed=8, checkpoint=9)
    assert member.position == 10
    assert PgMember("y", None, "stopped").position is None
