"""Facts about TLS material on a host: the deployed certificate and a CSR for its key.

Neither fact ever prints a private key: the certificate fact asks openssl for the *public*
half, and the CSR fact prints only the request.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError

_CERT = "--plinth-cert--"
_PUBKEY = "--plinth-pubkey--"
_KEY_UNREADABLE = "--plinth-key-unreadable--"
_END = "--plinth-end--"


@dataclass(frozen=True)
class CertificateOnHost:
    """What :class:`DeployedCertificate` found. Fields other than the flags are empty/None
    when the certificate is absent; ``key_matches`` is None unless both files exist."""

    cert_present: bool
    key_present: bool
    subject: str | None = None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    issuer: str | None = None
    serial: int | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    key_matches: bool | None = None
    cert_pem: bytes | None = None
    public_key_pem: bytes | None = None


class DeployedCertificate(FactBase[CertificateOnHost | None]):
    """The certificate at ``cert_path`` and the public half of the key at ``key_path``.

    Returns None only when openssl is not installed yet (pyinfra's ``requires_command``).
    Reading a key owned by a service user needs ``_sudo=True`` on the calling operation.
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "openssl"

    @staticmethod
    def default() -> CertificateOnHost | None:
        return None

    def command(self, cert_path: str, key_path: str) -> StringCommand:
        cert, key = QuoteString(cert_path), QuoteString(key_path)
        return StringCommand(
            "if [ -f", cert, "]; then echo", _CERT, "&& cat", cert, "&& echo", _END, "; fi;",
            "if [ -f", key, "]; then echo", _PUBKEY, "&& { openssl pkey -in", key,
            "-pubout 2>/dev/null || echo", _KEY_UNREADABLE, "; } && echo", _END, "; fi",
        )  # fmt: skip

    def process(self, output: list[str]) -> CertificateOnHost:
        sections = _sections(output)
        cert_lines = sections.get(_CERT)
        key_lines = sections.get(_PUBKEY)
        public_key_pem: bytes | None = None
        if key_lines is not None:
            if _KEY_UNREADABLE in key_lines:
                raise FactProcessError(
                    "openssl cannot read the private key (permissions? run the operation "
                    "with _sudo=True)"
                )
            public_key_pem = _pem(key_lines)
            try:
                public_key = serialization.load_pem_public_key(public_key_pem)
            except ValueError:
                raise FactProcessError("cannot parse the public key printed by openssl") from None
        if cert_lines is None:
            return CertificateOnHost(
                cert_present=False,
                key_present=key_lines is not None,
                public_key_pem=public_key_pem,
            )
        cert_pem = _pem(cert_lines)
        try:
            # A chain file holds the leaf first; the rest is not this fact's business.
            cert = x509.load_pem_x509_certificates(cert_pem)[0]
        except (ValueError, IndexError):
            raise FactProcessError("the certificate file is not a PEM certificate") from None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            dns, ips = (), ()
        return CertificateOnHost(
            cert_present=True,
            key_present=key_lines is not None,
            subject=cert.subject.rfc4514_string(),
            dns_names=dns,
            ip_addresses=ips,
            issuer=cert.issuer.rfc4514_string(),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            key_matches=None if key_lines is None else public_key == cert.public_key(),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            public_key_pem=public_key_pem,
        )


class CertificateSigningRequest(FactBase[str]):
    """A PEM CSR for the key at ``key_path``, made on the host (the key never leaves it).

    Read at execute time by ``pki.certificate``; the subject is informational, the signer
    sets the real one.
    """

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "openssl"

    def command(self, key_path: str, common_name: str) -> StringCommand:
        # openssl -subj treats "/" as a field separator and "\" as an escape.
        subject = "/CN=" + common_name.replace("\\", "\\\\").replace("/", "\\/")
        return StringCommand(
            "openssl", "req", "-new", "-batch", "-sha256", "-key", QuoteString(key_path),
            "-subj", QuoteString(subject),
        )  # fmt: skip

    def process(self, output: list[str]) -> str:
        text = "\n".join(output).strip() + "\n"
        if "-----BEGIN CERTIFICATE REQUEST-----" not in text:
            raise FactProcessError("openssl req did not print a certificate request")
        return text


def _sections(output: list[str]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in output:
        line = raw.strip()
        if line in (_CERT, _PUBKEY):
            current = sections.setdefault(line, [])
        elif line == _END:
            current = None
        elif current is not None:
            current.append(line)
        elif line:
            raise FactProcessError(f"unexpected output outside markers: {line[:60]!r}")
    return sections


def _pem(lines: list[str]) -> bytes:
    return ("\n".join(line for line in lines if line) + "\n").encode()


@dataclass(frozen=True)
class HashedCrl:
    """One issuer's CRL as a hashed CRL directory sees it (see :class:`CrlHashLinks`)."""

    issuer: str
    hash: str | None
    """``openssl crl -hash`` of the host's CRL file; None when it is missing or unreadable."""
    hash_link: str | None
    """Where ``<hash>.r0`` in the directory points; None when absent."""
    issuer_link: str | None
    """Where ``<issuer>.crl.pem`` in the directory points; None when absent."""


class CrlHashLinks(FactBase[list[HashedCrl]]):
    """For each issuer, the hash of ``<crl_dir>/<issuer>.crl.pem`` and the links a directory
    made by ``openssl rehash`` holds for it (Erlang's ``ssl_crl_hash_dir`` reads
    ``<hash>.r0``)."""

    def requires_command(self, *args: Any, **kwargs: Any) -> str:
        return "openssl"

    @staticmethod
    def default() -> list[HashedCrl]:
        return []

    def command(self, directory: str, crl_dir: str, issuers: tuple[str, ...]) -> str:
        d = shlex.quote(directory)
        lines = []
        for issuer in issuers:
            source = shlex.quote(f"{crl_dir}/{issuer}.crl.pem")
            link = shlex.quote(f"{directory}/{issuer}.crl.pem")
            lines.append(
                f'h=$(openssl crl -hash -noout -in {source} 2>/dev/null || echo -); echo "{issuer} '
                f'$h $(readlink {d}/$h.r0 || echo -) $(readlink {link} || echo -)"'
            )
        return "; ".join(lines)

    def process(self, output: list[str]) -> list[HashedCrl]:
        found = []
        for line in output:
            parts = line.split()
            if len(parts) != 4:
                raise FactProcessError(f"unexpected CRL link line: {line!r}")
            issuer, digest, hash_link, issuer_link = (None if p == "-" else p for p in parts)
            assert issuer is not None
            found.append(HashedCrl(issuer, digest, hash_link, issuer_link))
        return found
