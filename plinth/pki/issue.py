"""Signing leaf certificates from CSRs made on the hosts."""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plinth.pki.ca import BACKDATE
from plinth.pki.errors import PkiError
from plinth.pki.fs import atomic_write
from plinth.pki.log import IssuanceRecord, append_record, format_serial
from plinth.pki.names import (
    IPAddress,
    describe_constraints,
    looks_like_hostname,
    normalize_dns_name,
    outside_constraints,
    parse_ip,
)
from plinth.pki.store import PkiStore

LEAF_LIFETIME = dt.timedelta(days=90)


class Profile(enum.StrEnum):
    """What a leaf certificate is for.

    - ``server``: serverAuth; SANs cover every name and IP clients dial, VIPs included.
    - ``client``: clientAuth; the CN is the identity (PostgreSQL role, etcd user, ...).
    - ``peer``: serverAuth and clientAuth; SANs must include the node IP, because etcd
      rejects a peer whose certificate does not match its source address.
    """

    SERVER = "server"
    CLIENT = "client"
    PEER = "peer"

    @property
    def extended_key_usages(self) -> list[x509.ObjectIdentifier]:
        return {
            Profile.SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
            Profile.CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
            Profile.PEER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        }[self]


@dataclass(frozen=True)
class IssuedCertificate:
    """A freshly signed leaf. ``chain_pem`` is the leaf followed by its intermediate."""

    cert_pem: bytes
    chain_pem: bytes
    serial: int
    not_after: dt.datetime


