"""Where the CA material lives and how it is read back.

Layout under the environment's state directory (``inventory/<env>/``)::

    pki/root.crt                     root certificate (public)
    pki/root.key.enc                 root key, PKCS#8 encrypted with the passphrase (scrypt,
                                     see plinth.pki.pkcs8; absent when the root is offline)
    pki/root.crl.pem                 the root's CRL: revoked intermediates (normally none)
    pki/root.revoked.json            what it is built from, and its CRL number
    pki/<dc>/intermediate.crt        the DC's intermediate certificate
    pki/<dc>/intermediate.key.enc    its key, encrypted the same way
    pki/<dc>/crl.pem                 the DC's current CRL
    pki/<dc>/revoked.json            what the CRL is built from, and the CRL number
    pki/issued.jsonl                 append-only issuance log
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki import pkcs8
from plinth.pki.errors import PkiError

PASSPHRASE_VARIABLE = "PLINTH_PASSPHRASE"
_DC_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# The hosts keep every CRL as /etc/plinth/tls/crl/<name>.crl.pem: the root's is root.crl.pem
# and all of them together are all.crl.pem, so no datacenter may be called that.
RESERVED_DC_NAMES = ("root", "all")


def check_dc_name(name: str) -> None:
    """Refuse datacenter names that are unsafe as a directory name or taken by a CRL file."""
    if not _DC_NAME.match(name):
        raise PkiError(
            f"invalid datacenter name {name!r}: use lowercase letters, digits and '-' "
            "(it becomes a directory under pki/)"
        )
    if name in RESERVED_DC_NAMES:
        raise PkiError(
            f"invalid datacenter name {name!r}: {' and '.join(RESERVED_DC_NAMES)} name the "
            "root's CRL and all CRLs together on the hosts; choose another name"
        )


class PkiStore:
    """Read access to one environment's PKI directory.

    The store never caches decrypted keys: every signing call decrypts the key it needs and
    drops it again, so a long-lived store object holds nothing secret.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.pki_dir = self.state_dir / "pki"

    def __repr__(self) -> str:
        return f"PkiStore({str(self.state_dir)!r})"

    # paths

    @property
    def root_cert_path(self) -> Path:
        return self.pki_dir / "root.crt"

    @property
    def root_key_path(self) -> Path:
        return self.pki_dir / "root.key.enc"

    @property
    def root_crl_path(self) -> Path:
        return self.pki_dir / "root.crl.pem"

    @property
    def root_revoked_path(self) -> Path:
        return self.pki_dir / "root.revoked.json"

    @property
    def log_path(self) -> Path:
        return self.pki_dir / "issued.jsonl"

    def dc_dir(self, dc: str) -> Path:
        check_dc_name(dc)
        return self.pki_dir / dc

    def intermediate_cert_path(self, dc: str) -> Path:
        return self.dc_dir(dc) / "intermediate.crt"

    def intermediate_key_path(self, dc: str) -> Path:
        return self.dc_dir(dc) / "intermediate.key.enc"

    def crl_path(self, dc: str) -> Path:
        return self.dc_dir(dc) / "crl.pem"

    def revoked_path(self, dc: str) -> Path:
        return self.dc_dir(dc) / "revoked.json"

    def rel(self, path: Path) -> str:
        """The path as an operator sees it in the repository: ``pki/dc1/crl.pem``."""
        try:
            return str(path.relative_to(self.state_dir))
        except ValueError:
            return str(path)

    # reading

    def initialized(self) -> bool:
        return self.root_cert_path.exists()

    def datacenters(self) -> tuple[str, ...]:
        """Datacenters that have an intermediate, sorted."""
        if not self.pki_dir.is_dir():
            return ()
        return tuple(
            sorted(p.parent.name for p in self.pki_dir.glob("*/intermediate.crt") if p.is_file())
        )

    def root_certificate(self) -> x509.Certificate:
        if not self.root_cert_path.exists():
            raise PkiError(
                f"{self.rel(self.root_cert_path)} does not exist: run `plinth pki init` first"
            )
        return load_certificate(self.root_cert_path, self.rel(self.root_cert_path))

    def root_key(self, passphrase: str) -> ec.EllipticCurvePrivateKey:
        if not self.root_key_path.exists():
            raise PkiError(
                f"{self.rel(self.root_key_path)} is not here (the root is kept offline?): "
                "sign the intermediate on the offline machine and import it"
            )
        key = load_encrypted_key(self.root_key_path, self.rel(self.root_key_path), passphrase)
        _check_pair(key, self.root_certificate(), self.rel(self.root_key_path), "pki/root.crt")
        return key

    def intermediate_certificate(self, dc: str) -> x509.Certificate:
        path = self.intermediate_cert_path(dc)
        if not path.exists():
            known = ", ".join(self.datacenters()) or "none"
            raise PkiError(
                f"unknown datacenter {dc!r}: no {self.rel(path)} (datacenters with an "
                f"intermediate: {known})"
            )
        return load_certificate(path, self.rel(path))

    def intermediate_key(self, dc: str, passphrase: str) -> ec.EllipticCurvePrivateKey:
        cert = self.intermediate_certificate(dc)
        path = self.intermediate_key_path(dc)
        if not path.exists():
            raise PkiError(f"{self.rel(path)} is missing: the intermediate of {dc} cannot sign")
        key = load_encrypted_key(path, self.rel(path), passphrase)
        _check_pair(key, cert, self.rel(path), self.rel(self.intermediate_cert_path(dc)))
        return key

    def key_protection(self, path: Path) -> pkcs8.Protection:
        """How the CA key file ``path`` is encrypted (read without the passphrase)."""
        try:
            return pkcs8.protection(path.read_bytes())
        except OSError as exc:
            raise PkiError(f"cannot read {self.rel(path)}: {exc.strerror}") from None
        except pkcs8.KeyFileError:
            raise PkiError(
                f"{self.rel(path)} is damaged: not an encrypted PEM key; restore it from git"
            ) from None

    def ca_bundle_pem(self, *, intermediates: bool = False) -> bytes:
        """The root certificate, optionally followed by every DC's intermediate."""
        certs = [self.root_certificate()]
        if intermediates:
            certs.extend(self.intermediate_certificate(dc) for dc in self.datacenters())
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read {self.rel(path)}: {exc}") from None


