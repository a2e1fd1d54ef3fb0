"""When a deployed leaf must be reissued, and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plinth.pki.issue import Profile
from plinth.pki.names import IPAddress, normalize_dns_name, parse_ip


def reissue_reason(
    cert_pem: bytes | None,
    public_key_pem: bytes | None,
    expected_dns: Iterable[str],
    expected_ips: Iterable[str | IPAddress],
    expected_issuer_cert_pem: bytes,
    now: dt.datetime,
    *,
    expected_profile: Profile | None = None,
    expected_common_name: str | None = None,
) -> str | None:
    """Why the certificate must be reissued, or None when it is fine as it is.

    ``public_key_pem`` is the public half of the key on the host (None: no key there yet).
    A certificate is reissued when less than a third of its own lifetime
    (notAfter - notBefore) remains: at exactly one third it is kept. Several reasons are
    joined with "; ", e.g. ``"issuer changed; SANs changed: +DNS:b.example"``.
    """
    if cert_pem is None:
        return "missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "certificate unreadable"
    reasons: list[str] = []

    if public_key_pem is None:
        reasons.append("private key missing")
    else:
        try:
            key = serialization.load_pem_public_key(public_key_pem)
        except ValueError:
            reasons.append("public key unreadable")
        else:
            if key != cert.public_key():
                reasons.append("certificate does not match key")

    issuer = x509.load_pem_x509_certificate(expected_issuer_cert_pem)
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        reasons.append("issuer changed")

    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = not_after - not_before
    remaining = not_after - now
    if remaining <= dt.timedelta(0):
        reasons.append(f"expired on {not_after:%Y-%m-%d}")
    elif remaining * 3 < lifetime:
        reasons.append(f"expires in {_human(remaining)} (< 1/3 of {_human(lifetime)} lifetime)")

    sans_change = _san_change(cert, expected_dns, expected_ips)
    if sans_change:
        reasons.append(f"SANs changed: {sans_change}")

    if expected_profile is not None:
        actual = _profile_of(cert)
        if actual is not Profile(expected_profile):
            reasons.append(f"profile changed: {actual or 'unknown'} -> {expected_profile}")

    if expected_common_name is not None:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        actual_cn = str(cns[0].value) if cns else ""
        if actual_cn != expected_common_name:
            reasons.append(f"common name changed: {actual_cn!r} -> {expected_common_name!r}")

    return "; ".join(reasons) or None


def _human(delta: dt.timedelta) -> str:
    """Whole days when at least one day, otherwise hours or minutes (rounded down)."""
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"


def _san_change(
    cert: x509.Certificate, expected_dns: Iterable[str], expected_ips: Iterable[str | IPAddress]
) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {f"DNS:{n.lower()}" for n in san.get_values_for_type(x509.DNSName)}
        have |= {f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        have = set()
    want = {f"DNS:{normalize_dns_name(n)}" for n in expected_dns}
    want |= {f"IP:{parse_ip(ip)}" for ip in expected_ips}
    added = [f"+{s}" for s in sorted(want - have)]
    removed = [f"-{s}" for s in sorted(have - want)]
    return " ".join(added + removed)


def _profile_of(cert: x509.Certificate) -> Profile | None:
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None
    server = ExtendedKeyUsageOID.SERVER_AUTH in usages
    client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    if server and client:
        return Profile.PEER
    if server:
        return Profile.SERVER
    if client:
        return Profile.CLIENT
    return None