def sign_csr(
    store: PkiStore,
    dc: str,
    csr_pem: bytes,
    profile: Profile,
    common_name: str,
    dns_names: Iterable[str],
    ip_addresses: Iterable[str | IPAddress],
    passphrase: str,
    operator: str,
    service: str,
    host: str,
    *,
    now: dt.datetime | None = None,
) -> IssuedCertificate:
    """Sign a leaf for ``service`` on ``host`` with ``dc``'s intermediate.

    The CSR proves possession of the key and supplies only the public key: subject, SANs
    and extensions come from the arguments, never from the CSR. The key must be ECDSA P-256.
    Every SAN is checked against the intermediate's name constraints before anything is
    signed. The issuance is appended to ``pki/issued.jsonl``; nothing else is written.
    Lifetime is 90 days (capped at the intermediate's own expiry), backdated 5 minutes.
    """
    now = now or dt.datetime.now(dt.UTC)
    where = f"{service} on {host}" if host else service
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise PkiError(f"the CSR for {where} is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise PkiError(f"the CSR for {where} has an invalid signature (no proof of possession)")
    public = csr.public_key()
    if not (isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"):
        raise PkiError(
            f"the key of {where} is {_describe_key(public)}; plinth signs only ECDSA P-256 leaf "
            f"keys: rotate it with `plinth pki rotate ENV --service {service} --keys`"
        )
    profile = Profile(profile)
    dns, ips = _normalize_sans(dns_names, ip_addresses, where)
    _check_profile(profile, common_name, dns, ips, where)

    issuer_cert = store.intermediate_certificate(dc)
    if issuer_cert.not_valid_after_utc <= now:
        raise PkiError(
            f"the intermediate CA of {dc} expired on "
            f"{issuer_cert.not_valid_after_utc:%Y-%m-%d}: renew it before issuing certificates"
        )
    if issuer_cert.not_valid_before_utc > now:
        raise PkiError(
            f"the intermediate CA of {dc} is not valid before "
            f"{issuer_cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check this machine's clock"
        )
    bad = outside_constraints(issuer_cert, dns, ips)
    if looks_like_hostname(common_name) and not dns:
        # OpenSSL applies DNS constraints to a dotted CN when there are no DNS SANs.
        cn = normalize_dns_name(common_name)
        if outside_constraints(issuer_cert, [cn], []):
            bad.append(f"CN:{cn}")
    if bad:
        raise PkiError(
            f"refusing to sign {where}: {', '.join(bad)} outside the name constraints of "
            f"{dc}'s intermediate (permitted: {describe_constraints(issuer_cert)})"
        )
    issuer_key = store.intermediate_key(dc, passphrase)

    not_before = now - BACKDATE
    not_after = min(now + LEAF_LIFETIME, issuer_cert.not_valid_after_utc)
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans.extend(x509.IPAddress(ip) for ip in ips)
    if profile is Profile.CLIENT:
        # RFC 5280 verifiers (cryptography's, webpki) require a SAN even on client
        # certificates; a URN carries the identity without claiming a host name. Name
        # constraints do not cover URIs, and nothing authorizes on them.
        sans.append(x509.UniformResourceIdentifier(client_urn(common_name)))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(profile.extended_key_usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA384())

    append_record(
        store,
        IssuanceRecord(
            serial=format_serial(cert.serial_number),
            subject=cert.subject.rfc4514_string(),
            sans=tuple(_describe_san(g) for g in sans),
            profile=profile.value,
            issuer=issuer_cert.subject.rfc4514_string(),
            dc=dc,
            service=service,
            host=host,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            time=now.isoformat(),
            operator=operator,
        ),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return IssuedCertificate(
        cert_pem=cert_pem,
        chain_pem=cert_pem + issuer_cert.public_bytes(serialization.Encoding.PEM),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )


def client_urn(identity: str) -> str:
    """The URI SAN of a client certificate: ``urn:plinth:client:<identity>``."""
    return "urn:plinth:client:" + urllib.parse.quote(identity, safe="@._-")


def _describe_san(name: x509.GeneralName) -> str:
    prefix = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI"}
    return f"{prefix.get(type(name), type(name).__name__)}:{name.value}"


def _describe_key(public: object) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"ECDSA {public.curve.name}"
    return type(public).__name__.removeprefix("_").replace("PublicKey", "")


def _normalize_sans(
    dns_names: Iterable[str], ip_addresses: Iterable[str | IPAddress], where: str
) -> tuple[list[str], list[IPAddress]]:
    dns: list[str] = []
    for name in dns_names:
        try:
            normalized = normalize_dns_name(name)
        except ValueError as exc:
            raise PkiError(f"{where}: SAN DNS:{name}: {exc}") from None
        if normalized not in dns:
            dns.append(normalized)
    ips: list[IPAddress] = []
    for value in ip_addresses:
        try:
            ip = parse_ip(value)
        except ValueError:
            raise PkiError(f"{where}: SAN IP:{value} is not an IP address") from None
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def _check_profile(
    profile: Profile, common_name: str, dns: list[str], ips: list[IPAddress], where: str
) -> None:
    if not common_name or len(common_name) > 64:
        raise PkiError(f"{where}: the common name must have 1 to 64 characters")
    if profile is not Profile.CLIENT and not (dns or ips):
        raise PkiError(f"{where}: a {profile} certificate needs at least one DNS or IP SAN")
    if profile is Profile.PEER and not ips:
        raise PkiError(
            f"{where}: a peer certificate needs the node IP in its SANs (etcd checks that a "
            "peer's certificate matches its source address)"
        )


@dataclass(frozen=True)
class ClientBundle:
    """Files written by :func:`issue_client_bundle`."""

    key_path: Path
    cert_path: Path
    ca_path: Path
    issued: IssuedCertificate


_SAFE_CN = re.compile(r"^[A-Za-z0-9_@][A-Za-z0-9._@-]{0,63}$")


def issue_client_bundle(
    store: PkiStore,
    dc: str,
    cn: str,
    out_dir: Path,
    passphrase: str,
    operator: str,
    *,
    service: str | None = None,
    now: dt.datetime | None = None,
) -> ClientBundle:
    """Issue a client certificate for an application or operator identity ``cn``.

    Unlike host keys, this key is generated here, because it is handed to a client that is
    not a managed host. Writes ``<cn>.key`` (0600, unencrypted PKCS#8), ``<cn>.crt`` (leaf
    and intermediate) and ``ca.crt`` (root and every intermediate) to ``out_dir``. An
    existing ``<cn>.key`` is never overwritten. ``service`` names the issuance in
    ``issued.jsonl`` (default ``client:<cn>``).
    """
    if not _SAFE_CN.match(cn):
        raise PkiError(f"client identity {cn!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
    key_path = out_dir / f"{cn}.key"
    if key_path.exists():
        raise PkiError(f"{key_path} already exists: refusing to overwrite a client key")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    ca_pem = store.ca_bundle_pem(intermediates=True)
    issued = sign_csr(
        store,
        dc,
        csr.public_bytes(serialization.Encoding.PEM),
        Profile.CLIENT,
        cn,
        (),
        (),
        passphrase,
        operator,
        service=service or f"client:{cn}",
        host="",
        now=now,
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(key_path, key_pem)
        atomic_write(out_dir / f"{cn}.crt", issued.chain_pem)
        atomic_write(out_dir / "ca.crt", ca_pem)
    except OSError as exc:
        raise PkiError(f"cannot write the client bundle to {out_dir}: {exc.strerror}") from None
    return ClientBundle(key_path, out_dir / f"{cn}.crt", out_dir / "ca.crt", issued)


def _write_new(path: Path, data: bytes) -> None:
    # O_EXCL: a key that appeared since the check above is still not overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LeafSigner:
    """Everything the ``pki.certificate`` operation needs to sign for one datacenter.

    ``reissues`` collects, per ``(host, service)``, why a certificate will be reissued, so a
    preview can list them after pyinfra's prepare phase. The passphrase stays out of repr:
    pyinfra puts operation arguments in operation names and ``--json`` plans.
    """

    store: PkiStore
    dc: str
    operator: str
    passphrase: str = field(repr=False)
    reissues: dict[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

    def issuer_certificate(self) -> x509.Certificate:
        return self.store.intermediate_certificate(self.dc)

    def issuer_pem(self) -> bytes:
        return self.store.intermediate_certificate(self.dc).public_bytes(serialization.Encoding.PEM)

    def ca_bundle_pem(self) -> bytes:
        return self.store.ca_bundle_pem()

    def record_reissue(self, host: str, service: str, reason: str) -> None:
        self.reissues[(host, service)] = reason

    def sign(
        self,
        csr_pem: bytes,
        profile: Profile,
        common_name: str,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str | IPAddress],
        service: str,
        host: str,
    ) -> IssuedCertificate:
        return sign_csr(
            self.store,
            self.dc,
            csr_pem,
            profile,
            common_name,
            dns_names,
            ip_addresses,
            self.passphrase,
            self.operator,
            service,
            host,
        )
