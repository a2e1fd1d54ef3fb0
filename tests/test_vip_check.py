"""The VIP check (plinth/vip_check.py): one observation in, one verdict out, plus the
parsing and probing the hosts run (the same file is uploaded to them)."""

from __future__ import annotations

import ast
import json
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import plinth.vip_check as vc
from plinth.vip_check import (
    CheckConfig,
    CheckState,
    EdgeObservation,
    PrimaryObservation,
    ServerStat,
    Target,
    decide,
)

CELL = ("dc1-n1", "dc1-n2", "dc1-n3")
GRACE = 24.0
NOW = 1000.0

# haproxy 2.6 `show stat` header (management guide, section 9.1; fields found by name).
HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,"
    "sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,"
    "check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,"
    "req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
    "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,"
    "agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,"
    "intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,"
    "qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,srid,sess_other,h1sess,h2sess,h3sess,req_other,h1req,h2req,h3req,"
    "proto,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,"
)
COLUMNS = HEADER[2:].split(",")


def stat_line(proxy: str, server: str, status: str, check: str, code: str = "") -> str:
    values = dict.fromkeys(COLUMNS, "")
    values.update(
        pxname=proxy, svname=server, status=status, check_status=check, check_code=code,
        check_desc="Layer7 check passed" if check == "L7OK" else "", type="2", mode="tcp",
    )  # fmt: skip
    return ",".join(values[c] for c in COLUMNS)


def show_stat(*servers: tuple[str, str, str]) -> str:
    lines = [HEADER, "postgresql_primary,FRONTEND," + "," * (len(COLUMNS) - 3)]
    for proxy in ("postgresql_primary", "postgresql_replicas"):
        for name, status, check in servers:
            if proxy == "postgresql_replicas":  # the replica backend tells the opposite
                status = "DOWN" if status.startswith("UP") else "UP"
            lines.append(stat_line(proxy, name, status, check))
    lines.append("postgresql_primary,BACKEND," + "," * (len(COLUMNS) - 3))
    return "\n".join(lines) + "\n\n"


def cell(*servers: tuple[str, str, str]) -> PrimaryObservation:
    return PrimaryObservation(
        CELL, tuple(ServerStat("postgresql_primary", n, s, c) for n, s, c in servers)
    )


UP, DOWN = "UP", "DOWN"
PRIMARY_OK, REPLICA_OK = (UP, "L7OK"), (DOWN, "L7STS")
CUT = (DOWN, "L4TOUT")

PRIMARY_CASES = [
    # (name, observation, state, expected hold, expected case)
    (
        "healthy: primary up, all answer",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *PRIMARY_OK)),
        CheckState(), True, "primary",
    ),
    (
        "2 of 3 reachable, primary among them",
        cell(("dc1-n1", *CUT), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *PRIMARY_OK)),
        CheckState(), True, "primary",
    ),
    (
        "isolated primary (issue 21: dc1-n3 cut from both peers) releases",
        cell(("dc1-n1", *CUT), ("dc1-n2", DOWN, "L4CON"), ("dc1-n3", *PRIMARY_OK)),
        CheckState(), False, "isolated",
    ),
    (
        "isolated primary, peers failing at TLS or socket level",
        cell(("dc1-n1", "DOWN", "L6TOUT"), ("dc1-n2", DOWN, "SOCKERR"), ("dc1-n3", *PRIMARY_OK)),
        CheckState(), False, "isolated",
    ),
    (
        "isolated replica holding the VIP releases, though the primary never moved",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *CUT), ("dc1-n3", "UP 1/2", "L7TOUT")),
        CheckState(), False, "isolated",
    ),
    (
        "switchover gap: majority answers, nobody primary yet",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *REPLICA_OK)),
        CheckState(), True, "no-primary",
    ),
    (
        "failover in progress: old primary unreachable, within the grace",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *CUT)),
        CheckState(primary_missing_since=NOW - 17), True, "no-primary",
    ),
    (
        "no primary past the grace (asymmetric: a peer may reach it) releases",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *CUT)),
        CheckState(primary_missing_since=NOW - GRACE), False, "no-primary-past-grace",
    ),
    (
        "a primary seen again ends the grace clock",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *PRIMARY_OK), ("dc1-n3", *CUT)),
        CheckState(primary_missing_since=NOW - 100), True, "primary",
    ),
    (
        "right after a haproxy reload (INI) nothing is concluded: held",
        cell(("dc1-n1", UP, "INI"), ("dc1-n2", UP, "INI"), ("dc1-n3", UP, "* INI")),
        CheckState(), True, "no-primary",
    ),
    (
        "UP without a completed check is not a primary",
        cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", UP, "INI"), ("dc1-n3", *CUT)),
        CheckState(), True, "no-primary",
    ),
    (
        "a member missing from the stats counts as not answering",
        cell(("dc1-n3", *PRIMARY_OK)),
        CheckState(), False, "isolated",
    ),
    (
        "stats unreadable (haproxy stopped) releases",
        PrimaryObservation(CELL, None, "connection refused"),
        CheckState(), False, "unreadable",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("observation", "state", "hold", "case"),
    [case[1:] for case in PRIMARY_CASES],
    ids=[case[0] for case in PRIMARY_CASES],
)
def test_postgresql_vip(
    observation: PrimaryObservation, state: CheckState, hold: bool, case: str
) -> None:
    verdict = decide(observation, NOW, state, GRACE)
    assert (verdict.hold, verdict.case) == (hold, case), verdict.why


