"""Revocation that bites (issue 15, item 2): a client certificate revoked with `plinth pki
revoke --apply` is refused by PostgreSQL, nginx, etcd and RabbitMQ, while an unrevoked one
with the same identity keeps working, and the daemons reloaded rather than restarted.

Two client certificates for the probe role (``plinth_probe``) are issued; both must work
first, so a refusal afterwards can only come from the CRL. Patroni's REST API and Redis do
not check CRLs (docs/pki.md, "Who checks the CRL"): they are not asked here.

Every service is dialled the way the host firewall admits the controller (docs/security.md,
"Host firewall"): PostgreSQL and nginx through their VIPs, RabbitMQ on a node, etcd only from
another member (the bundle is copied there and removed afterwards).

The revocation stays in the lab's PKI (a CRL cannot be taken back), which no other test
minds: nothing else uses these two certificates. No model change, so no baseline repair.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from plinth.model import Role
from tests.lab.conftest import Lab, plinth
from tests.lab.test_postgresql import PROBE, dsn, psql

pytestmark = pytest.mark.lab


# ---- helpers: one client, one service each ----


def issue(out: Path) -> Path:
    """A client bundle for the probe role in ``out`` (as an application gets one)."""
    plinth("pki", "client-cert", "lab", "--cn", PROBE, "--out", str(out))
    return out


def serial_of(bundle: Path) -> str:
    """The serial as `plinth pki revoke` takes it (upper-case hex, as in issued.jsonl)."""
    leaf = x509.load_pem_x509_certificates((bundle / f"{PROBE}.crt").read_bytes())[0]
    return format(leaf.serial_number, "X")


def curl(bundle: Path, url: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET with the bundle's certificate; status 0 when the
    server closed the connection instead of answering."""
    result = subprocess.run(
        ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "--cacert", str(bundle / "ca.crt"),
         "--cert", str(bundle / f"{PROBE}.crt"), "--key", str(bundle / f"{PROBE}.key"), url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    body, _, code = result.stdout.rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body + result.stderr


def vip_serving(lab: Lab, service: str) -> Any:
    return next(v for v in lab.environment.vips if service in v.services)


def postgresql(lab: Lab, bundle: Path) -> subprocess.CompletedProcess[str]:
    """``select pg_postmaster_start_time()`` through the PostgreSQL VIP (haproxy passes TLS
    through: PostgreSQL itself checks the certificate) with the bundle's certificate."""
    env = lab.environment
    vip = vip_serving(lab, "postgresql")
    port = str(env.components.haproxy.primary_port)
    conninfo = dsn(lab, bundle, env.vip_fqdn(vip), str(vip.address), port=port)
    return psql(conninfo, "select pg_postmaster_start_time()")


def nginx(lab: Lab, bundle: Path) -> tuple[int, str]:
    """The registry's virtual host (client certificates required) on the edge VIP."""
    vhost = next(v for v in lab.environment.components.nginx.virtual_hosts if v.name == "registry")
    # nginx's certificate names the VIP's address too: no DNS needed on the controller.
    return curl(bundle, f"https://{vip_serving(lab, 'registry').address}:{vhost.port}/v2/")


ETCD_CLIENT_DIR = "/root/plinth-revocation-test"


def etcd(lab: Lab, bundle: Path, tmp: Path) -> tuple[int, str]:
    """etcd's /version on the first member's client port, dialled from the second member
    (only members may reach it) with the bundle's certificate (no etcd user needed)."""
    env = lab.environment
    first, second = env.hosts_with(Role.ETCD)[:2]
    remote = f"{ETCD_CLIENT_DIR}/{bundle.name}"
    ssh = ["ssh", "-F", str(lab.ssh_config(tmp)), f"root@{second.address}"]
    subprocess.run(
        [*ssh, f"mkdir -p {remote} && tar -C {remote} -xf -"],
        input=subprocess.run(
            ["tar", "-C", str(bundle), "-cf", "-", "."], capture_output=True, check=True
        ).stdout,
        check=True,
    )
    url = f"https://{first.address}:{env.components.etcd.client_port}/version"
    result = lab.host(second.name, tmp).run(
        f"curl -sS -m 10 -w '\\n%{{http_code}}' --cacert {remote}/ca.crt "
        f"--cert {remote}/{PROBE}.crt --key {remote}/{PROBE}.key {url}"
    )
    body, _, code = str(result.stdout).rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body + str(result.stderr)


def rabbitmq(lab: Lab, bundle: Path) -> str:
    """'accepted' when the first node's AMQPS listener answers the AMQP header with its
    Connection.Start frame, else the TLS error. Only the handshake matters: the probe CN
    need not be a RabbitMQ user."""
    host = lab.environment.hosts[0]
    context = ssl.create_default_context(cafile=str(bundle / "ca.crt"))
    context.load_cert_chain(bundle / f"{PROBE}.crt", bundle / f"{PROBE}.key")
    port = lab.environment.components.rabbitmq.amqps_port
    try:
        # RabbitMQ's certificate names the FQDN only (no IP SANs, docs/pki.md).
        with (
            socket.create_connection((str(host.address), port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=lab.environment.fqdn(host)) as tls,
        ):
            tls.sendall(b"AMQP\x00\x00\x09\x01")
            # TLS 1.3: the server's verdict on the client arrives with the first read.
            frame = tls.recv(1)
            return "accepted" if frame == b"\x01" else f"unexpected {frame!r}"
    except (ssl.SSLError, ConnectionError) as error:
        return str(error)


def nginx_main_pids(lab: Lab, tmp: Path) -> dict[str, str]:
    """Every nginx host's master PID: a reload keeps it, a restart changes it."""
    return {
        host.name: str(
            lab.host(host.name, tmp).run("systemctl show -p MainPID --value nginx.service").stdout
        ).strip()
        for host in lab.environment.hosts_with(Role.NGINX)
    }


# ---- the test ----


def test_a_revoked_client_is_refused_and_an_unrevoked_one_still_works(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    kept = issue(tmp_path / "kept")
    revoked = issue(tmp_path / "revoked")
    try:
        revoke_and_check(lab, kept, revoked, tmp_path)
    finally:
        second = lab.environment.hosts_with(Role.ETCD)[1]
        lab.host(second.name, tmp_path).run(f"rm -rf {ETCD_CLIENT_DIR}")


def revoke_and_check(lab: Lab, kept: Path, revoked: Path, tmp_path: Path) -> None:
    # 1. Before: both certificates work everywhere.
    for bundle in (kept, revoked):
        before = postgresql(lab, bundle)
        assert before.returncode == 0, before.stderr
        assert nginx(lab, bundle)[0] == 200, nginx(lab, bundle)
        assert etcd(lab, bundle, tmp_path)[0] == 200, etcd(lab, bundle, tmp_path)
        assert rabbitmq(lab, bundle) == "accepted"
    started = postgresql(lab, kept).stdout.strip()
    nginx_pids = nginx_main_pids(lab, tmp_path)

    # 2. Revoke one, and push the CRL with one deploy.
    serial = serial_of(revoked)
    result = plinth("pki", "revoke", "lab", serial, "--reason", "key_compromise", "--apply")
    assert f"revoked {serial}" in result.stdout

    # 3. The revoked one is refused by every daemon that checks CRLs...
    refused = postgresql(lab, revoked)
    assert refused.returncode != 0 and "revoked" in refused.stderr.lower(), refused.stderr
    status, body = nginx(lab, revoked)
    # nginx finishes the handshake and answers 400 "The SSL certificate error".
    assert status == 400, (status, body)
    status, body = etcd(lab, revoked, tmp_path)
    # etcd closes the connection after the handshake when the serial is in its CRL.
    assert status == 0, (status, body)
    assert "CERTIFICATE_REVOKED" in rabbitmq(lab, revoked)

    # 4. ...and the unrevoked one, same identity, still works.
    after = postgresql(lab, kept)
    assert after.returncode == 0, after.stderr
    assert nginx(lab, kept)[0] == 200
    assert etcd(lab, kept, tmp_path)[0] == 200
    assert rabbitmq(lab, kept) == "accepted"

    # 5. Reloaded, not restarted: same postmaster, same nginx master.
    assert after.stdout.strip() == started
    assert nginx_main_pids(lab, tmp_path) == nginx_pids

    # 6. A second run with nothing new changes nothing (and so reloads nothing).
    assert plinth("preview", "lab", "--expect-no-changes", check=False).returncode == 0
