"""The CA hierarchy: one root per environment, one name-constrained intermediate per DC."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plinth.pki.crl import ROOT_CRL_LIFETIME, build_crl, initial_revocations
from plinth.pki.errors import PkiError
from plinth.pki.fs import StagedWrites, locked
from plinth.pki.names import normalize_dns_name
from plinth.pki.store import PkiStore, check_dc_name, encrypt_key

ROOT_LIFETIME = dt.timedelta(days=15 * 365 + 4)
INTERMEDIATE_LIFETIME = dt.timedelta(days=2 * 365)
# Clock skew between the controller and hosts must not make a fresh certificate "not yet valid".
BACKDATE = dt.timedelta(minutes=5)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DatacenterTrust:
    """What one datacenter's intermediate may vouch for.

    ``dns_domains`` and ``subnets`` become the intermediate's critical name constraints: a
    leaf naming anything else is refused by the signer and by every verifier, so a stolen
    intermediate key of one DC cannot impersonate services of the other.
    """

    name: str
    dns_domains: tuple[str, ...]
    subnets: tuple[IPNetwork, ...]


def init_pki(
    state_dir: Path,
    environment: str,
    datacenters: Sequence[DatacenterTrust],
    passphrase: str,
    *,
    shared_dns_domains: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> list[str]:
    """Create the root CA (if absent) and an intermediate for each DC that has none.

    Existing CA material is never overwritten: a second call only adds intermediates for new
    datacenters. ``shared_dns_domains`` (environment-wide names such as a service domain
    both DCs answer for) are permitted in every intermediate besides the DC's own domains.
    Everything is prepared in memory and written together; on any error (wrong passphrase
    for an existing root, invalid input) nothing is written.

    Returns the paths created, relative to ``state_dir``.
    """
    now = now or dt.datetime.now(dt.UTC)
    if not environment or "/" in environment:
        raise PkiError(f"invalid environment name {environment!r}")
    store = PkiStore(state_dir)
    seen: set[str] = set()
    for trust in datacenters:
        check_dc_name(trust.name)
        if trust.name in seen:
            raise PkiError(f"datacenter {trust.name} is listed twice")
        seen.add(trust.name)
        _permitted_subtrees(trust, shared_dns_domains)  # validate before any key is generated

    with locked(store.pki_dir):
        staged = StagedWrites()
        if store.initialized():
            root_cert = store.root_certificate()
            pending = [t for t in datacenters if not store.intermediate_cert_path(t.name).exists()]
            for trust in pending:
                if store.intermediate_key_path(trust.name).exists():
                    raise PkiError(
                        f"{store.rel(store.intermediate_key_path(trust.name))} exists without "
                        "its certificate: import the signed intermediate or remove the key"
                    )
            # Decrypt only when there is something to sign, so a plain re-run of init works
            # without the root key (which may be offline).
            root_key = store.root_key(passphrase) if pending else None
        else:
            root_key = ec.generate_private_key(ec.SECP384R1())
            root_cert = _root_certificate(root_key, environment, now)
            staged.add(store.root_cert_path, _pem(root_cert))
            staged.add(store.root_key_path, encrypt_key(root_key, passphrase), 0o600)
            # Whole-chain verifiers (PostgreSQL, nginx, haproxy, RabbitMQ) need the root's CRL too.
            root_revocations = initial_revocations()
            staged.add(
                store.root_crl_path,
                build_crl(root_cert, root_key, root_revocations, now, ROOT_CRL_LIFETIME),
            )
            staged.add(store.root_revoked_path, root_revocations.to_json())
            pending = list(datacenters)

        for trust in pending:
            assert root_key is not None
            key = ec.generate_private_key(ec.SECP384R1())
            cert = _intermediate_certificate(
                key.public_key(), root_cert, root_key, environment, trust, shared_dns_domains, now
            )
            staged.add(store.intermediate_cert_path(trust.name), _pem(cert))
            staged.add(store.intermediate_key_path(trust.name), encrypt_key(key, passphrase), 0o600)
            revocations = initial_revocations()
            staged.add(store.crl_path(trust.name), build_crl(cert, key, revocations, now))
            staged.add(store.revoked_path(trust.name), revocations.to_json())
        try:
            staged.commit()
        except OSError as exc:
            raise PkiError(f"cannot write under {store.pki_dir}: {exc.strerror}") from None
    return [store.rel(p) for p in staged.files]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _root_certificate(
    key: ec.EllipticCurvePrivateKey, environment: str, now: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plinth"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{environment} platform root CA"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        # path_length=1: the root signs intermediates, intermediates sign only leaves.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA384())
    )


def _intermediate_certificate(
    public: ec.EllipticCurvePublicKey,
    root_cert: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    environment: str,
    trust: DatacenterTrust,
    shared_dns_domains: Sequence[str],
    now: dt.datetime,
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "plinth"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{environment} {trust.name} intermediate CA"),
        ]
    )
    # An intermediate must not outlive the root that vouches for it.
    not_after = min(now + INTERMEDIATE_LIFETIME, root_cert.not_valid_after_utc)
    root_ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=_permitted_subtrees(trust, shared_dns_domains),
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .sign(root_key, hashes.SHA384())
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _permitted_subtrees(
    trust: DatacenterTrust, shared_dns_domains: Sequence[str]
) -> list[x509.GeneralName]:
    # RFC 5280: a name form without any permitted subtree is unconstrained. An intermediate
    # with domains but no subnets could vouch for any IP, so both are required.
    if not trust.dns_domains:
        raise PkiError(f"datacenter {trust.name}: no DNS domains to constrain its intermediate to")
    if not trust.subnets:
        raise PkiError(f"datacenter {trust.name}: no subnets to constrain its intermediate to")
    domains: list[str] = []
    for domain in (*trust.dns_domains, *shared_dns_domains):
        try:
            normalized = normalize_dns_name(domain)
        except ValueError as exc:
            raise PkiError(f"datacenter {trust.name}: DNS domain {domain!r}: {exc}") from None
        if normalized not in domains:
            domains.append(normalized)
    subtrees: list[x509.GeneralName] = [x509.DNSName(d) for d in domains]
    subtrees.extend(x509.IPAddress(net) for net in dict.fromkeys(trust.subnets))
    return subtrees
