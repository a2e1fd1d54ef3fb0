"""keepalived without Docker: rendered configuration, the VIP checks it is given, and the
VrrpState parser."""

from __future__ import annotations

import json
from pathlib import Path

import plinth.lab.topology as topo
from facts.keepalived import STATE_DIR, parse_interfaces, parse_vrrp_state
from operations.haproxy import haproxy_input
from operations.keepalived import (
    CHECK_DIR,
    HAPROXY_PRIMARY_PROXY,
    HAPROXY_STATS_SOCKET,
    KEEPALIVED_CHECK,
    SCRIPT_USER,
    VIP_CHECK,
    VIP_CHECK_SOURCE,
    KeepalivedInput,
    VrrpInstance,
    keepalived_input,
)
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.model import Environment, KeepalivedSettings, parse_environment
from plinth.pki import Profile
from plinth.vip_check import MODE_EDGE, MODE_POSTGRESQL, CheckConfig, load_config


def context(env: Environment, name: str) -> HostContext:
    host = next(h for h in env.hosts if h.name == name)
    return HostContext(env, Path("lab.yaml"), host, env.datacenters_by_name[host.datacenter])


def checks(env: Environment, name: str) -> dict[str, CheckConfig]:
    spec = keepalived_input(context(env, name))
    return {vip.instance: vip.check for vip in spec.vips if vip.check is not None}


def test_unicast_vrrp_with_track_and_notify_scripts() -> None:
    spec = KeepalivedInput(
        host="dc1-n1",
        address="10.0.0.11",
        prefix=24,
        priority=150,
        peers=("10.0.0.12", "10.0.0.13"),
        vips=(VrrpInstance("pg_dc1", "10.0.0.100", 51),),
        settings=KeepalivedSettings(),
    )
    text = spec.render("eth0")
    assert "unicast_src_ip 10.0.0.11" in text
    assert "        10.0.0.12\n        10.0.0.13\n" in text
    assert "virtual_router_id 51" in text and "10.0.0.100/24 dev eth0" in text
    assert "nopreempt" in text and "state BACKUP" in text
    assert "enable_script_security" in text and "chk_haproxy" in text
    assert "notify /usr/local/libexec/plinth/keepalived-notify" in text
    assert "{path}" in KEEPALIVED_CHECK
    assert "garp_master_refresh 10" in text


def test_vip_check_is_a_track_script_of_its_instance() -> None:
    check = CheckConfig(mode=MODE_POSTGRESQL, instance="pg_dc1", state_file="/x")
    spec = KeepalivedInput(
        host="dc1-n1",
        address="10.0.0.11",
        prefix=24,
        priority=150,
        peers=("10.0.0.12",),
        vips=(VrrpInstance("pg_dc1", "10.0.0.100", 51, ("haproxy",), check),),
        settings=KeepalivedSettings(garp_master_refresh=0, check_fall=3),
    )
    text = spec.render("eth0")
    assert f'script "{VIP_CHECK} {CHECK_DIR}/pg_dc1.json"' in text
    assert "timeout 2\n    fall 3\n    rise 2" in text
    assert "        chk_haproxy\n        chk_vip_pg_dc1\n" in text
    assert "garp_master_refresh" not in text
    # keepalived -t is run on a copy whose scripts run as root (2.2.7); the real one not.
    assert f"script_user {SCRIPT_USER}" in text
    assert VIP_CHECK_SOURCE.endswith("plinth/vip_check.py")


def test_small_lab_checks_from_the_model() -> None:
    env = parse_environment(topo.build_environment("small"))
    found = checks(env, "dc1-n1")
    pg, edge = found["pg_dc1"], found["edge_dc1"]
    assert pg.mode == MODE_POSTGRESQL and pg.members == ("dc1-n1", "dc1-n2", "dc1-n3")
    assert pg.stats_socket == HAPROXY_STATS_SOCKET and pg.proxy == HAPROXY_PRIMARY_PROXY
    assert pg.grace == 2 * env.components.patroni.ttl
    assert pg.state_file == f"{STATE_DIR}/pg_dc1.vip-check.json"
    assert edge.mode == MODE_EDGE
    # n1 itself (always answers), its two peers at nginx and squid, which are also the
    # registry's and Airflow's upstreams
    assert set(edge.witnesses) == {"dc1-n1", "dc1-n2", "dc1-n3"}
    assert edge.witnesses["dc1-n1"] == ()
    # nginx (registry, airflow), squid, then the upstreams the same host runs
    assert [t.port for t in edge.witnesses["dc1-n2"]] == [5443, 8444, 3128, 5000, 8443]
    assert {t.address for t in edge.witnesses["dc1-n2"]} == {"10.231.1.12"}
    assert set(edge.upstreams) == {"registry", "airflow"}
    assert len(edge.upstreams["registry"]) == 3
    assert load_config(edge.to_json()) == edge
    assert edge.timeout < env.components.keepalived.check_timeout


def test_full_lab_edge_check_counts_peers_and_app_hosts() -> None:
    env = parse_environment(topo.build_environment("full"))
    found = checks(env, "dc1-edge1")
    assert set(found) == {"pg_dc1", "edge_dc1"}
    assert found["pg_dc1"].members == ("dc1-db1", "dc1-db2", "dc1-db3")
    edge = found["edge_dc1"]
    assert set(edge.witnesses) == {"dc1-edge1", "dc1-edge2", "dc1-app1", "dc1-app2"}
    assert [t.port for t in edge.witnesses["dc1-edge2"]] == [5443, 8444, 3128]
    assert [t.port for t in edge.witnesses["dc1-app1"]] == [5000, 8443]
    assert [len(edge.upstreams[v]) for v in ("registry", "airflow")] == [2, 2]


def test_haproxy_serves_the_check_a_read_only_socket_and_the_primary_backend() -> None:
    env = parse_environment(topo.build_environment("small"))
    tls = CertificateSpec("haproxy", Profile.CLIENT, "dc1-n1.x", (), ())
    text = haproxy_input(context(env, "dc1-n1"), tls).render()
    assert (
        f"stats socket {HAPROXY_STATS_SOCKET} mode 660 user root group {SCRIPT_USER} level user"
        in text
    )
    assert f"listen {HAPROXY_PRIMARY_PROXY}\n" in text
    # haproxy's servers carry the host names the check counts as the cell's members
    assert "server dc1-n3 " in text
    # the admin socket is untouched: not for the script user
    assert "stats socket /run/haproxy/admin.sock mode 660 level admin" in text


def test_vrrp_state() -> None:
    addresses = [
        {"ifname": "lo", "addr_info": [{"local": "127.0.0.1"}]},
        {"ifname": "eth0", "addr_info": [{"local": "10.0.0.11"}, {"local": "10.0.0.100"}]},
    ]
    output = [
        "--plinth-vrrp-vips--", "10.0.0.100 10.0.0.101",
        "--plinth-vrrp-addresses--", json.dumps(addresses),
        "--plinth-vrrp-states--", "pg_dc1 MASTER 150 1795729750",
        "--plinth-vrrp-service--", "active",
    ]  # fmt: skip
    state = parse_vrrp_state(output)
    assert state.held == ("10.0.0.100",) and state.holds("10.0.0.100")
    assert state.instances == {"pg_dc1": "MASTER"} and state.running


def test_interfaces() -> None:
    lines = ["2: eth0    inet 10.0.0.11/24 brd 10.0.0.255 scope global eth0\\       valid_lft"]
    assert parse_interfaces(lines) == {"10.0.0.11": "eth0"}
