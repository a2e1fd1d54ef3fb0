"""Revocation: one CRL per intermediate, rebuilt from ``pki/<dc>/revoked.json``, and the
root's CRL (``pki/root.crl.pem``, from ``pki/root.revoked.json``), which lists revoked
intermediates and is normally empty.

Leaves live 90 days, so the CRL is the answer for the few that must die earlier (a
compromised host, a leaked client key). OpenSSL verifiers configured with a CRL file
(PostgreSQL ``ssl_crl_file``, nginx ``ssl_crl``, haproxy ``crl-file``) check every
certificate of the chain, the intermediate against the root's CRL included: without a root
CRL they refuse every client. An expired CRL makes them reject every handshake too, hence
:func:`crl_warnings`, :func:`refresh_crl`, :func:`refresh_root_crl` and :func:`refresh_due`
(``plinth up`` re-signs what is due before it touches a host).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki.errors import PkiError
from plinth.pki.fs import StagedWrites, locked
from plinth.pki.log import find_record
from plinth.pki.store import PkiStore

CRL_LIFETIME = dt.timedelta(days=30)
"""nextUpdate of a datacenter CRL. CRLs are pushed by every deploy, not fetched, so the
lifetime does not delay a revocation (``pki revoke`` + ``up`` does); it only bounds how long
a host that stops receiving deploys keeps trusting its last CRL. Past it, every whole-chain
verifier refuses every client, so a long lifetime with automatic refresh beats a short one."""
CRL_WARN_BEFORE = dt.timedelta(days=10)
"""Inside this window ``preview`` and ``pki status`` warn and ``plinth up`` re-signs the CRL."""
ROOT_CRL_LIFETIME = dt.timedelta(days=365)
"""nextUpdate of the root's CRL. The root key may be kept offline (docs/pki.md), so its CRL
is re-signed in a ceremony on the offline machine: once a year, well ahead of expiry."""
ROOT_CRL_WARN_BEFORE = dt.timedelta(days=60)
"""Warn two months ahead: enough time to schedule the offline ceremony."""
ROOT = "root"
"""Name of the root's CRL among the datacenters' (``crl_warnings``, the hosts' file names);
no datacenter may take it (:func:`plinth.pki.store.check_dc_name`)."""

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
        return cls.read(store, store.revoked_path(dc))

    @classmethod
    def read(cls, store: PkiStore, path: Path) -> Revocations:
        data = store.read_json(path)
        try:
            return cls(
                crl_number=int(data["crl_number"]),
                entries=tuple(RevokedEntry(**e) for e in data["revoked"]),
            )
        except (KeyError, TypeError, ValueError):
            raise PkiError(f"{store.rel(path)} is damaged") from None


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
    lifetime: dt.timedelta = CRL_LIFETIME,
) -> bytes:
    """Sign a CRL listing every revoked certificate that has not expired yet.

    Expired certificates are dropped (RFC 5280 allows it): verifiers refuse them anyway.
    ``lifetime``: nextUpdate - thisUpdate (:data:`ROOT_CRL_LIFETIME` for the root's).
    """
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + lifetime)
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


def revoke_intermediate(
    store: PkiStore,
    dc: str,
    passphrase: str,
    reason: str,
    *,
    operator: str = "",
    now: dt.datetime | None = None,
) -> Revocation:
    """Revoke ``dc``'s intermediate in the root's CRL (needs the root key).

    Every leaf of that datacenter then fails at every whole-chain verifier (PostgreSQL,
    nginx, haproxy) once the CRL is deployed; sign a new intermediate for the DC first
    (``plinth pki init`` after moving the old one aside) unless that is the point.
    """
    now = now or dt.datetime.now(dt.UTC)
    if reason not in REASONS:
        raise PkiError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
    cert = store.intermediate_certificate(dc)
    serial = f"{cert.serial_number:X}"
    with locked(store.pki_dir):
        current = _root_revocations(store)
        if any(entry.serial == serial for entry in current.entries):
            raise PkiError(f"the intermediate of {dc} (serial {serial}) is already revoked")
        updated = Revocations(
            crl_number=current.crl_number + 1,
            entries=(
                *current.entries,
                RevokedEntry(
                    serial=serial,
                    reason=reason,
                    revoked_at=now.isoformat(),
                    not_after=cert.not_valid_after_utc.isoformat(),
                    subject=cert.subject.rfc4514_string(),
                    operator=operator,
                ),
            ),
        )
        _write_root_crl(store, passphrase, updated, now)
    return Revocation(serial, ROOT, cert.subject.rfc4514_string(), updated.crl_number)


def refresh_root_crl(store: PkiStore, passphrase: str, *, now: dt.datetime | None = None) -> int:
    """Re-sign the root's CRL with a fresh nextUpdate, creating it (empty) for a PKI made
    before root CRLs existed; returns the new CRL number. Needs the root key."""
    now = now or dt.datetime.now(dt.UTC)
    with locked(store.pki_dir):
        current = _root_revocations(store)
        updated = Revocations(crl_number=current.crl_number + 1, entries=current.entries)
        _write_root_crl(store, passphrase, updated, now)
    return updated.crl_number


def _root_revocations(store: PkiStore) -> Revocations:
    if not store.root_revoked_path.exists():
        # A PKI initialised before the root published a CRL: the first one is number 1.
        return Revocations(crl_number=0)
    return Revocations.read(store, store.root_revoked_path)


def _write_root_crl(
    store: PkiStore, passphrase: str, revocations: Revocations, now: dt.datetime
) -> None:
    cert = store.root_certificate()
    key = store.root_key(passphrase)
    staged = StagedWrites()
    staged.add(store.root_crl_path, build_crl(cert, key, revocations, now, ROOT_CRL_LIFETIME))
    staged.add(store.root_revoked_path, revocations.to_json())
    try:
        staged.commit()
    except OSError as exc:
        raise PkiError(f"cannot write {store.rel(store.root_crl_path)}: {exc.strerror}") from None


@dataclass(frozen=True)
class CrlState:
    """One published CRL as the controller sees it: ``issuer`` is a datacenter or
    :data:`ROOT`; ``next_update`` is None when the file is missing or unreadable."""

    issuer: str
    shown: str
    next_update: dt.datetime | None
    problem: str | None
    """``missing``, ``damaged`` or ``no nextUpdate``; None for a readable CRL."""

    @property
    def warn_before(self) -> dt.timedelta:
        return ROOT_CRL_WARN_BEFORE if self.issuer == ROOT else CRL_WARN_BEFORE

    def due(self, now: dt.datetime) -> bool:
        """Missing, unreadable, expired or inside its warning window: refresh it."""
        return self.next_update is None or self.next_update - now <= self.warn_before

    def expired(self, now: dt.datetime) -> bool:
        return self.next_update is None or self.next_update <= now


def crl_states(store: PkiStore) -> list[CrlState]:
    """The root's CRL, then every datacenter's, read from ``pki/``."""
    paths = [(ROOT, store.root_crl_path)]
    paths += [(dc, store.crl_path(dc)) for dc in store.datacenters()]
    states = []
    for issuer, path in paths:
        shown = store.rel(path)
        try:
            crl = x509.load_pem_x509_crl(path.read_bytes())
        except FileNotFoundError:
            states.append(CrlState(issuer, shown, None, "missing"))
            continue
        except (OSError, ValueError):
            states.append(CrlState(issuer, shown, None, "damaged"))
            continue
        next_update = crl.next_update_utc
        states.append(
            CrlState(issuer, shown, next_update, None if next_update else "no nextUpdate")
        )
    return states


def crl_warnings(store: PkiStore, now: dt.datetime | None = None) -> list[str]:
    """Warnings for CRLs that are missing, unreadable, or inside their warning window
    (:data:`CRL_WARN_BEFORE`, :data:`ROOT_CRL_WARN_BEFORE` for the root's)."""
    now = now or dt.datetime.now(dt.UTC)
    warnings: list[str] = []
    for state in crl_states(store):
        how = _how_to_refresh(state.issuer)
        if state.problem == "missing":
            warnings.append(f"{state.shown} is missing: {how}")
        elif state.problem == "damaged":
            warnings.append(f"{state.shown} is damaged: restore it from git or {how}")
        elif state.next_update is None:
            warnings.append(f"{state.shown} has no nextUpdate: {how}")
        elif state.next_update <= now:
            warnings.append(
                f"{state.shown} expired at {state.next_update:%Y-%m-%d %H:%M} UTC: services "
                f"checking it reject every client; {how} and deploy it now"
            )
        elif state.due(now):
            hours = int((state.next_update - now).total_seconds() // 3600)
            warnings.append(
                f"{state.shown} expires in {hours}h ({state.next_update:%Y-%m-%d %H:%M} UTC): "
                f"{how} and deploy it"
            )
    return warnings


def _how_to_refresh(issuer: str) -> str:
    if issuer == ROOT:
        return "run `plinth pki refresh-crl` where the root key is (the offline machine)"
    return "run `plinth pki refresh-crl` (or `plinth up`, which refreshes it)"


@dataclass(frozen=True)
class DueRefresh:
    """What :func:`refresh_due` did: CRLs re-signed, and warnings about those it could not."""

    refreshed: tuple[str, ...]
    """Repository paths of the CRLs re-signed (commit them)."""
    warnings: tuple[str, ...]


def refresh_due(store: PkiStore, passphrase: str, now: dt.datetime | None = None) -> DueRefresh:
    """Re-sign every CRL inside its warning window (or missing), before a deploy.

    The intermediates' keys are always on the controller, so a datacenter CRL is always
    refreshed. The root key may be offline: then a root CRL that is still valid only warns,
    but a missing or expired one raises :class:`PkiError` before anything is deployed,
    because whole-chain verifiers would refuse every client with it.
    """
    now = now or dt.datetime.now(dt.UTC)
    refreshed: list[str] = []
    warnings: list[str] = []
    for state in crl_states(store):
        if not state.due(now):
            continue
        if state.issuer != ROOT:
            refresh_crl(store, state.issuer, passphrase, now=now)
            refreshed.append(state.shown)
        elif store.root_key_path.exists():
            refresh_root_crl(store, passphrase, now=now)
            refreshed.append(state.shown)
        elif state.expired(now):
            raise PkiError(
                f"{state.shown} is {state.problem or 'expired'} and the root key is not here "
                "(kept offline?): PostgreSQL, nginx, haproxy and RabbitMQ would refuse every "
                "client with it. Re-sign it on the offline machine (`plinth pki refresh-crl`), "
                f"bring back {state.shown} and {store.rel(store.root_revoked_path)}; nothing "
                "was deployed"
            )
        else:
            warnings.append(
                f"{state.shown} expires {state.next_update:%Y-%m-%d} and the root key is not "
                "here: re-sign it on the offline machine (`plinth pki refresh-crl`) before then"
            )
    return DueRefresh(tuple(refreshed), tuple(warnings))


def revoked_serials(store: PkiStore, dc: str) -> frozenset[str]:
    """Serials (hex) listed in ``dc``'s revocation record."""
    return frozenset(e.serial for e in Revocations.from_json(store, dc).entries)
