from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    PolicyBuilder,
    Store,
    Subject,
    VerificationError,
    VerifiedClient,
)

from plinth.pki import (
    IssuedCertificate,
    PkiError,
    Profile,
    issue_client_bundle,
    read_records,
    sign_csr,
)
from tests.pki.conftest import Pki

Unchanged = Callable[[Path], Callable[[], None]]
"""The conftest ``unchanged`` fixture: ``check = unchanged(dir)`` ... ``check()``."""


def sign(
    pki: Pki,
    profile: Profile,
    cn: str,
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
    dc: str = "dc1",
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    return sign_csr(
        pki.store, dc, pki.csr(key), profile, cn, dns, ips, pki.passphrase,
        "alice", "etcd", "node1", now=now,
    )  # fmt: skip


def chain(issued: IssuedCertificate) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certs = x509.load_pem_x509_certificates(issued.chain_pem)
    return certs[0], certs[1:]


def server_verify(pki: Pki, issued: IssuedCertificate, name: Subject) -> list[x509.Certificate]:
    leaf, intermediates = chain(issued)
    verifier = PolicyBuilder().store(Store([pki.root()])).build_server_verifier(name)
    return verifier.verify(leaf, intermediates)


def client_verify(pki: Pki, issued: IssuedCertificate) -> VerifiedClient:
    leaf, intermediates = chain(issued)
    verifier = PolicyBuilder().store(Store([pki.root()])).build_client_verifier()
    return verifier.verify(leaf, intermediates)


def test_server_profile_verifies_for_dns_and_ip(pki: Pki) -> None:
    dns = ["pg.dc1.grid.example", "db.svc.grid.example"]
    issued = sign(pki, Profile.SERVER, dns[0], dns, ["10.1.0.10", "fd00:1::10"])
    server_verify(pki, issued, x509.DNSName("pg.dc1.grid.example"))
    server_verify(pki, issued, x509.DNSName("db.svc.grid.example"))
    server_verify(pki, issued, x509.IPAddress(ipaddress.ip_address("10.1.0.10")))
    server_verify(pki, issued, x509.IPAddress(ipaddress.ip_address("fd00:1::10")))
    with pytest.raises(VerificationError):
        server_verify(pki, issued, x509.DNSName("other.dc1.grid.example"))
    with pytest.raises(VerificationError):  # a server certificate is no client certificate
        client_verify(pki, issued)


def test_client_profile_verifies_as_client_only(pki: Pki) -> None:
    issued = sign(pki, Profile.CLIENT, "airflow")
    leaf, _ = chain(issued)
    assert leaf.subject.rfc4514_string() == "CN=airflow"
    assert client_verify(pki, issued).chain[0] == leaf
    with pytest.raises(VerificationError):
        server_verify(pki, issued, x509.DNSName("airflow"))


def test_peer_profile_verifies_both_ways(pki: Pki) -> None:
    issued = sign(pki, Profile.PEER, "etcd1.dc1.grid.example",
                  ["etcd1.dc1.grid.example"], ["10.1.0.11"])  # fmt: skip
    server_verify(pki, issued, x509.IPAddress(ipaddress.ip_address("10.1.0.11")))
    subjects = client_verify(pki, issued).subjects
    assert x509.IPAddress(ipaddress.ip_address("10.1.0.11")) in (subjects or [])


def test_leaf_extensions(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    issued = sign(pki, Profile.PEER, "n.dc1.grid.example", ["n.dc1.grid.example"], ["10.1.0.1"],
                  now=now)  # fmt: skip
    leaf, (intermediate,) = chain(issued)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).critical
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=90, minutes=5)
    assert leaf.not_valid_before_utc < now
    assert issued.serial == leaf.serial_number and issued.not_after == leaf.not_valid_after_utc


def test_subject_and_sans_come_from_arguments_not_csr(pki: Pki) -> None:
    issued = sign_csr(pki.store, "dc1", pki.csr(cn="evil.example.com"), Profile.CLIENT, "airflow",
                      (), (), pki.passphrase, "alice", "airflow", "")  # fmt: skip
    leaf, _ = chain(issued)
    assert leaf.subject.rfc4514_string() == "CN=airflow"


