"""Revocation: one CRL per intermediate, rebuilt from ``pki/<dc>/revoked.json``.

Leaves live 90 days, so the CRL is the answer for the few that must die earlier (a
compromised host, a leaked client key). An expired CRL makes strict verifiers (haproxy,
nginx, PostgreSQL with ``ssl_crl_file``) reject every handshake, hence :func:`crl_warnings`
and :func:`refresh_crl`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki.errors import PkiError
from plinth.pki.fs import StagedWrites, locked
from plinth.pki.log import find_record
from plinth.pki.store import PkiStore

CRL_LIFETIME = dt.timedelta(days=7)
CRL_WARN_BEFORE = dt.timedelta(days=2)

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
}


@dataclass(frozen=True)
class RevokedEntry:
    serial: str
    reason: str
    revoked_at: str
    not_after: str
    subject: str
    operator: str


@dataclass(frozen=True)
class Revocations:
    """Contents of ``revoked.json``: the number of the last CRL built, and what it lists."""

    crl_number: int
    entries: tuple[RevokedEntry, ...] = field(default=())

    def to_json(self) -> bytes:
        data = {"crl_number": self.crl_number, "revoked": [asdict(e) for e in self.entries]}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, store: PkiStore, dc: str) -> Revocations:
        data = store.read_json(store.revoked_path(dc))
        try:
            return cls(
                crl_number=int(data["crl_number"]),
                entries=tuple(RevokedEntry(**e) for e in data["revoked"]),
            )
        except (KeyError, TypeError, ValueError):
            raise PkiError(f"{store.rel(store.revoked_path(dc))} is damaged") from None


@dataclass(frozen=True)
class Revocation:
    """The result of :func:`revoke`."""

    serial: str
    dc: str
    subject: str
    crl_number: int


def initial_revocations() -> Revocations:
    return Revocations(crl_number=1)


def build_crl(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    revocations: Revocations,
    now: dt.datetime,
) -> bytes:
    """Sign a CRL listing every revoked certificate that has not expired yet.

    Expired certificates are dropped (RFC 5280 allows it): verifiers refuse them anyway.
    """
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(revocations.crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for entry in revocations.entries:
        if dt.datetime.fromisoformat(entry.not_after) <= now:
            continue
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(dt.datetime.fromisoformat(entry.revoked_at))
            .add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    return builder.sign(ca_key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)


def revoke(
    store: PkiStore,
    serial: int | str,
    passphrase: str,
    reason: str,
    *,
    operator: str = "",
    now: dt.datetime | None = None,
) -> Revocation:
    """Revoke a certificate from the issuance log and rebuild its datacenter's CRL.

    ``reason`` is one of :data:`REASONS`. The CRL number increases by one. Revoking the same
    serial twice is refused. The new CRL still has to be distributed to the hosts (the next
    deploy does it).
    """
    now = now or dt.datetime.now(dt.UTC)
    if reason not in REASONS:
        raise PkiError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
    record = find_record(store, serial)
    with locked(store.pki_dir):
        current = Revocations.from_json(store, record.dc)
        for entry in current.entries:
            if entry.serial == record.serial:
                raise PkiError(f"serial {record.serial} was already revoked at {entry.revoked_at}")
        updated = Revocations(
            crl_number=current.crl_number + 1,
            entries=(
                *current.entries,
                RevokedEntry(
                    serial=record.serial,
                    reason=reason,
                    revoked_at=now.isoformat(),
                    not_after=record.not_after,
                    subject=record.subject,
                    operator=operator,
                ),
            ),
        )
        _write_crl(store, record.dc, passphrase, updated, now)
    return Revocation(record.serial, record.dc, record.subject, updated.crl_number)


def refresh_crl(
    store: PkiStore, dc: str, passphrase: str, *, now: dt.datetime | None = None
) -> int:
    """Re-sign ``dc``'s CRL with a fresh nextUpdate; returns the new CRL number."""
    now = now or dt.datetime.now(dt.UTC)
    with locked(store.pki_dir):
        current = Revocations.from_json(store, dc)
        updated = Revocations(crl_number=current.crl_number + 1, entries=current.entries)
        _write_crl(store, dc, passphrase, updated, now)
    return updated.crl_number


def _write_crl(
    store: PkiStore, dc: str, passphrase: str, revocations: Revocations, now: dt.datetime
) -> None:
    cert = store.intermediate_certificate(dc)
    key = store.intermediate_key(dc, passphrase)
    staged = StagedWrites()
    staged.add(store.crl_path(dc), build_crl(cert, key, revocations, now))
    staged.add(store.revoked_path(dc), revocations.to_json())
    try:
        staged.commit()
    except OSError as exc:
        raise PkiError(f"cannot write {store.rel(store.crl_path(dc))}: {exc.strerror}") from None


def crl_warnings(store: PkiStore, now: dt.datetime | None = None) -> list[str]:
    """Warnings for CRLs that are missing, unreadable, or expire within two days."""
    now = now or dt.datetime.now(dt.UTC)
    warnings: list[str] = []
    for dc in store.datacenters():
        path = store.crl_path(dc)
        shown = store.rel(path)
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
        except FileNotFoundError:
            warnings.append(f"{shown} is missing: run `plinth pki crl refresh` for {dc}")
            continue
        except (OSError, ValueError):
            warnings.append(f"{shown} is damaged: restore it from git or refresh it")
            continue
        next_update = crl.next_update_utc
        if next_update is None:
            warnings.append(f"{shown} has no nextUpdate")
        elif next_update <= now:
            warnings.append(
                f"{shown} expired at {next_update:%Y-%m-%d %H:%M} UTC: services checking it "
                "reject every client; refresh and deploy it now"
            )
        elif next_update - now <= CRL_WARN_BEFORE:
            hours = int((next_update - now).total_seconds() // 3600)
            warnings.append(
                f"{shown} expires in {hours}h ({next_update:%Y-%m-%d %H:%M} UTC): refresh and "
                "deploy it"
            )
    return warnings


def revoked_serials(store: PkiStore, dc: str) -> frozenset[str]:
    """Serials (hex) listed in ``dc``'s revocation record."""
    return frozenset(e.serial for e in Revocations.from_json(store, dc).entries)
