"""etcd without Docker: the EtcdCluster parser and the rendered configuration."""

from __future__ import annotations

import json

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.etcd import MISSING, parse_etcd_cluster
from operations.etcd import EtcdInput
from plinth.certificates import CertificateSpec
from plinth.model import EtcdSettings
from plinth.pki import Profile

IDS = {
    "dc1-n1": 16057772532665027087,
    "dc1-n2": 6316666726012206514,
    "dc1-n3": 10534626562388926423,
}
URL = {
    "dc1-n1": "https://10.231.1.11:2379",
    "dc1-n2": "https://10.231.1.12:2379",
    "dc1-n3": "https://10.231.1.13:2379",
}


def members_doc() -> str:
    return json.dumps(
        {
            "header": {"member_id": IDS["dc1-n1"]},
            "members": [
                {"ID": i, "name": n, "peerURLs": [], "clientURLs": [URL[n]]} for n, i in IDS.items()
            ],
        }
    )


def status_doc(names: list[str], leader: str = "dc1-n1") -> str:
    return json.dumps(
        [
            {
                "Endpoint": URL[n],
                "Status": {
                    "header": {"member_id": IDS[n], "raft_term": 2},
                    "leader": IDS[leader],
                    "raftIndex": 8,
                    "raftTerm": 2,
                },
            }
            for n in names
        ]
    )


def health_doc(healthy: dict[str, bool]) -> str:
    return json.dumps(
        [
            {
                "endpoint": URL[n],
                "health": ok,
                **({} if ok else {"error": "context deadline exceeded"}),
            }
            for n, ok in healthy.items()
        ]
    )


def output(members: str, status: str, health: str) -> list[str]:
    return [
        "--plinth-etcd-members--", members,
        "--plinth-etcd-status--", status,
        "--plinth-etcd-health--", health,
    ]  # fmt: skip


def test_healthy_cluster_with_leader_and_hex_ids() -> None:
    names = list(IDS)
    state = parse_etcd_cluster(
        output(members_doc(), status_doc(names), health_doc(dict.fromkeys(names, True)))
    )
    assert state is not None and state.healthy
    assert state.leader == "dc1-n1"
    n1 = state.member("dc1-n1")
    assert n1 is not None and n1.id == "ded8ab0a6d860a0f" and n1.raft_index == 8
    assert state.problems() == []


def test_stopped_member_is_unhealthy_and_named() -> None:
    # etcdctl prints the reachable endpoints' status and health, then fails.
    state = parse_etcd_cluster(
        output(
            members_doc(),
            status_doc(["dc1-n1", "dc1-n2"]),
            health_doc({"dc1-n1": True, "dc1-n2": True, "dc1-n3": False}),
        )
    )
    assert state is not None and not state.healthy
    assert state.leader == "dc1-n1"
    assert state.problems() == ["member dc1-n3 unhealthy: context deadline exceeded"]


def test_no_quorum_falls_back_to_endpoints() -> None:
    state = parse_etcd_cluster(output("{}", "[]", health_doc({"dc1-n1": False})))
    assert state is not None and not state.healthy
    assert state.members[0].client_url == URL["dc1-n1"]
    assert "no single leader" in state.problems()


def test_missing_etcdctl_and_garbage() -> None:
    assert parse_etcd_cluster([MISSING]) is None
    with pytest.raises(FactProcessError):
        parse_etcd_cluster(["--plinth-etcd-members--", "not json"])
    with pytest.raises(FactProcessError):
        parse_etcd_cluster(output("{}", "not json", "[]"))


def test_rendered_config_is_tls_only_with_client_cert_auth() -> None:
    tls = CertificateSpec(
        "etcd", Profile.PEER, "dc1-n1.x.internal", (), ("10.0.0.11",), "etcd", "etcd"
    )
    spec = EtcdInput(
        name="dc1-n1",
        address="10.0.0.11",
        settings=EtcdSettings(),
        members=(("dc1-n1", "10.0.0.11"), ("dc1-n2", "10.0.0.12"), ("dc1-n3", "10.0.0.13")),
        token="lab-dc1-etcd",
        tls=tls,
        datacenter="dc1",
    )
    text = spec.render()
    assert "http://" not in text
    assert 'ETCD_CLIENT_CERT_AUTH="true"' in text and 'ETCD_PEER_CLIENT_CERT_AUTH="true"' in text
    assert (
        'ETCD_INITIAL_CLUSTER="dc1-n1=https://10.0.0.11:2380,dc1-n2=https://10.0.0.12:2380,'
        'dc1-n3=https://10.0.0.13:2380"'
    ) in text
    assert 'ETCD_CERT_FILE="/etc/plinth/tls/etcd/etcd-chain.crt"' in text
    assert 'ETCD_DATA_DIR="/var/lib/etcd/lab-dc1-etcd"' in text
    assert spec.endpoints[2] == "https://10.0.0.13:2379"


def test_election_timeout_rule_names_the_field() -> None:
    with pytest.raises(ValueError, match="election_timeout_ms"):
        EtcdSettings(heartbeat_interval_ms=500, election_timeout_ms=1000)


def test_clients_and_peers_are_checked_against_the_crl_of_the_members_datacenter() -> None:
    tls = CertificateSpec("etcd", Profile.PEER, "dc2-n1.x.internal", (), ("10.0.2.11",))
    spec = EtcdInput(
        name="dc2-n1",
        address="10.0.2.11",
        settings=EtcdSettings(),
        members=(("dc2-n1", "10.0.2.11"),),
        token="lab-dc2-etcd",
        tls=tls,
        datacenter="dc2",
    )
    text = spec.render()
    # etcd reads only the first CRL of a file: the DC's own, not all.crl.pem.
    assert 'ETCD_CLIENT_CRL_FILE="/etc/plinth/tls/crl/dc2.crl.pem"' in text
    assert 'ETCD_PEER_CRL_FILE="/etc/plinth/tls/crl/dc2.crl.pem"' in text
    assert "all.crl.pem" not in text