@pytest.mark.parametrize(
    ("dns", "ips", "offending"),
    [
        (["pg.dc2.grid.example"], [], "DNS:pg.dc2.grid.example"),
        (["pg.dc1.grid.example.evil.com"], [], "DNS:pg.dc1.grid.example.evil.com"),
        (["evildc1.grid.example"], [], "DNS:evildc1.grid.example"),
        (["pg.dc1.grid.example"], ["10.2.0.5"], "IP:10.2.0.5"),
        (["pg.dc1.grid.example"], ["fd00:2::1"], "IP:fd00:2::1"),
    ],
)
def test_sans_outside_name_constraints_refused(
    pki: Pki, unchanged: Unchanged, dns: list[str], ips: list[str], offending: str
) -> None:
    check = unchanged(pki.dir)
    with pytest.raises(PkiError, match=rf"{offending} outside the name constraints of dc1"):
        sign(pki, Profile.SERVER, "pg.dc1.grid.example", dns, ips)
    check()


def test_dotted_client_cn_outside_constraints_refused(pki: Pki) -> None:
    with pytest.raises(PkiError, match=r"CN:app\.example\.org"):
        sign(pki, Profile.CLIENT, "app.example.org")


def test_verifier_rejects_hand_built_leaf_outside_constraints(pki: Pki) -> None:
    """The constraints hold even against a signer that skipped plinth's own check."""
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = pki.intermediate("dc1")
    now = dt.datetime.now(dt.UTC)
    ski = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .issuer_name(intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("pg.dc2.grid.example")]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(pki.store.intermediate_key("dc1", pki.passphrase), hashes.SHA384())
    )
    verifier = (
        PolicyBuilder()
        .store(Store([pki.root()]))
        .build_server_verifier(x509.DNSName("pg.dc2.grid.example"))
    )
    with pytest.raises(VerificationError, match=r"(?i)name constraint"):
        verifier.verify(leaf, [intermediate])


def test_dc2_leaf_does_not_verify_for_dc1_names(pki: Pki) -> None:
    issued = sign(pki, Profile.SERVER, "pg.dc2.grid.example", ["pg.dc2.grid.example"], dc="dc2")
    server_verify(pki, issued, x509.DNSName("pg.dc2.grid.example"))


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p384", "rsa"],
)
def test_only_p256_keys_signed(
    pki: Pki, unchanged: Unchanged, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    check = unchanged(pki.dir)
    with pytest.raises(PkiError, match=r"only ECDSA P-256"):
        sign_csr(pki.store, "dc1", csr, Profile.CLIENT, "x", (), (), pki.passphrase, "a", "s", "h")
    check()


def test_csr_with_bad_signature_refused(pki: Pki) -> None:
    csr = x509.load_pem_x509_csr(pki.csr())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="proof of possession"):
        sign_csr(
            pki.store, "dc1", tampered, Profile.CLIENT, "x", (), (), pki.passphrase, "a", "s", "h"
        )


def test_profile_rules(pki: Pki) -> None:
    with pytest.raises(PkiError, match="needs the node IP"):
        sign(pki, Profile.PEER, "n.dc1.grid.example", ["n.dc1.grid.example"])
    with pytest.raises(PkiError, match="at least one DNS or IP SAN"):
        sign(pki, Profile.SERVER, "n.dc1.grid.example")
    with pytest.raises(PkiError, match="wildcards"):
        sign(pki, Profile.SERVER, "n", ["*.dc1.grid.example"])


