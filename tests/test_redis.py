"""Redis + Sentinel without a host: fact parsing, gates, roll planning, rendering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.redis import (
    _NODE,
    _SECTION,
    MISSING,
    UNREACHABLE,
    SentinelView,
    cell_problems,
    describe,
    parse_replication,
    parse_sentinels,
    replication_command,
    sentinel_command,
)
from operations.redis import (
    Passwords,
    bootstrap_master,
    command_line,
    render_redis_conf,
    render_sentinel_conf,
    roll_plan,
    runtime_settings,
    sentinel_settings,
    setting_difference,
    static_settings,
)
from operations.redis.bootstrap import upload_command
from operations.redis.decide import package_version
from operations.redis.settings import drop_in_path, render_drop_in
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.model import RedisSettings, Role, load_environment
from plinth.pki import Profile
from plinth.releases import BOOKWORM, TRIXIE, KeyValueStore
from plinth.status.render import _render_redis
from plinth.topology.redis import CliTls, RedisInput, Upstream, redis_input

TLS = CertificateSpec("redis", Profile.PEER, "n1", ("n1",), ("10.0.0.1",), "redis", "redis")
NODES = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
REPO = Path(__file__).resolve().parents[1]
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
        store=BOOKWORM.key_value_store,
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
    command = CliTls("/ca", "/cert", "/key", "/etc/plinth/redis/default.auth", "redis-cli").command(
        "10.0.0.1", 6379, "INFO", "replication"
    )
    assert 'REDISCLI_AUTH="$(cat /etc/plinth/redis/default.auth)"' in command
    assert "--tls --cacert /ca --cert /cert --key /key -h 10.0.0.1 -p 6379 INFO replication" in (
        command
    )


# --- a datacenter that follows the active one ------------------------------------------

DC1_NODES = ("10.0.1.11", "10.0.1.12", "10.0.1.13")
DC2_NODES = ("10.0.2.11", "10.0.2.12", "10.0.2.13")


def follower_spec() -> RedisInput:
    return replace(
        spec(),
        name="dc2-db1",
        address=DC2_NODES[0],
        datacenter="dc2",
        redis_nodes=DC2_NODES,
        sentinels=DC2_NODES,
        upstream=Upstream("dc1", DC1_NODES, DC1_NODES),
    )


def dc2_cell(master: str = DC1_NODES[0], first: str | None = None) -> list[str]:
    return [
        *node_block(
            DC2_NODES[0], first or replica_info(master=master), **{"replica-priority": "0"}
        ),
        *node_block(DC2_NODES[1], replica_info(master=master), **{"replica-priority": "0"}),
        *node_block(DC2_NODES[2], replica_info(master=master), **{"replica-priority": "0"}),
    ]


def test_follower_is_derived_from_the_active_datacenter() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    by_dc = {}
    for name in ("dc1-db1", "dc2-db1"):
        host = next(h for h in env.hosts if h.name == name)
        context = HostContext(env, Path(), host, env.datacenters_by_name[host.datacenter])
        by_dc[host.datacenter] = redis_input(context, TLS, TLS)
    assert by_dc["dc1"].upstream is None and by_dc["dc1"].replica_priority == 100
    follower = by_dc["dc2"]
    assert follower.upstream == Upstream(
        "dc1",
        ("10.40.1.11", "10.40.1.12", "10.40.1.13"),
        ("10.40.1.11", "10.40.1.12", "10.40.1.13"),
    )
    assert follower.replica_priority == 0 and follower.cell_sentinels == ()
    # The other way round once dc2 is made the active site.
    swapped = env.model_copy(update={"active_datacenter": "dc2"})
    host = next(h for h in swapped.hosts if h.name == "dc1-db1")
    context = HostContext(swapped, Path(), host, swapped.datacenters_by_name["dc1"])
    dc1 = redis_input(context, TLS, TLS)
    assert dc1.upstream is not None and dc1.upstream.datacenter == "dc2"


def test_follower_bootstraps_as_priority_0_replica_of_the_active_master() -> None:
    follower = follower_spec()
    # The active DC's cell names its master: follow it.
    assert bootstrap_master(follower, ("10.0.1.12", 6379)) == ("10.0.1.12", 6379)
    # The active DC does not answer: its first node (never this DC's own first node).
    assert bootstrap_master(follower, None) == (DC1_NODES[0], 6379)
    conf = render_redis_conf(follower, PASSWORDS, (DC1_NODES[0], 6379))
    assert "replica-priority 0" in conf and f"replicaof {DC1_NODES[0]} 6379" in conf
    assert "masteruser replication" in conf
    # The active DC keeps priority 100 and its own first node as a new cell's master.
    assert "replica-priority 100" in render_redis_conf(spec(), PASSWORDS, None)
    assert bootstrap_master(spec(), None) is None
    assert bootstrap_master(replace(spec(), address="10.0.0.2"), None) == ("10.0.0.1", 6379)
    # Bootstrap reads the active DC's nodes and Sentinels, under the active DC's name.
    cell = follower.upstream_cell()
    assert cell.redis_nodes == DC1_NODES and cell.master_name == "redis-dc1"
    asked = sentinel_command(
        cell.cli("sentinel"), cell.cell_sentinels, cell.settings.sentinel_port, cell.master_name
    )
    assert DC1_NODES[0] in asked and "redis-dc1" in asked


def test_follower_runtime_priority_is_0() -> None:
    follower = follower_spec()
    wanted = runtime_settings(follower.settings, follower.replica_priority)
    assert wanted["replica-priority"] == "0"
    live = runtime_settings(follower.settings, 100)
    assert setting_difference(live, wanted) == {"replica-priority": "0"}


def test_follower_cell_health() -> None:
    upstream = DC1_NODES
    state = parse_replication(dc2_cell())
    assert state is not None
    assert state.follower_problems(upstream) == []
    # Its own gate (state.problems) would call it masterless: the follower gate does not.
    assert "no redis master" in state.problems()
    assert cell_problems(state, SentinelView(()), upstream) == []
    # After a failover in dc1 the Sentinels re-pointed them: still healthy.
    moved = parse_replication(dc2_cell(master=DC1_NODES[1]))
    assert moved is not None and moved.follower_problems(upstream) == []
    # A node promoted here, or following one of its own DC, is a problem.
    split = parse_replication(dc2_cell(first=MASTER_INFO))
    assert split is not None
    assert f"redis {DC2_NODES[0]} is a master, expected a replica of the active DC" in (
        split.follower_problems(upstream)
    )
    local = parse_replication(dc2_cell(master=DC2_NODES[0]))
    assert local is not None
    assert f"replica {DC2_NODES[1]} follows {DC2_NODES[0]}, not the active DC" in (
        local.follower_problems(upstream)
    )
    down = parse_replication(dc2_cell(first=replica_info(link="down", master=DC1_NODES[0])))
    assert down is not None
    assert down.follower_problems(upstream) == [f"replica {DC2_NODES[0]} has its master link down"]


def test_status_shows_the_follower_and_the_remote_replicas() -> None:
    state = parse_replication(dc2_cell())
    cell = describe("redis-dc2", state, SentinelView(()), follower_spec().upstream)
    assert cell["follows"] == {"datacenter": "dc1", "master": DC1_NODES[0]}
    assert cell["problems"] == [] and cell["master"] is None
    assert {n["master_host"] for n in cell["nodes"]} == {DC1_NODES[0]}
    assert {n["replica_priority"] for n in cell["nodes"]} == {"0"}
    text = "\n".join(_render_redis(cell))
    assert f"redis redis-dc2: replicas of dc1's master {DC1_NODES[0]}: healthy" in text
    assert f"slave of {DC1_NODES[0]} link up offset 1000 priority 0" in text
    # dc1's master lists dc2's nodes among its replicas: shown as replicas in another DC.
    info = MASTER_INFO.replace(
        "master_repl_offset",
        f"slave2:ip={DC2_NODES[0]},port=6379,state=online,offset=1000,lag=0\r\nmaster_repl_offset",
    )
    dc1 = parse_replication(
        [
            *node_block("10.0.0.1", info),
            *node_block("10.0.0.2", replica_info()),
            *node_block("10.0.0.3", replica_info()),
        ]
    )
    view = parse_sentinels([line for a in NODES for line in sentinel_block(a)])
    active = describe("redis-dc1", dc1, view)
    assert active["follows"] is None and active["problems"] == []
    assert active["remote_replicas"] == [{"address": DC2_NODES[0], "state": "online", "lag": 0}]
    assert f"{DC2_NODES[0]:<15} replica in another DC: online, lag 0 s" in "\n".join(
        _render_redis(active)
    )


def test_outputs_of_a_following_dc_name_the_active_cell() -> None:
    from plinth.outputs import _redis

    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    dc1, dc2 = _redis(env, "dc1", None), _redis(env, "dc2", None)
    assert dc1 is not None and dc2 is not None
    assert dc1["follows"] is None and dc1["master_name"] == "redis-dc1"
    assert dc2["follows"] == "dc1" and dc2["master_name"] == "redis-dc1"
    assert dc2["sentinels"] == dc1["sentinels"]


# --- the release's key-value store: Redis 7.0 on Debian 12, Valkey 8.1 on Debian 13 ----

REDIS_7, VALKEY_8 = BOOKWORM.key_value_store, TRIXIE.key_value_store


def valkey_spec() -> RedisInput:
    return replace(spec(), store=VALKEY_8)


# Rendered by the code before the store came from the release (git show 5ee839b:...).
BOOKWORM_SERVER_DROP_IN = """\
# managed by plinth: local changes are overwritten on the next deploy
# Settings fixed at start, on the command line so that they win over redis.conf (which
# Redis rewrites). A change here is rolled by the deploy: replicas, Sentinels, failover,
# old master. Restart=always: the rolling restart stops a node with SHUTDOWN (its own
# interface, reachable over TLS from any node) and systemd starts it again.
[Service]
Restart=always
RestartSec=1
ExecStart=
ExecStart=/usr/bin/redis-server /etc/redis/redis.conf --supervised systemd --daemonize no ARGS
# In a container (the lab) systemd cannot set up a user namespace for the service;
# real hosts keep Debian's PrivateUsers=true.
PrivateUsers=false
"""
BOOKWORM_SENTINEL_DROP_IN = """\
# managed by plinth: local changes are overwritten on the next deploy
# Settings fixed at start, on the command line so that they win over sentinel.conf
# (which Sentinel rewrites). Restart=always: the rolling restart stops a Sentinel with
# SHUTDOWN and systemd starts it again.
[Service]
Restart=always
RestartSec=1
ExecStart=
ExecStart=/usr/bin/redis-sentinel /etc/redis/sentinel.conf --supervised systemd --daemonize no ARGS
"""
BOOKWORM_REDIS_CONF = """\
# Written by plinth once, at bootstrap (plinth-bootstrap: lab-dc1); from then on Redis and Sentinel
# own this file: a failover rewrites `replicaof`, the deploy changes settings with
# CONFIG SET + CONFIG REWRITE. Settings fixed at start (TLS, ports, ACL file) come from
# the systemd drop-in's command line, which wins over this file.
# plinth-bootstrap: lab-dc1
dir /var/lib/redis
logfile ""
pidfile /run/redis/redis-server.pid
# Replicas authenticate as the `replication` ACL user (see users.acl).
masteruser replication
masterauth r-secret
min-replicas-to-write 1
min-replicas-max-lag 10
maxmemory 0
maxmemory-policy noeviction
replica-priority 100
replicaof 10.0.0.2 6379
"""


def test_bookworm_host_names_are_unchanged() -> None:
    assert render_drop_in(spec(), False, "ARGS", True) == BOOKWORM_SERVER_DROP_IN
    assert render_drop_in(spec(), True, "ARGS", False) == BOOKWORM_SENTINEL_DROP_IN
    assert drop_in_path(REDIS_7, False) == "/etc/systemd/system/redis-server.service.d/plinth.conf"
    assert drop_in_path(REDIS_7, True) == (
        "/etc/systemd/system/redis-sentinel.service.d/plinth.conf"
    )
    assert render_redis_conf(spec(), PASSWORDS, ("10.0.0.2", 6379)) == BOOKWORM_REDIS_CONF
    sentinel = render_sentinel_conf(spec(), PASSWORDS, ("10.0.0.3", 6379))
    assert '\ndir /var/lib/redis\nlogfile ""\npidfile /run/sentinel/redis-sentinel.pid\n' in (
        sentinel
    )
    assert static_settings(spec())["aclfile"] == "/etc/redis/users.acl"
    assert "--aclfile /etc/redis/users.acl --io-threads 1" in command_line(
        spec(), TLS, 6379, data_node=True
    )
    assert (
        spec()
        .redis_cli("10.0.0.1", "PING")
        .startswith('REDISCLI_AUTH="$(cat /etc/plinth/redis/default.auth)" timeout 5 redis-cli ')
    )
    assert replication_command(spec().cli("default"), NODES, 6379).startswith(
        "command -v redis-cli >/dev/null 2>&1 && "
    )
    assert upload_command(REDIS_7, "/etc/redis/redis.conf.new", REDIS_7.server_config, "640") == (
        "chown redis:redis /etc/redis/redis.conf.new && chmod 640 /etc/redis/redis.conf.new "
        "&& mv -f /etc/redis/redis.conf.new /etc/redis/redis.conf"
    )


def test_trixie_runs_valkey_under_its_own_names() -> None:
    valkey = valkey_spec()
    server = render_drop_in(valkey, False, "ARGS", True)
    assert drop_in_path(VALKEY_8, False) == (
        "/etc/systemd/system/valkey-server.service.d/plinth.conf"
    )
    assert drop_in_path(VALKEY_8, True) == (
        "/etc/systemd/system/valkey-sentinel.service.d/plinth.conf"
    )
    assert (
        "\nExecStart=/usr/bin/valkey-server /etc/valkey/valkey.conf --supervised systemd "
        "--daemonize no ARGS\n"
    ) in server
    assert "win over valkey.conf (which\n# Valkey rewrites)" in server
    assert "PrivateUsers=false" in server
    sentinel_unit = render_drop_in(valkey, True, "ARGS", False)
    assert (
        "\nExecStart=/usr/bin/valkey-sentinel /etc/valkey/sentinel.conf --supervised systemd "
        "--daemonize no ARGS\n"
    ) in sentinel_unit
    conf = render_redis_conf(valkey, PASSWORDS, ("10.0.0.2", 6379))
    assert '\ndir /var/lib/valkey\nlogfile ""\npidfile /run/valkey/valkey-server.pid\n' in conf
    # The directives are Redis's (Valkey reads them): only the host's names differ.
    assert conf.replace("Valkey", "Redis").replace("valkey", "redis") == (
        render_redis_conf(spec(), PASSWORDS, ("10.0.0.2", 6379))
    )
    sentinel = render_sentinel_conf(valkey, PASSWORDS, ("10.0.0.3", 6379))
    assert "\ndir /var/lib/valkey\n" in sentinel
    assert "pidfile /run/sentinel/valkey-sentinel.pid" in sentinel
    assert "sentinel monitor redis-dc1 10.0.0.3 6379 2" in sentinel  # the model's name
    args = command_line(valkey, TLS, 6379, data_node=True)
    assert "--aclfile /etc/valkey/users.acl" in args
    assert static_settings(valkey)["aclfile"] == "/etc/valkey/users.acl"
    # The client is valkey-cli (it reads REDISCLI_AUTH too); no redis-* binary is run.
    facts = [
        replication_command(valkey.cli("default"), NODES, 6379),
        sentinel_command(valkey.cli("sentinel"), NODES, 26379, valkey.master_name),
    ]
    for command in [*facts, valkey.redis_cli("10.0.0.1", "SHUTDOWN", user="sentinel")]:
        assert "valkey-cli --no-auth-warning" in command
        assert "redis-cli" not in command and "redis-server" not in command
    assert facts[0].startswith("command -v valkey-cli >/dev/null 2>&1 && ")
    assert upload_command(VALKEY_8, "/etc/valkey/x.new", VALKEY_8.server_config, "640") == (
        "chown valkey:valkey /etc/valkey/x.new && chmod 640 /etc/valkey/x.new "
        "&& mv -f /etc/valkey/x.new /etc/valkey/valkey.conf"
    )
    for text in (server, sentinel_unit, conf, sentinel, args):
        assert (
            "/etc/redis" not in text and "/var/lib/redis" not in text and "/run/redis" not in text
        )


def test_the_store_comes_from_the_environments_release() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    host = next(h for h in env.hosts if h.name == "dc1-db1")
    context = HostContext(env, Path(), host, env.datacenters_by_name["dc1"])
    assert redis_input(context, TLS, TLS).store is REDIS_7
    # trixie is not supported yet (validate refuses it): set without validation.
    trixie = env.model_copy(update={"release": "trixie"})
    context = HostContext(trixie, Path(), host, trixie.datacenters_by_name["dc1"])
    spec_13 = redis_input(context, TLS, TLS)
    assert spec_13.store is VALKEY_8
    assert spec_13.cli("default").cli == "valkey-cli"


def valkey_server_info(address: str, version: str = "8.1.1") -> list[str]:
    """``INFO server`` of Valkey: its own version, and Redis's 7.2.4 for clients."""
    return [
        "# Server\r",
        "redis_version:7.2.4\r",
        "server_name:valkey\r",
        f"valkey_version:{version}\r",
        f"run_id:run-{address}\r",
    ]


