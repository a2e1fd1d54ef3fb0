"""haproxy without Docker: rendered configuration and the show-stat parser."""

from __future__ import annotations

from facts.haproxy import MISSING, parse_show_stat
from operations.haproxy import CLIENT_PEM, Backend, HaproxyInput
from plinth.certificates import CertificateSpec
from plinth.model import HaproxySettings, PatroniSettings
from plinth.pki import Profile


def test_primary_and_replica_ports_checked_over_mutual_tls() -> None:
    spec = HaproxyInput(
        settings=HaproxySettings(),
        patroni=PatroniSettings(),
        vips=("10.0.0.100",),
        servers=(Backend("dc1-n1", "10.0.0.11", "dc1-n1.dc1.example.internal"),),
        tls=CertificateSpec("haproxy", Profile.CLIENT, "dc1-n1.dc1.example.internal", (), ()),
    )
    text = spec.render()
    assert "bind 10.0.0.100:5000" in text and "bind 10.0.0.100:5001" in text
    assert "http-check send meth OPTIONS uri /primary" in text
    assert "http-check send meth OPTIONS uri /replica?lag=16MB" in text
    assert (
        "check-ssl verify required ca-file /etc/plinth/tls/haproxy/ca.crt "
        f"crl-file /etc/plinth/tls/crl/all.crl.pem crt {CLIENT_PEM}" in text
    )
    assert "on-marked-down shutdown-sessions" in text
    assert (
        "server dc1-n1 10.0.0.11:5432 check port 8008 verifyhost dc1-n1.dc1.example.internal"
        in text
    )
    assert "stats socket /run/haproxy/admin.sock" in text
    assert "maxconn 4000" in text


def test_show_stat() -> None:
    output = [
        "# pxname,svname,qcur,status",
        "postgresql_primary,FRONTEND,0,OPEN",
        "postgresql_primary,dc1-n1,0,UP",
        "postgresql_primary,dc1-n2,0,DOWN",
        "postgresql_primary,BACKEND,0,UP",
    ]
    servers = parse_show_stat(output)
    assert servers is not None
    assert [(s.server, s.status) for s in servers] == [("dc1-n1", "UP"), ("dc1-n2", "DOWN")]
    assert parse_show_stat([MISSING]) is None