def test_errors_write_nothing(pki: Pki, pki_copy: Pki, unchanged: Unchanged) -> None:
    check = unchanged(pki.dir)
    with pytest.raises(
        PkiError, match=r"cannot decrypt pki/dc1/intermediate.key.enc: wrong PLINTH_PASSPHRASE\?"
    ):
        sign_csr(pki.store, "dc1", pki.csr(), Profile.CLIENT, "x", (), (), "nope", "a", "s", "h")
    with pytest.raises(PkiError, match="unknown datacenter 'dc9'"):
        sign(pki, Profile.CLIENT, "x", dc="dc9")
    expiry = pki.intermediate("dc1").not_valid_after_utc
    with pytest.raises(PkiError, match=rf"intermediate CA of dc1 expired on {expiry:%Y-%m-%d}"):
        sign(pki, Profile.CLIENT, "x", now=expiry + dt.timedelta(seconds=1))
    check()

    key_file = pki_copy.store.intermediate_key_path("dc1")
    key_file.write_bytes(key_file.read_bytes()[:200])
    check = unchanged(pki_copy.dir)
    with pytest.raises(PkiError, match=r"pki/dc1/intermediate.key.enc is damaged"):
        sign(pki_copy, Profile.CLIENT, "x")
    pki_copy.store.intermediate_cert_path("dc1").write_bytes(b"garbage")
    check = unchanged(pki_copy.dir)
    with pytest.raises(PkiError, match=r"pki/dc1/intermediate.crt is damaged"):
        sign(pki_copy, Profile.CLIENT, "x")
    check()


def test_swapped_intermediate_key_detected(pki_copy: Pki) -> None:
    store = pki_copy.store
    store.intermediate_key_path("dc1").write_bytes(store.intermediate_key_path("dc2").read_bytes())
    with pytest.raises(PkiError, match=r"does not belong to pki/dc1/intermediate\.crt"):
        sign(pki_copy, Profile.CLIENT, "x")


def test_leaf_lifetime_capped_by_intermediate(pki: Pki) -> None:
    expiry = pki.intermediate("dc1").not_valid_after_utc
    issued = sign(pki, Profile.CLIENT, "late", now=expiry - dt.timedelta(days=10))
    assert issued.not_after == expiry


def test_issuance_log(pki: Pki) -> None:
    log = pki.store.log_path
    before = log.read_bytes() if log.exists() else b""
    issued = sign(pki, Profile.PEER, "e.dc1.grid.example", ["e.dc1.grid.example"], ["10.1.0.9"])
    after = log.read_bytes()
    assert after.startswith(before)  # append-only
    line = json.loads(after[len(before) :])
    assert line == line | {
        "serial": format(issued.serial, "X"),
        "subject": "CN=e.dc1.grid.example",
        "sans": ["DNS:e.dc1.grid.example", "IP:10.1.0.9"],
        "profile": "peer",
        "issuer": "CN=test dc1 intermediate CA,O=plinth",
        "dc": "dc1",
        "service": "etcd",
        "host": "node1",
        "operator": "alice",
    }
    assert {"not_before", "not_after", "time"} <= line.keys()
    assert [r.serial for r in read_records(pki.store)][-1] == line["serial"]


def test_log_never_holds_key_material(pki: Pki, tmp_path: Path) -> None:
    issue_client_bundle(pki.store, "dc1", "logcheck", tmp_path / "out", pki.passphrase, "alice")
    text = pki.store.log_path.read_text()
    assert "-----BEGIN" not in text
    assert pki.passphrase not in text
    key_body = "".join((tmp_path / "out/logcheck.key").read_text().splitlines()[1:-1])
    assert key_body[:40] not in text


def test_client_bundle(pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    bundle = issue_client_bundle(pki.store, "dc1", "operator-bob", out, pki.passphrase, "alice")
    assert stat.S_IMODE(bundle.key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(bundle.key_path.read_bytes(), None)
    certs = x509.load_pem_x509_certificates(bundle.cert_path.read_bytes())
    assert certs[0].public_key() == key.public_key()
    anchors = x509.load_pem_x509_certificates(bundle.ca_path.read_bytes())
    assert len(anchors) == 3  # root + both intermediates
    verifier = PolicyBuilder().store(Store([anchors[0]])).build_client_verifier()
    verifier.verify(certs[0], certs[1:])
    with pytest.raises(PkiError, match="refusing to overwrite"):
        issue_client_bundle(pki.store, "dc1", "operator-bob", out, pki.passphrase, "alice")
    with pytest.raises(PkiError, match="client identity"):
        issue_client_bundle(pki.store, "dc1", "../etc", out, pki.passphrase, "alice")