def load_certificate(path: Path, shown: str) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PkiError(f"{shown} is damaged: not a PEM certificate; restore it from git") from None


def load_encrypted_key(path: Path, shown: str, passphrase: str) -> ec.EllipticCurvePrivateKey:
    """Decrypt a CA key, telling a wrong passphrase apart from a damaged file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {shown}: {exc.strerror}") from None
    try:
        return pkcs8.unseal(data, passphrase)
    except pkcs8.WrongPassphrase:
        raise PkiError(f"cannot decrypt {shown}: wrong {PASSPHRASE_VARIABLE}?") from None
    except pkcs8.UnencryptedKey:
        raise PkiError(f"{shown} is not encrypted: refusing to use an unprotected CA key") from None
    except pkcs8.DamagedKey:
        raise PkiError(
            f"{shown} is damaged: not an encrypted PEM key; restore it from git"
        ) from None
    except pkcs8.KeyFileError as exc:
        raise PkiError(f"{shown} {exc}") from None


def _check_pair(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, key_shown: str, cert_shown: str
) -> None:
    if key.public_key() != cert.public_key():
        raise PkiError(f"{key_shown} does not belong to {cert_shown}: restore both from git")


def encrypt_key(key: ec.EllipticCurvePrivateKey, passphrase: str) -> bytes:
    """``key`` encrypted for ``pki/``: PKCS#8, PBES2 with scrypt at the strong cost."""
    if not passphrase:
        raise PkiError(f"{PASSPHRASE_VARIABLE} is empty: refusing to write an unprotected CA key")
    return pkcs8.seal(key, passphrase)
