"""The facts' commands run against real openssl output in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from pyinfra.api import StringCommand
from pyinfra.api.exceptions import FactProcessError

from facts.pki import (
    CertificateOnHost,
    CertificateSigningRequest,
    CrlHashLinks,
    DeployedCertificate,
    HashedCrl,
)
from operations.pki import unhashed_issuers

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def run(command: StringCommand) -> list[str]:
    result = subprocess.run(
        ["sh", "-c", command.get_raw_value()], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "svc.key", tmp_path / "svc.crt"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(key)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-new", "-x509", "-key", str(key), "-subj", "/CN=svc.dc1.example",
         "-days", "2", "-addext", "subjectAltName=DNS:svc.dc1.example,IP:10.1.0.7",
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def fact(cert: Path, key: Path) -> CertificateOnHost:
    f = DeployedCertificate()
    return f.process(run(f.command(str(cert), str(key))))


def test_present_and_matching(files: tuple[Path, Path]) -> None:
    cert, key = files
    info = fact(cert, key)
    assert info.cert_present and info.key_present and info.key_matches is True
    assert info.subject == "CN=svc.dc1.example" and info.issuer == "CN=svc.dc1.example"
    assert info.dns_names == ("svc.dc1.example",) and info.ip_addresses == ("10.1.0.7",)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert info.serial == parsed.serial_number
    assert info.not_after == parsed.not_valid_after_utc
    assert info.cert_pem == cert.read_bytes()
    assert b"PUBLIC KEY" in (info.public_key_pem or b"")


def test_output_never_contains_private_key(files: tuple[Path, Path]) -> None:
    cert, key = files
    f = DeployedCertificate()
    output = "\n".join(run(f.command(str(cert), str(key))))
    assert "PRIVATE KEY" not in output


def test_mismatch(files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _ = files
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(other)], check=True)  # fmt: skip
    assert fact(cert, other).key_matches is False


def test_absent(files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = files
    nothing = fact(tmp_path / "no.crt", tmp_path / "no.key")
    assert (nothing.cert_present, nothing.key_present, nothing.key_matches) == (False, False, None)
    key_only = fact(tmp_path / "no.crt", key)
    assert not key_only.cert_present and key_only.key_present and key_only.public_key_pem
    cert_only = fact(cert, tmp_path / "no.key")
    assert cert_only.cert_present and not cert_only.key_present and cert_only.key_matches is None


def test_damaged_files_raise_fact_process_error(files: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = files
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(FactProcessError, match="not a PEM certificate"):
        fact(bad, key)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("junk\n")
    with pytest.raises(FactProcessError, match="cannot read the private key"):
        fact(cert, bad_key)
    with pytest.raises(FactProcessError, match="unexpected output"):
        DeployedCertificate().process(["surprise"])


def test_csr(files: tuple[Path, Path]) -> None:
    _, key = files
    f = CertificateSigningRequest()
    pem = f.process(run(f.command(str(key), "etcd/peer")))
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=etcd/peer"
    with pytest.raises(FactProcessError):
        f.process(["error"])


def test_a_hashed_crl_directory_is_rebuilt_only_for_what_it_lacks() -> None:
    fact = CrlHashLinks()
    found = fact.process(
        [
            "dc1 2790f70f dc1.crl.pem /etc/plinth/tls/crl/dc1.crl.pem",
            "dc2 1a2b3c4d - /etc/plinth/tls/crl/dc2.crl.pem",  # rehash never ran
            "root - - -",  # its CRL file is missing on the host
        ]
    )
    assert found[0] == HashedCrl(
        "dc1", "2790f70f", "dc1.crl.pem", "/etc/plinth/tls/crl/dc1.crl.pem"
    )
    assert unhashed_issuers(found, ["dc1", "dc2", "root"]) == ["dc2", "root"]
    assert unhashed_issuers(found[:1], ["dc1"]) == []
    with pytest.raises(FactProcessError):
        fact.process(["dc1 only-two"])
