"""The PKI on real hosts: keys stay on them, renewal and rotation, revocation, secrets."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from plinth.passphrase import get_passphrase
from plinth.pki import PkiStore
from tests.lab.conftest import DEPLOY, REPO, Lab, plinth

pytestmark = pytest.mark.lab

STATE = REPO / "inventory" / "lab"
SPEC_DIR = "/etc/plinth/tls/host"


def issuance_lines() -> list[dict[str, str]]:
    return [json.loads(line) for line in (STATE / "pki" / "issued.jsonl").read_text().splitlines()]


def remote_text(lab: Lab, host: str, tmp: Path, command: str) -> str:
    return str(lab.host(host, tmp).check_output(command))


def put_remote(lab: Lab, host: str, tmp: Path, path: str, data: bytes) -> None:
    address = next(str(h.address) for h in lab.environment.hosts if h.name == host)
    subprocess.run(
        ["ssh", "-F", str(lab.ssh_config(tmp)), f"root@{address}", f"cat > {path}"],
        input=data,
        check=True,
    )


def public_pem(key: Any) -> str:
    return str(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
        .strip()
    )


def deployed_cert(lab: Lab, host: str, tmp: Path) -> x509.Certificate:
    pem = remote_text(lab, host, tmp, f"cat {SPEC_DIR}/host.crt")
    return x509.load_pem_x509_certificate(pem.encode())


def test_keys_are_made_on_hosts_and_never_exist_on_the_controller(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    host_public_keys = set()
    for host in lab.environment.hosts:
        remote = lab.host(host.name, tmp_path)
        key = remote.file(f"{SPEC_DIR}/host.key")
        assert key.mode == 0o600 and key.user == "root"
        # the chain verifies against the platform root installed in the trust store
        verify = remote.run(
            f"openssl verify -CAfile {SPEC_DIR}/ca.crt -untrusted {SPEC_DIR}/host-chain.crt "
            f"{SPEC_DIR}/host.crt"
        )
        assert verify.rc == 0, verify.stderr
        assert (
            remote.run(
                f"openssl verify -CApath /etc/ssl/certs -untrusted {SPEC_DIR}/host-chain.crt "
                f"{SPEC_DIR}/host.crt"
            ).rc
            == 0
        )
        cert = deployed_cert(lab, host.name, tmp_path)
        pub_from_key = remote_text(
            lab, host.name, tmp_path, f"openssl pkey -in {SPEC_DIR}/host.key -pubout"
        )
        assert public_pem(cert.public_key()) == pub_from_key.strip()
        host_public_keys.add(pub_from_key.strip())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert lab.environment.fqdn(host) in sans.get_values_for_type(x509.DNSName)

    # No private key matching any host certificate exists anywhere on the controller's
    # project tree or temporary directories; CA keys are all encrypted.
    for base in (REPO, Path("/tmp"), Path("/var/tmp")):
        for root, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if d not in (".venv", ".git", "node_modules", "proc")]
            for name in files:
                path = Path(root) / name
                try:
                    if path.stat().st_size > 100_000 or not path.is_file():
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                if b"PRIVATE KEY-----" not in data:
                    continue
                if b"ENCRYPTED PRIVATE KEY" in data:
                    continue
                try:
                    key = serialization.load_pem_private_key(data, password=None)
                except (ValueError, TypeError):
                    continue
                public = public_pem(key.public_key())
                assert public not in host_public_keys, f"leaf key of a host found at {path}"
    for ca_key in (STATE / "pki").rglob("*.key.enc"):
        assert b"ENCRYPTED PRIVATE KEY" in ca_key.read_bytes()


def test_certificate_inside_the_renewal_window_is_reissued(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    victim = lab.environment.hosts[1].name
    current = deployed_cert(lab, victim, tmp_path)
    # Same key, names and profile, but 29 of 90 days left: inside the last third.
    store = PkiStore(STATE)
    issuer_key = store.intermediate_key("dc1", get_passphrase("lab", True, REPO / ".lab"))
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(current.subject)
        .issuer_name(current.issuer)
        .public_key(current.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=61))
        .not_valid_after(now + dt.timedelta(days=29))
    )
    for extension in current.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    aging = builder.sign(issuer_key, current.signature_hash_algorithm)  # type: ignore[arg-type]
    put_remote(
        lab,
        victim,
        tmp_path,
        f"{SPEC_DIR}/host.crt",
        aging.public_bytes(serialization.Encoding.PEM),
    )

    status = plinth("pki", "status", "lab", check=False)
    assert status.returncode == 1
    assert any(
        victim in line and "expires in 28d" in line for line in status.stdout.splitlines()
    ), status.stdout
    preview = plinth("preview", "lab")
    assert "reason: reissue host certificate: expires in 28d" in preview.stdout

    plinth(*DEPLOY)
    renewed = deployed_cert(lab, victim, tmp_path)
    assert renewed.serial_number not in (aging.serial_number, current.serial_number)
    assert renewed.not_valid_after_utc - now > dt.timedelta(days=89)
    assert issuance_lines()[-1]["host"] == victim
    green = plinth("pki", "status", "lab", "--json", check=False)
    assert green.returncode == 0, green.stdout
    rows = json.loads(green.stdout)["certificates"]
    assert all(r["ok"] for r in rows)
    host_rows = [r for r in rows if r["service"] == "host"]
    assert sorted(r["host"] for r in host_rows) == sorted(h.name for h in lab.environment.hosts)


def test_rotation_with_new_keys(deployed_small_lab: Lab, tmp_path: Path) -> None:
    lab = deployed_small_lab
    names = [h.name for h in lab.environment.hosts]
    before = {
        n: remote_text(lab, n, tmp_path, f"openssl pkey -in {SPEC_DIR}/host.key -pubout")
        for n in names
    }
    plinth("pki", "rotate", "lab", "--service", "host", "--keys")
    for name in names:
        after = remote_text(lab, name, tmp_path, f"openssl pkey -in {SPEC_DIR}/host.key -pubout")
        assert after != before[name]
        cert = deployed_cert(lab, name, tmp_path)
        assert public_pem(cert.public_key()) == after.strip()
    assert plinth("preview", "lab", "--expect-no-changes", check=False).returncode == 0
    unknown = plinth("pki", "rotate", "lab", "--service", "nosuch", check=False)
    assert unknown.returncode == 1 and "unknown service 'nosuch'" in unknown.stderr


def test_revocation_reaches_the_hosts_and_replaces_the_certificate(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    victim = lab.environment.hosts[2].name
    serial_number = deployed_cert(lab, victim, tmp_path).serial_number
    serial = format(serial_number, "X")
    result = plinth("pki", "revoke", "lab", serial, "--reason", "key_compromise", "--apply")
    assert f"revoked {serial}" in result.stdout
    for host in lab.environment.hosts:
        # Compared as numbers: openssl prints an odd-length serial with a leading 0.
        crl = x509.load_pem_x509_crl(
            remote_text(lab, host.name, tmp_path, "cat /etc/plinth/tls/crl/dc1.crl.pem").encode()
        )
        assert crl.get_revoked_certificate_by_serial_number(serial_number) is not None, host.name
    # the revoked certificate was replaced in the same apply
    assert format(deployed_cert(lab, victim, tmp_path).serial_number, "X") != serial
    again = plinth("pki", "revoke", "lab", serial, check=False)
    assert again.returncode == 1 and "already revoked" in again.stderr


def test_client_certificate_for_an_application(deployed_small_lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "client"
    plinth("pki", "client-cert", "lab", "--cn", "grid-etl", "--out", str(out))
    assert (out / "grid-etl.key").stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(out / "ca.crt"),
            "-purpose",
            "sslclient",
            str(out / "grid-etl.crt"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    again = plinth("pki", "client-cert", "lab", "--cn", "grid-etl", "--out", str(out), check=False)
    assert again.returncode == 1 and again.stderr.startswith("error: ")
