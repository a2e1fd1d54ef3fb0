"""keepalived without Docker: rendered configuration and the VrrpState parser."""

from __future__ import annotations

import json

from facts.keepalived import parse_interfaces, parse_vrrp_state
from operations.keepalived import KEEPALIVED_CHECK, KeepalivedInput, VrrpInstance
from plinth.model import KeepalivedSettings


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


def test_status_reads_the_state_directory_the_notify_script_writes() -> None:
    from operations.keepalived import STATE_DIR
    from plinth.cli.cluster import KEEPALIVED_STATE_DIR

    assert KEEPALIVED_STATE_DIR == STATE_DIR
