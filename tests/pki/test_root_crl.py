"""The root's CRL: published beside the datacenters', what OpenSSL verifiers need, refreshed
by `pki refresh-crl` and by `plinth up` (refresh_due) before it can expire."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.certificates import all_crls_pem
from plinth.context import published_crls
from plinth.pki import IssuedCertificate, PkiError, Profile, crl_warnings, revoke, sign_csr
from plinth.pki.crl import (
    CRL_LIFETIME,
    ROOT_CRL_LIFETIME,
    refresh_due,
    refresh_root_crl,
    revoke_intermediate,
)
from tests.pki.conftest import Pki


def root_crl(pki: Pki) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pki.store.root_crl_path.read_bytes())


def next_update(crl: x509.CertificateRevocationList) -> dt.datetime:
    value = crl.next_update_utc
    assert value is not None
    return value


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def root_public_key(pki: Pki) -> ec.EllipticCurvePublicKey:
    key = pki.root().public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def issue(pki: Pki, dc: str = "dc1") -> IssuedCertificate:
    return sign_csr(pki.store, dc, pki.csr(), Profile.CLIENT, "app", (), (), pki.passphrase,
                    "alice", "app", "h1")  # fmt: skip


def openssl_verify(pki: Pki, leaf: IssuedCertificate, crl_file: bytes, tmp: Path) -> str:
    """What an OpenSSL server with ``CAfile`` = root and a CRL file answers for ``leaf``'s
    chain, checking the CRL of every certificate (as PostgreSQL, nginx and haproxy do)."""
    (tmp / "root.crt").write_bytes(pki.store.root_cert_path.read_bytes())
    (tmp / "crl.pem").write_bytes(crl_file)
    (tmp / "leaf.crt").write_bytes(leaf.chain_pem)
    result = subprocess.run(
        ["openssl", "verify", "-crl_check_all", "-CAfile", "root.crt", "-untrusted",
         "leaf.crt", "-CRLfile", "crl.pem", "leaf.crt"],
        cwd=tmp, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_a_new_pki_has_an_empty_root_crl_signed_by_the_root(pki: Pki) -> None:
    crl = root_crl(pki)
    assert len(crl) == 0
    assert crl.issuer == pki.root().subject
    assert crl.is_signature_valid(root_public_key(pki))
    assert crl_number(crl) == 1
    assert next_update(crl) - crl.last_update_utc == ROOT_CRL_LIFETIME


def test_the_hosts_get_the_root_crl_first_in_all_crl_pem(pki: Pki) -> None:
    crls = published_crls(pki.store)
    assert sorted(crls) == ["dc1", "dc2", "root"]
    end = b"-----END X509 CRL-----\n"
    blocks = [block + end for block in all_crls_pem(crls).split(end) if block.strip()]
    combined = [x509.load_pem_x509_crl(block) for block in blocks]
    assert [c.issuer for c in combined] == [
        pki.root().subject,
        pki.intermediate("dc1").subject,
        pki.intermediate("dc2").subject,
    ]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_whole_chain_verifiers_need_the_root_crl_and_refuse_a_revoked_client(
    pki_copy: Pki, tmp_path: Path
) -> None:
    pki = pki_copy
    kept, revoked = issue(pki), issue(pki)
    revoke(pki.store, revoked.serial, pki.passphrase, "key_compromise")
    crls = published_crls(pki.store)
    assert ": OK" in openssl_verify(pki, kept, all_crls_pem(crls), tmp_path)
    assert "certificate revoked" in openssl_verify(pki, revoked, all_crls_pem(crls), tmp_path)
    # What PostgreSQL's ssl_crl_file did before the root published a CRL: every client refused.
    without_root = {dc: pem for dc, pem in crls.items() if dc != "root"}
    refused = openssl_verify(pki, kept, all_crls_pem(without_root), tmp_path)
    assert "unable to get certificate CRL" in refused


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_revoked_intermediate_is_listed_by_the_root_and_its_leaves_refused(
    pki_copy: Pki, tmp_path: Path
) -> None:
    pki = pki_copy
    dc1_leaf, dc2_leaf = issue(pki, "dc1"), issue(pki, "dc2")
    result = revoke_intermediate(pki.store, "dc2", pki.passphrase, "key_compromise")
    crl = root_crl(pki)
    assert crl.is_signature_valid(root_public_key(pki))
    entry = crl.get_revoked_certificate_by_serial_number(pki.intermediate("dc2").serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    assert (
        crl.get_revoked_certificate_by_serial_number(pki.intermediate("dc1").serial_number) is None
    )
    assert result.crl_number == crl_number(crl) == 2
    with pytest.raises(PkiError, match="already revoked"):
        revoke_intermediate(pki.store, "dc2", pki.passphrase, "key_compromise")
    combined = all_crls_pem(published_crls(pki.store))
    assert "certificate revoked" in openssl_verify(pki, dc2_leaf, combined, tmp_path)
    assert ": OK" in openssl_verify(pki, dc1_leaf, combined, tmp_path)


def test_refresh_root_crl_creates_it_for_a_pki_made_before_root_crls(pki_copy: Pki) -> None:
    pki = pki_copy
    pki.store.root_crl_path.unlink()
    pki.store.root_revoked_path.unlink()
    with pytest.raises(PkiError, match=r"pki/root\.crl\.pem is missing.*refresh-crl"):
        published_crls(pki.store)
    assert any(w.startswith("pki/root.crl.pem is missing") for w in crl_warnings(pki.store))
    assert refresh_root_crl(pki.store, pki.passphrase) == 1
    crl = root_crl(pki)
    assert len(crl) == 0 and crl.is_signature_valid(root_public_key(pki))


def test_up_re_signs_the_crls_inside_their_warning_window(pki_copy: Pki) -> None:
    pki = pki_copy
    dc_crl = x509.load_pem_x509_crl(pki.store.crl_path("dc1").read_bytes())
    root_before = pki.store.root_crl_path.read_bytes()
    early = next_update(dc_crl) - dt.timedelta(days=11)
    assert refresh_due(pki.store, pki.passphrase, early).refreshed == ()
    now = next_update(dc_crl) - dt.timedelta(days=5)
    done = refresh_due(pki.store, pki.passphrase, now)
    assert done.refreshed == ("pki/dc1/crl.pem", "pki/dc2/crl.pem") and done.warnings == ()
    for dc in ("dc1", "dc2"):
        fresh = x509.load_pem_x509_crl(pki.store.crl_path(dc).read_bytes())
        assert next_update(fresh) == now.replace(microsecond=0) + CRL_LIFETIME
    assert pki.store.root_crl_path.read_bytes() == root_before
    # A second run right after finds nothing due: nothing re-signed, nothing to deploy.
    assert refresh_due(pki.store, pki.passphrase, now).refreshed == ()


def test_an_offline_root_crl_warns_ahead_and_stops_up_once_expired(pki_copy: Pki) -> None:
    pki = pki_copy
    pki.store.root_key_path.unlink()  # kept offline
    expiry = next_update(root_crl(pki))
    ahead = refresh_due(pki.store, pki.passphrase, expiry - dt.timedelta(days=30))
    assert "pki/root.crl.pem" not in ahead.refreshed
    assert any("offline machine" in w for w in ahead.warnings)
    assert any(
        w.startswith("pki/root.crl.pem expires in")
        for w in crl_warnings(pki.store, expiry - dt.timedelta(days=30))
    )
    before = {p: p.read_bytes() for p in pki.dir.rglob("*") if p.is_file()}
    with pytest.raises(PkiError, match=r"pki/root\.crl\.pem is expired.*nothing was deployed"):
        refresh_due(pki.store, pki.passphrase, expiry + dt.timedelta(minutes=1))
    # DC CRLs were due as well but nothing is half-done: the root's is checked first.
    assert before == {p: p.read_bytes() for p in pki.dir.rglob("*") if p.is_file()}
