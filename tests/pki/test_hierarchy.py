from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki import DatacenterTrust, PkiError, PkiStore, init_pki
from tests.pki.conftest import Pki

PASSPHRASE = "correct horse battery staple"
DC1 = DatacenterTrust(
    "dc1",
    ("dc1.grid.example",),
    (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00:1::/64")),
)
DC2 = DatacenterTrust("dc2", ("dc2.grid.example",), (ipaddress.ip_network("10.2.0.0/16"),))
DC3 = DatacenterTrust("dc3", ("dc3.grid.example",), (ipaddress.ip_network("10.3.0.0/16"),))


def test_layout_and_modes(pki: Pki) -> None:
    for dc in ("dc1", "dc2"):
        for name in ("intermediate.crt", "intermediate.key.enc", "crl.pem", "revoked.json"):
            assert (pki.dir / "pki" / dc / name).is_file()
    assert stat.S_IMODE((pki.dir / "pki/root.key.enc").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki.dir / "pki/dc1/intermediate.key.enc").stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (pki.dir / "pki/root.key.enc").read_bytes()
    assert not list(pki.dir.rglob("*.tmp"))
    assert pki.store.datacenters() == ("dc1", "dc2")


def test_root(pki: Pki) -> None:
    root = pki.root()
    assert root.subject.rfc4514_string() == "CN=test platform root CA,O=plinth"
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert dt.timedelta(days=15 * 365) < lifetime < dt.timedelta(days=15 * 366)


def test_intermediate_extensions(pki: Pki) -> None:
    cert = pki.intermediate("dc1")
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert set(nc.value.permitted_subtrees or []) == {
        x509.DNSName("dc1.grid.example"),
        x509.DNSName("svc.grid.example"),
        x509.IPAddress(ipaddress.ip_network("10.1.0.0/16")),
        x509.IPAddress(ipaddress.ip_network("fd00:1::/64")),
    }
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=729) < lifetime < dt.timedelta(days=731)
    cert.verify_directly_issued_by(pki.root())


def test_second_init_adds_only_new_dc(pki_copy: Pki) -> None:
    before = {p: p.read_bytes() for p in pki_copy.dir.rglob("*") if p.is_file()}
    created = init_pki(pki_copy.dir, "test", [DC1, DC2, DC3], PASSPHRASE)
    assert sorted(created) == sorted(
        f"pki/dc3/{n}"
        for n in ("intermediate.crt", "intermediate.key.enc", "crl.pem", "revoked.json")
    )
    for path, content in before.items():
        assert path.read_bytes() == content
    assert init_pki(pki_copy.dir, "test", [DC1, DC2, DC3], PASSPHRASE) == []


def test_rerun_without_new_dc_needs_no_root_key(pki_copy: Pki) -> None:
    # The root key may be offline; a plain re-run must not need it.
    pki_copy.store.root_key_path.unlink()
    assert init_pki(pki_copy.dir, "test", [DC1], "whatever") == []


def test_wrong_passphrase_adding_dc_writes_nothing(
    pki: Pki, unchanged: Callable[[Path], Callable[[], None]]
) -> None:
    check = unchanged(pki.dir)
    with pytest.raises(
        PkiError, match=r"cannot decrypt pki/root.key.enc: wrong PLINTH_PASSPHRASE\?"
    ):
        init_pki(pki.dir, "test", [DC1, DC3], "wrong")
    check()


def test_corrupted_root_key_names_file(
    pki_copy: Pki, unchanged: Callable[[Path], Callable[[], None]]
) -> None:
    pki_copy.store.root_key_path.write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n")
    check = unchanged(pki_copy.dir)
    with pytest.raises(PkiError, match=r"pki/root.key.enc is damaged"):
        init_pki(pki_copy.dir, "test", [DC3], PASSPHRASE)
    check()


def test_invalid_input_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "env"
    no_subnets = DatacenterTrust("dc9", ("dc9.example",), ())
    with pytest.raises(PkiError, match="no subnets"):
        init_pki(target, "test", [DC1, no_subnets], PASSPHRASE)
    bad_name = DatacenterTrust("../x", ("x.example",), (ipaddress.ip_network("10.0.0.0/8"),))
    with pytest.raises(PkiError, match="invalid datacenter name"):
        init_pki(target, "test", [bad_name], PASSPHRASE)
    with pytest.raises(PkiError, match="listed twice"):
        init_pki(target, "test", [DC1, DC1], PASSPHRASE)
    assert not target.exists()


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="empty"):
        init_pki(tmp_path / "env", "test", [DC1], "")
    assert not (tmp_path / "env").exists()


def test_unknown_dc(pki: Pki) -> None:
    with pytest.raises(PkiError, match=r"unknown datacenter 'dc7'.*dc1, dc2"):
        PkiStore(pki.dir).intermediate_certificate("dc7")
