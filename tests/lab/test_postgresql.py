"""The PostgreSQL HA cell in the small lab: etcd, Patroni/PostgreSQL, haproxy, keepalived."""

from __future__ import annotations

from pathlib import Path

import pytest

from facts.etcd import etcd_cluster_command, parse_etcd_cluster
from plinth.model import Role
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

ETCD_TLS = "/etc/plinth/tls/etcd"


def etcd_endpoints(lab: Lab) -> tuple[str, ...]:
    port = lab.environment.components.etcd.client_port
    return tuple(f"https://{h.address}:{port}" for h in lab.environment.hosts_with(Role.ETCD))


def test_etcd_has_three_healthy_members_over_tls(deployed_small_lab: Lab, tmp_path: Path) -> None:
    lab = deployed_small_lab
    members = [h.name for h in lab.environment.hosts_with(Role.ETCD)]
    for name in members:
        remote = lab.host(name, tmp_path)
        command = etcd_cluster_command(
            f"{ETCD_TLS}/ca.crt", f"{ETCD_TLS}/etcd-chain.crt", f"{ETCD_TLS}/etcd.key",
            etcd_endpoints(lab),
        )  # fmt: skip
        state = parse_etcd_cluster(remote.check_output(command).splitlines())
        assert state is not None and state.healthy, state
        assert sorted(m.name for m in state.members) == sorted(members)
        assert state.leader in members
        key = remote.file(f"{ETCD_TLS}/etcd.key")
        assert key.user == "etcd" and key.mode == 0o600
        assert "ENCRYPTED" not in remote.check_output(f"head -1 {ETCD_TLS}/etcd.key")


def test_etcd_refuses_plaintext_and_clients_without_a_certificate(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    first = lab.environment.hosts_with(Role.ETCD)[0]
    remote = lab.host(first.name, tmp_path)
    url = f"{first.address}:{lab.environment.components.etcd.client_port}"
    # the same request succeeds with a client certificate...
    ok = remote.run(
        f"curl -sf --cacert {ETCD_TLS}/ca.crt --cert {ETCD_TLS}/etcd-chain.crt "
        f"--key {ETCD_TLS}/etcd.key https://{url}/health"
    )
    assert ok.rc == 0 and '"health":"true"' in ok.stdout
    # ...and fails in plaintext, or over TLS without one
    assert remote.run(f"curl -sf -m 5 http://{url}/health").rc != 0
    assert remote.run(f"curl -sf -m 5 --cacert {ETCD_TLS}/ca.crt https://{url}/health").rc != 0
    # peers too: the raft port wants a certificate
    peer = f"{first.address}:{lab.environment.components.etcd.peer_port}"
    assert remote.run(f"curl -sf -m 5 --cacert {ETCD_TLS}/ca.crt https://{peer}/version").rc != 0
