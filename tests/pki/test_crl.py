from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki import (
    IssuedCertificate,
    PkiError,
    Profile,
    crl_warnings,
    refresh_crl,
    revoke,
    sign_csr,
)
from plinth.pki.crl import CRL_LIFETIME, CRL_WARN_BEFORE
from tests.pki.conftest import Pki


def issue(pki: Pki, dc: str = "dc1") -> IssuedCertificate:
    return sign_csr(pki.store, dc, pki.csr(), Profile.CLIENT, "victim", (), (), pki.passphrase,
                    "alice", "app", "h1")  # fmt: skip


def load_crl(pki: Pki, dc: str = "dc1") -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(pki.store.crl_path(dc).read_bytes())


def issuer_key(pki: Pki, dc: str) -> ec.EllipticCurvePublicKey:
    """``dc``'s intermediate public key, narrowed for ``is_signature_valid`` (the CAs are ECDSA)."""
    key = pki.intermediate(dc).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def next_update_of(crl: x509.CertificateRevocationList) -> dt.datetime:
    """The CRL's nextUpdate (plinth always sets one)."""
    value = crl.next_update_utc
    assert value is not None
    return value


def test_initial_crl_is_empty_and_signed(pki: Pki) -> None:
    for dc in ("dc1", "dc2"):
        crl = load_crl(pki, dc)
        assert len(crl) == 0
        assert crl.is_signature_valid(issuer_key(pki, dc))
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number == 1
        assert next_update_of(crl) - crl.last_update_utc == CRL_LIFETIME


def test_revoke_lists_serial_and_bumps_number(pki_copy: Pki) -> None:
    pki = pki_copy
    issued = issue(pki)
    kept = issue(pki)
    before = load_crl(pki).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    result = revoke(pki.store, format(issued.serial, "x"), pki.passphrase, "key_compromise",
                    operator="alice")  # fmt: skip
    assert result.dc == "dc1" and result.crl_number == before + 1
    crl = load_crl(pki)
    entry = crl.get_revoked_certificate_by_serial_number(issued.serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None
    assert crl.is_signature_valid(issuer_key(pki, "dc1"))
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == before + 1
    assert (
        json.loads(pki.store.revoked_path("dc1").read_text())["revoked"][0]["operator"] == "alice"
    )
    # dc2's CRL is untouched
    assert len(load_crl(pki, "dc2")) == 0
    with pytest.raises(PkiError, match="already revoked"):
        revoke(pki.store, issued.serial, pki.passphrase, "key_compromise")


def test_revoke_errors_write_nothing(
    pki_copy: Pki, unchanged: Callable[[Path], Callable[[], None]]
) -> None:
    pki = pki_copy
    issued = issue(pki)
    check = unchanged(pki.dir)
    with pytest.raises(PkiError, match="unknown serial ABCDEF"):
        revoke(pki.store, "ab:cd:ef", pki.passphrase, "superseded")
    with pytest.raises(PkiError, match="wrong PLINTH_PASSPHRASE"):
        revoke(pki.store, issued.serial, "wrong", "superseded")
    with pytest.raises(PkiError, match="unknown revocation reason"):
        revoke(pki.store, issued.serial, pki.passphrase, "because")
    check()


def test_expired_revocations_dropped_from_crl(pki_copy: Pki) -> None:
    pki = pki_copy
    issued = issue(pki)
    revoke(pki.store, issued.serial, pki.passphrase, "superseded")
    refresh_crl(pki.store, "dc1", pki.passphrase, now=issued.not_after + dt.timedelta(days=1))
    assert load_crl(pki).get_revoked_certificate_by_serial_number(issued.serial) is None


def test_crl_warnings(pki_copy: Pki) -> None:
    pki = pki_copy
    next_update = next_update_of(load_crl(pki))
    assert crl_warnings(pki.store, next_update - CRL_WARN_BEFORE - dt.timedelta(seconds=1)) == []
    near = crl_warnings(pki.store, next_update - dt.timedelta(hours=30))
    assert len(near) == 2 and near[0].startswith("pki/dc1/crl.pem expires in 30h")
    past = crl_warnings(pki.store, next_update + dt.timedelta(minutes=1))
    assert "pki/dc1/crl.pem expired at" in past[0]
    number = refresh_crl(pki.store, "dc1", pki.passphrase, now=next_update)
    assert number == 2
    later = crl_warnings(pki.store, next_update + dt.timedelta(minutes=1))
    assert len(later) == 1 and later[0].startswith("pki/dc2/crl.pem")
    pki.store.crl_path("dc2").write_text("junk")
    assert "pki/dc2/crl.pem is damaged" in crl_warnings(pki.store)[0]