def test_valkey_reports_its_own_version_and_the_roll_compares_it() -> None:
    valkey = valkey_spec()
    wanted = static_settings(valkey) | runtime_settings(RedisSettings(), 100)
    output = []
    for address, info, version in (
        ("10.0.0.1", MASTER_INFO, "8.1.1"),
        ("10.0.0.2", replica_info(), "8.1.1"),
        ("10.0.0.3", replica_info(), "8.1.0"),
    ):
        output += [f"{_NODE} {address}", _SECTION, *info.strip().splitlines(), _SECTION]
        output += [*valkey_server_info(address, version), _SECTION, *config_lines(wanted)]
    state = parse_replication(output)
    assert state is not None and state.problems() == []
    assert [n.version for n in state.nodes] == ["8.1.1", "8.1.1", "8.1.0"]
    sentinels = [f"{_NODE} 10.0.0.1", _SECTION, "10.0.0.1", "6379", _SECTION, "OK 3 usable"]
    sentinels += [_SECTION, "flags", "master", _SECTION, *valkey_server_info("10.0.0.1")]
    view = parse_sentinels(sentinels)
    assert view is not None and view.sentinels[0].version == "8.1.1"
    # Debian 13's valkey-server 8.1.1+dfsg1-3+deb13u3 is the 8.1.1 the daemons report.
    installed = package_version("8.1.1+dfsg1-3+deb13u3")
    assert installed == "8.1.1"
    plan = roll_plan(valkey, state, view, installed)
    assert plan.data_nodes == ("10.0.0.3 (runs 8.1.0, 8.1.1 installed)",) and not plan.sentinels
    assert package_version("5:7.0.15-1~deb12u1") == "7.0.15"