def test_grace_clock_starts_at_the_first_run_without_primary_and_keeps_it() -> None:
    no_primary = cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *CUT))
    first = decide(no_primary, NOW, CheckState(), GRACE)
    assert first.hold and first.state.primary_missing_since == NOW
    later = decide(no_primary, NOW + GRACE - 1, first.state, GRACE)
    assert later.hold and later.state.primary_missing_since == NOW
    past = decide(no_primary, NOW + GRACE, later.state, GRACE)
    assert not past.hold
    back = decide(cell(("dc1-n2", *PRIMARY_OK), ("dc1-n1", *REPLICA_OK)), NOW + 30, past.state)
    assert back.hold and back.state.primary_missing_since is None


def test_planned_switchover_never_releases() -> None:
    """haproxy marks the old primary down and the new one up within seconds: every run
    in between is held, so keepalived never sees a failure to count."""
    states = [
        (PRIMARY_OK, REPLICA_OK),
        (("UP 1/2", "L7STS"), REPLICA_OK),  # old primary demoting, one failed check
        (REPLICA_OK, REPLICA_OK),  # the gap
        (REPLICA_OK, ("DOWN 1/2", "L7OK")),  # new primary answering, not yet risen
        (REPLICA_OK, PRIMARY_OK),
    ]
    state = CheckState()
    for second, (old, new) in enumerate(states):
        verdict = decide(
            cell(("dc1-n1", *old), ("dc1-n2", *new), ("dc1-n3", *REPLICA_OK)),
            NOW + second,
            state,
            GRACE,
        )
        assert verdict.hold, verdict.why
        state = verdict.state


