"""`plinth pki status` rows: one deployed certificate judged against the model."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from facts.pki import CertificateOnHost
from plinth.certificates import CertificateSpec
from plinth.cli.pki import _certificate_row
from plinth.pki import Profile, sign_csr
from plinth.pki.log import format_serial
from tests.pki.conftest import Pki

SPEC = CertificateSpec(
    service="host",
    profile=Profile.PEER,
    common_name="n1.dc1.grid.example",
    dns_names=("n1.dc1.grid.example",),
    ip_addresses=("10.1.0.11",),
)


def deployed(pki: Pki, dc: str = "dc1", dns: str = "n1.dc1.grid.example") -> CertificateOnHost:
    key = pki.key()
    ip = "10.1.0.11" if dc == "dc1" else "10.2.0.11"
    issued = sign_csr(
        pki.store,
        dc,
        pki.csr(key),
        Profile.PEER,
        dns,
        [dns],
        [ip],
        pki.passphrase,
        "test",
        "host",
        "n1",
    )
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    return CertificateOnHost(
        cert_present=True,
        key_present=True,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_matches=True,
        cert_pem=issued.cert_pem,
        public_key_pem=pki.public_pem(key),
    )


def test_fresh_certificate_is_green(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    row = _certificate_row(SPEC, deployed(pki), pki.intermediate(), frozenset(), now)
    assert row["ok"] and row["chain_ok"] and row["sans_ok"] and row["days_left"] == 89


def test_missing_revoked_foreign_and_aging_certificates_are_not(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    missing = _certificate_row(SPEC, None, pki.intermediate(), frozenset(), now)
    assert not missing["ok"] and missing["problem"] == "missing"
    good = deployed(pki)
    revoked = _certificate_row(
        SPEC, good, pki.intermediate(), frozenset({format_serial(good.serial or 0)}), now
    )
    assert not revoked["ok"] and "is revoked" in revoked["problem"]
    other_dc = _certificate_row(
        SPEC, deployed(pki, "dc2", "n1.dc2.grid.example"), pki.intermediate(), frozenset(), now
    )
    assert not other_dc["ok"] and not other_dc["chain_ok"] and not other_dc["sans_ok"]
    aging = _certificate_row(
        SPEC, good, pki.intermediate(), frozenset(), now + dt.timedelta(days=61)
    )
    assert not aging["ok"] and aging["problem"].startswith("expires in")