def prepared_commands(store: KeyValueStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every command the deploy of one data node + Sentinel prepares (pyinfra on @local,
    nothing executed; no client on the controller: the cell reads as absent)."""
    from pyinfra.api import Config, FileUploadCommand, FunctionCommand, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.context import ctx_host, ctx_state
    from pyinfra.facts import systemd as systemd_facts

    from facts.redis import RedisReplication, SentinelState
    from operations.redis import redis_node

    monkeypatch.setattr(systemd_facts.SystemdStatus, "command", lambda *a, **k: "true")
    monkeypatch.setattr(systemd_facts.SystemdEnabled, "command", lambda *a, **k: "true")
    for fact in (RedisReplication, SentinelState):
        monkeypatch.setattr(fact, "command", lambda *a, **k: f"echo {MISSING}")
    # pyinfra's Inventory, Config and State.get_op_order are unannotated: called through
    # their types.
    new_inventory = cast("Callable[[tuple[list[str], dict[str, Any]]], Inventory]", Inventory)
    new_config = cast("Callable[[], Config]", Config)
    inventory = new_inventory((["@local"], {}))
    state = State(inventory, new_config())
    connect_all(state)
    add_deploy(state, redis_node, replace(spec(), store=store), PASSWORDS)
    commands: list[str] = []
    op_order = cast("Callable[[], list[str]]", state.get_op_order)
    for op_hash in op_order():
        for host in inventory:
            data = state.ops[host].get(op_hash)
            if data is None:
                continue
            with ctx_state.use(state), ctx_host.use(host):
                for command in data.command_generator():
                    if isinstance(command, FileUploadCommand):
                        commands.append(f"upload {command.dest}")
                    elif isinstance(command, FunctionCommand):
                        commands.append(f"call {command.function.__name__}")
                    else:
                        commands.append(str(command))
    return commands


def test_the_deploy_installs_and_starts_the_releases_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bookworm = prepared_commands(REDIS_7, monkeypatch)
    for expected in (
        "upload /etc/redis/users.acl",
        "chown redis:redis /etc/redis/users.acl",
        "upload /etc/systemd/system/redis-server.service.d/plinth.conf",
        "upload /etc/systemd/system/redis-sentinel.service.d/plinth.conf",
        "systemctl enable redis-server.service",
        "systemctl start redis-server.service",
        "systemctl enable redis-sentinel.service",
        "systemctl start redis-sentinel.service",
    ):
        assert expected in bookworm, expected
    trixie = prepared_commands(VALKEY_8, monkeypatch)
    assert trixie == [
        command.replace("redis-server", "valkey-server")
        .replace("redis-sentinel", "valkey-sentinel")
        .replace("redis-cli", "valkey-cli")
        .replace("/etc/redis", "/etc/valkey")
        .replace("redis:redis", "valkey:valkey")
        for command in bookworm
    ]
    assert "systemctl start valkey-server.service" in trixie
    assert [c for c in trixie if "valkey-cli" in c]  # the readiness probes
    assert not [c for c in trixie if "redis-server" in c or "redis-cli" in c or "/etc/redis" in c]
