"""Redis + Sentinel without a host: fact parsing, gates, roll planning, rendering."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.redis import (
    _NODE,
    _SECTION,
    MISSING,
    UNREACHABLE,
    CliTls,
    parse_replication,
    parse_sentinels,
)
from operations.redis import (
    Passwords,
    RedisInput,
    command_line,
    render_redis_conf,
    render_sentinel_conf,
    roll_plan,
    runtime_settings,
    sentinel_settings,
    setting_difference,
    static_settings,
)
from plinth.certificates import CertificateSpec
from plinth.model import RedisSettings, Role
from plinth.pki import Profile

TLS = CertificateSpec("redis", Profile.PEER, "n1", ("n1",), ("10.0.0.1",), "redis", "redis")
NODES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
PASSWORDS = Passwords({"default": "d-secret", "replication": "r-secret", "sentinel": "s-secret"})


def spec(**settings: object) -> RedisInput:
    return RedisInput(
        name="n1",
        address="10.0.0.1",
        datacenter="dc1",
        environment="lab",
        settings=RedisSettings.model_validate(settings),
        roles=frozenset({Role.REDIS, Role.SENTINEL}),
        redis_nodes=NODES,
        sentinels=NODES,
        redis_tls=TLS,
        sentinel_tls=TLS,
    )


def config_lines(settings: dict[str, str]) -> list[str]:
    return [item for kv in settings.items() for item in kv]


def node_block(address: str, info: str, version: str = "7.0.15", **config: str) -> list[str]:
    wanted = static_settings(spec()) | runtime_settings(RedisSettings(), 100) | config
    return [
        f"{_NODE} {address}",
        _SECTION,
        *info.strip().splitlines(),
        _SECTION,
        "# Server\r",
        f"redis_version:{version}\r",
        f"run_id:run-{address}\r",
        _SECTION,
        *config_lines(wanted),
    ]


MASTER_INFO = """
# Replication\r
role:master\r
connected_slaves:2\r
slave0:ip=10.0.0.2,port=6379,state=online,offset=1000,lag=0\r
slave1:ip=10.0.0.3,port=6379,state=online,offset=1000,lag=1\r
master_repl_offset:1000\r
"""


def replica_info(link: str = "up", master: str = "10.0.0.1") -> str:
    return (
        f"role:slave\r\nmaster_host:{master}\r\nmaster_port:6379\r\n"
        f"master_link_status:{link}\r\nmaster_sync_in_progress:0\r\nmaster_repl_offset:1000\r\n"
    )


def healthy_cell() -> list[str]:
    return [
        *node_block("10.0.0.1", MASTER_INFO),
        *node_block("10.0.0.2", replica_info()),
        *node_block("10.0.0.3", replica_info()),
    ]


def sentinel_block(address: str, master: str = "10.0.0.1", quorum: str = "OK") -> list[str]:
    return [
        f"{_NODE} {address}",
        _SECTION,
        master,
        "6379",
        _SECTION,
        f"{quorum} 3 usable Sentinels. Quorum and failover authorization can be reached",
        _SECTION,
        *config_lines(
            {"name": "redis-dc1", "ip": master, "flags": "master", "num-slaves": "2"}
            | {"num-other-sentinels": "2"}
            | sentinel_settings(RedisSettings())
        ),
        _SECTION,
        "redis_version:7.0.15",
        f"run_id:s-{address}",
    ]


def test_healthy_cell_parses_and_has_no_problems() -> None:
    state = parse_replication(healthy_cell())
    assert state is not None
    assert state.master is not None and state.master.address == "10.0.0.1"
    assert [r.address for r in state.replicas] == ["10.0.0.2", "10.0.0.3"]
    assert state.master.replicas[1].lag == 1
    assert state.problems() == []
    view = parse_sentinels([line for a in NODES for line in sentinel_block(a)])
    assert view is not None and view.master == ("10.0.0.1", 6379)
    assert view.problems() == []


def test_a_node_down_is_named() -> None:
    output = [
        *node_block(
            "10.0.0.1", MASTER_INFO.replace("port=6379,state=online,offset=1000,lag=1", "port=x")
        ),
        f"{_NODE} 10.0.0.2",
        _SECTION,
        "Could not connect to Redis at 10.0.0.2:6379: Connection refused",
        UNREACHABLE,
        _SECTION,
        UNREACHABLE,
        _SECTION,
        UNREACHABLE,
        *node_block("10.0.0.3", replica_info(link="down")),
    ]
    with pytest.raises(FactProcessError, match="slave1"):
        parse_replication(output)
    waiting = "port=6379,state=wait_bgsave,offset=0,lag=0"
    output[: len(node_block("10.0.0.1", MASTER_INFO))] = node_block(
        "10.0.0.1", MASTER_INFO.replace("port=6379,state=online,offset=1000,lag=1", waiting)
    )
    state = parse_replication(output)
    assert state is not None
    problems = state.problems()
    assert any(p.startswith("redis 10.0.0.2 is down (Could not connect") for p in problems)
    assert "replica 10.0.0.3 has its master link down" in problems
    assert "replica 10.0.0.3 is wait_bgsave, lag 0 s" in problems


def test_two_masters_and_a_wrong_follower_are_problems() -> None:
    output = [
        *node_block("10.0.0.1", MASTER_INFO),
        *node_block("10.0.0.2", MASTER_INFO),
        *node_block("10.0.0.3", replica_info(master="10.0.0.9")),
    ]
    state = parse_replication(output)
    assert state is not None and state.master is None
    assert "several redis masters: 10.0.0.1, 10.0.0.2" in state.problems()


def test_sentinel_problems_quorum_and_disagreement() -> None:
    output = [
        *sentinel_block("10.0.0.1"),
        *sentinel_block("10.0.0.2", quorum="NOQUORUM"),
        *sentinel_block("10.0.0.3", master="10.0.0.2"),
    ]
    view = parse_sentinels(output)
    assert view is not None and view.master is None
    problems = view.problems()
    assert any("10.0.0.2: CKQUORUM failed (NOQUORUM" in p for p in problems)
    assert "sentinels disagree on the master" in problems


def test_unknown_master_set_and_missing_client() -> None:
    output = [f"{_NODE} 10.0.0.1", _SECTION, "", _SECTION, "ERR No such master with that name"]
    output += [_SECTION, "ERR No such master with that name", _SECTION, "redis_version:7.0.15"]
    view = parse_sentinels(output)
    assert view is not None
    assert view.problems() == ["sentinel 10.0.0.1 does not monitor the master set"]
    assert parse_sentinels([MISSING]) is None
    assert parse_replication([MISSING]) is None


def test_roll_plan_names_drifted_and_outdated_nodes() -> None:
    output = [
        *node_block("10.0.0.1", MASTER_INFO),
        *node_block("10.0.0.2", replica_info(), **{"io-threads": "2"}),
        *node_block("10.0.0.3", replica_info(), version="7.0.11"),
    ]
    state = parse_replication(output)
    view = parse_sentinels([line for a in NODES for line in sentinel_block(a)])
    plan = roll_plan(spec(), state, view, "7.0.15")
    assert plan.data_nodes == ("10.0.0.2 (io-threads)", "10.0.0.3 (runs 7.0.11, 7.0.15 installed)")
    assert plan.sentinels == ()
    assert not roll_plan(spec(), parse_replication(healthy_cell()), view, "7.0.15")
    assert roll_plan(spec(), parse_replication(healthy_cell()), view, "7.2.4").sentinels


def test_setting_difference_only_reports_changes() -> None:
    live = runtime_settings(RedisSettings(), 100)
    wanted = runtime_settings(RedisSettings(maxmemory_mb=64), 100)
    assert setting_difference(live, wanted) == {"maxmemory": str(64 * 1024 * 1024)}
    assert setting_difference(live, live) == {}


def test_bootstrap_files_carry_the_master_and_tls_lives_on_the_command_line() -> None:
    replica = render_redis_conf(spec(), PASSWORDS, ("10.0.0.2", 6379))
    assert "replicaof 10.0.0.2 6379" in replica
    assert "masteruser replication" in replica and "masterauth r-secret" in replica
    assert "\nreplicaof " not in render_redis_conf(spec(), PASSWORDS, None)
    sentinel = render_sentinel_conf(spec(), PASSWORDS, ("10.0.0.3", 6379))
    assert "sentinel monitor redis-dc1 10.0.0.3 6379 2" in sentinel
    assert "sentinel down-after-milliseconds redis-dc1 3000" in sentinel
    args = command_line(spec(), TLS, 6379, data_node=True)
    assert "--port 0 --tls-port 6379" in args
    assert "--tls-auth-clients yes --tls-replication yes" in args
    assert "secret" not in args


def test_passwords_never_show_in_repr() -> None:
    assert "secret" not in repr(PASSWORDS)
    assert "secret" not in repr((spec(), PASSWORDS))
    assert len(PASSWORDS.acl_hashes()["default"]) == 64


def test_cli_reads_the_password_from_a_file() -> None:
    command = CliTls("/ca", "/cert", "/key", "/etc/plinth/redis/default.auth").command(
        "10.0.0.1", 6379, "INFO", "replication"
    )
    assert 'REDISCLI_AUTH="$(cat /etc/plinth/redis/default.auth)"' in command
    assert "--tls --cacert /ca --cert /cert --key /key -h 10.0.0.1 -p 6379 INFO replication" in (
        command
    )
