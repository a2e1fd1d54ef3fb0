from __future__ import annotations

import ipaddress
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.pki import DatacenterTrust, PkiStore, init_pki

PASSPHRASE = "correct horse battery staple"
DC1 = DatacenterTrust(
    "dc1",
    ("dc1.grid.example",),
    (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00:1::/64")),
)
DC2 = DatacenterTrust("dc2", ("dc2.grid.example",), (ipaddress.ip_network("10.2.0.0/16"),))
SHARED = ("svc.grid.example",)


@dataclass
class Pki:
    """A PKI under ``dir`` plus the helpers tests need (tests import nothing from here)."""

    dir: Path
    store: PkiStore
    passphrase: str = PASSPHRASE
    dc1: DatacenterTrust = DC1
    dc2: DatacenterTrust = DC2

    key = staticmethod(lambda curve=None: make_key(curve))
    csr = staticmethod(lambda key=None, cn="ignored": make_csr(key, cn))
    public_pem = staticmethod(lambda key: public_pem(key))

    def root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.store.root_cert_path.read_bytes())

    def intermediate(self, dc: str = "dc1") -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.store.intermediate_cert_path(dc).read_bytes())

    def intermediate_pem(self, dc: str = "dc1") -> bytes:
        return self.store.intermediate_cert_path(dc).read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One PKI per test module: key generation is cheap, but keep the suite fast anyway."""
    state = tmp_path_factory.mktemp("env")
    init_pki(state, "test", [DC1, DC2], PASSPHRASE, shared_dns_domains=SHARED)
    return Pki(state, PkiStore(state))


@pytest.fixture
def pki_copy(pki: Pki, tmp_path: Path) -> Pki:
    """A private copy for tests that damage files."""
    target = tmp_path / "env"
    shutil.copytree(pki.dir, target)
    return Pki(target, PkiStore(target))


def make_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey | None = None, cn: str = "ignored") -> bytes:
    key = key or make_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every file and directory under root with its content and mode."""
    result: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(root.rglob("*")):
        content = path.read_bytes() if path.is_file() else None
        result[str(path.relative_to(root))] = (content, path.stat().st_mode)
    return result


@pytest.fixture
def unchanged() -> Callable[[Path], Callable[[], None]]:
    """``check = unchanged(dir)`` ... ``check()`` asserts nothing under dir changed."""

    def take(root: Path) -> Callable[[], None]:
        before = snapshot(root)

        def check() -> None:
            assert snapshot(root) == before

        return check

    return take