EDGE_CASES = [
    (
        "all reach",
        {"n1": True, "n2": True, "n3": True}, {"registry": True, "airflow": True},
        True, "connected",
    ),
    (
        "one peer down: 2 of 3",
        {"n1": True, "n2": False, "n3": True}, {"registry": True, "airflow": True},
        True, "connected",
    ),
    (
        "cut off from both peers (and the upstreams on them), own upstream fine",
        {"n1": True, "n2": False, "n3": False}, {"registry": True, "airflow": True},
        False, "isolated",
    ),
    (
        "full profile: edge1 cut from edge2 and both app hosts",
        {"edge1": True, "edge2": False, "app1": False, "app2": False}, {"registry": False},
        False, "isolated",
    ),
    (
        "full profile: edge2 dead, apps reachable",
        {"edge1": True, "edge2": False, "app1": True, "app2": True}, {"registry": True},
        True, "connected",
    ),
    (
        "full profile: only the peer answers (2 of 4 is not a majority)",
        {"edge1": True, "edge2": True, "app1": False, "app2": False}, {"registry": False},
        False, "isolated",
    ),
    (
        "one virtual host's upstreams all down: held (the VIP carries squid and the rest)",
        {"n1": True, "n2": True, "n3": True}, {"registry": True, "airflow": False},
        True, "upstream-missing",
    ),
    (
        "squid-only VIP, alone",
        {"n1": True}, {},
        True, "connected",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("witnesses", "upstreams", "hold", "case"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
def test_edge_vip(
    witnesses: dict[str, bool], upstreams: dict[str, bool], hold: bool, case: str
) -> None:
    verdict = decide(EdgeObservation(witnesses, upstreams), NOW, CheckState())
    assert (verdict.hold, verdict.case) == (hold, case), verdict.why


def test_show_stat_parsed_by_column_name() -> None:
    text = show_stat(("dc1-n1", *REPLICA_OK), ("dc1-n2", "UP 1/2", "* L7OK"), ("dc1-n3", *CUT))
    servers = vc.parse_show_stat(text, "postgresql_primary")
    assert servers == (
        ServerStat("postgresql_primary", "dc1-n1", "DOWN", "L7STS"),
        ServerStat("postgresql_primary", "dc1-n2", "UP 1/2", "L7OK"),
        ServerStat("postgresql_primary", "dc1-n3", "DOWN", "L4TOUT"),
    )
    with pytest.raises(ValueError):
        vc.parse_show_stat("Permission denied.\n", "postgresql_primary")


@pytest.fixture
def stats_socket(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A unix socket answering ``show stat`` like haproxy (one answer per connection)."""
    path = tmp_path / "stats.sock"
    answers: list[str] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                assert conn.recv(100) == b"show stat\n"
                conn.sendall(answers[0].encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers
    server.close()


def write_config(tmp_path: Path, config: CheckConfig) -> Path:
    path = tmp_path / f"{config.instance}.json"
    path.write_text(config.to_json())
    return path


def test_main_holds_then_releases_when_isolated(
    tmp_path: Path, stats_socket: tuple[Path, list[str]]
) -> None:
    sock, answers = stats_socket
    config = CheckConfig(
        mode=vc.MODE_POSTGRESQL, instance="pg_dc1", state_file=str(tmp_path / "pg.state.json"),
        stats_socket=str(sock), proxy="postgresql_primary", members=CELL, grace=GRACE,
    )  # fmt: skip
    path = write_config(tmp_path, config)
    answers.append(
        show_stat(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *PRIMARY_OK))
    )
    assert vc.main([str(path)]) == 0
    assert json.loads((tmp_path / "pg.state.json").read_text())["case"] == "primary"
    answers[0] = show_stat(("dc1-n1", *CUT), ("dc1-n2", *CUT), ("dc1-n3", *PRIMARY_OK))
    assert vc.main([str(path)]) == 1
    recorded = json.loads((tmp_path / "pg.state.json").read_text())
    assert recorded["case"] == "isolated" and recorded["hold"] is False


def test_main_releases_when_the_socket_is_gone_or_config_broken(tmp_path: Path) -> None:
    config = CheckConfig(
        mode=vc.MODE_POSTGRESQL, instance="pg_dc1", state_file=str(tmp_path / "s.json"),
        stats_socket=str(tmp_path / "absent.sock"), proxy="postgresql_primary", members=CELL,
    )  # fmt: skip
    assert vc.main([str(write_config(tmp_path, config))]) == 1
    broken = tmp_path / "broken.json"
    broken.write_text('{"mode": "sometimes"}')
    assert vc.main([str(broken)]) == 1
    assert vc.main([]) == 2


def test_edge_probes_connect_in_parallel(tmp_path: Path) -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    open_port = listening.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: refused
    try:
        config = CheckConfig(
            mode=vc.MODE_EDGE, instance="edge_dc1", state_file=str(tmp_path / "e.json"),
            witnesses={
                "n1": (),
                "n2": (Target("127.0.0.1", closed_port), Target("127.0.0.1", open_port)),
                "n3": (Target("127.0.0.1", closed_port),),
            },
            upstreams={"registry": (Target("127.0.0.1", closed_port),)},
            timeout=0.5,
        )  # fmt: skip
        observed = vc.observe_edge(config)
        assert observed.witnesses == {"n1": True, "n2": True, "n3": False}
        assert observed.upstreams == {"registry": False}
        assert vc.load_config(config.to_json()) == config
        assert vc.main([str(write_config(tmp_path, config))]) == 0
    finally:
        listening.close()
        closed.close()


def test_state_from_another_boot_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"primary_missing_since": 5.0, "case": "x", "boot_id": "old"}))
    assert vc.load_state(str(path), "new") == CheckState(boot_id="new")
    assert vc.load_state(str(path), "old").primary_missing_since == 5.0
    path.write_text("not json")
    assert vc.load_state(str(path), "new") == CheckState(boot_id="new")


def test_runs_on_the_hosts_as_is() -> None:
    """The file is executed by the hosts' python3 (3.11 on bookworm): stdlib only, and
    the interpreter line keepalived needs."""
    source = Path(vc.__file__).read_text()
    assert source.startswith("#!/usr/bin/python3 -I\n")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def standby_cell(*servers: tuple[str, str, str]) -> PrimaryObservation:
    return replace(cell(*servers), primary_expected=False)


def test_standby_datacenter_holds_without_a_primary_for_ever() -> None:
    """A standby site's cell is a standby cluster: no member is ever primary. Its VIP (the replica
    port: local reads) is held while a majority answers, past any grace (the full lab
    showed `VIP pg: held by NOBODY` in dc2 before this case existed)."""
    standby = standby_cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *REPLICA_OK), ("dc1-n3", *CUT))
    first = decide(standby, NOW, CheckState(), GRACE)
    much_later = decide(standby, NOW + 100 * GRACE, first.state, GRACE)
    assert (first.hold, first.case) == (True, "standby"), first.why
    assert (much_later.hold, much_later.case) == (True, "standby"), much_later.why


def test_standby_datacenter_still_releases_when_isolated() -> None:
    isolated = standby_cell(("dc1-n1", *REPLICA_OK), ("dc1-n2", *CUT), ("dc1-n3", *CUT))
    verdict = decide(isolated, NOW, CheckState(), GRACE)
    assert (verdict.hold, verdict.case) == (False, "isolated"), verdict.why


def test_the_deploy_expects_a_primary_only_in_the_active_datacenter() -> None:
    from operations.keepalived import vip_check
    from plinth.model import Role, load_environment

    env = load_environment(Path(__file__).resolve().parents[1] / "inventory/example-prod.yaml")
    for dc in env.datacenters:
        vip = env.vip_serving("postgresql", dc.name)
        assert vip is not None
        me = env.hosts_with(Role.HAPROXY, dc.name)[0]
        config = vip_check(env, vip, me, env.hosts_with(Role.KEEPALIVED, dc.name))
        assert config.primary_expected == (dc.name == env.active_site), dc.name
        assert vc.load_config(config.to_json()).primary_expected == config.primary_expected
