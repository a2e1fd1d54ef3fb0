"""RabbitMQ's listener options (the rendered advanced.config) on Debian's Erlang/OTP: with
the CRLs hashed as ``pki.crl_hash_directory`` does, a revoked client is refused, an
unrevoked one accepted, and a CRL re-signed in place is read at the next handshake.

Needs ``escript`` and ``openssl`` (Debian: ``erlang-base erlang-ssl``); skipped without.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from plinth.certificates import CertificateSpec
from plinth.context import published_crls
from plinth.model import RabbitmqSettings
from plinth.pki import IssuedCertificate, Profile, revoke, sign_csr
from plinth.render import render_template
from tests.pki.conftest import Pki

pytestmark = pytest.mark.skipif(
    shutil.which("escript") is None or shutil.which("openssl") is None,
    reason="needs Erlang (escript) and openssl",
)
SERVER = Path(__file__).with_name("tls_server.escript")


@dataclass(frozen=True)
class Files:
    dir: Path

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def chain(self, name: str) -> Path:
        return self.dir / f"{name}-chain.crt"


def issue(
    pki: Pki, files: Files, name: str, profile: Profile, dns: tuple[str, ...] = ()
) -> IssuedCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cn = dns[0] if dns else "grid-etl"
    issued = sign_csr(pki.store, "dc1", csr, profile, cn, dns, (), pki.passphrase, "t", name, "h")
    files.key(name).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.chain(name).write_bytes(issued.chain_pem)
    return issued


def publish_crls(pki: Pki, live: Path) -> None:
    """What host TLS does: each CRL in its own file, replaced by a rename."""
    live.mkdir(exist_ok=True)
    for issuer, pem in published_crls(pki.store).items():
        tmp = live / f"{issuer}.crl.pem.plinth-new"
        tmp.write_bytes(pem)
        tmp.rename(live / f"{issuer}.crl.pem")


def hash_directory(live: Path, hashed: Path) -> None:
    """What ``pki.crl_hash_directory`` runs: links to the live files, then openssl rehash."""
    hashed.mkdir()
    for crl in live.glob("*.crl.pem"):
        (hashed / crl.name).symlink_to(crl)
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def listener(pki_copy: Pki, tmp_path: Path) -> Iterator[tuple[Pki, Files, int]]:
    """An Erlang TLS listener with the rendered RabbitMQ options, and its files."""
    pki, files = pki_copy, Files(tmp_path)
    issue(pki, files, "server", Profile.SERVER, ("mq.dc1.grid.example",))
    (tmp_path / "ca-bundle.pem").write_bytes(pki.store.ca_bundle_pem(intermediates=True))
    publish_crls(pki, tmp_path / "live")
    hash_directory(tmp_path / "live", tmp_path / "hashed")
    tls = CertificateSpec("rabbitmq", Profile.SERVER, "mq", (), ())
    advanced = render_template(
        "rabbitmq/etc/rabbitmq/advanced.config.j2",
        settings=RabbitmqSettings(),
        tls=tls,
        ca_bundle=str(tmp_path / "ca-bundle.pem"),
        crl_dir=str(tmp_path / "hashed"),
    )
    advanced = advanced.replace(tls.chain_path, str(files.chain("server")))
    advanced = advanced.replace(tls.key_path, str(files.key("server")))
    (tmp_path / "advanced.config").write_text(advanced)
    port = free_port()
    server = subprocess.Popen(
        ["escript", str(SERVER), str(tmp_path / "advanced.config"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        yield pki, files, port
    finally:
        server.kill()
        server.wait()


def connect(files: Files, name: str, port: int) -> str:
    """'accepted' or the TLS error a client with certificate ``name`` gets."""
    context = ssl.create_default_context(cafile=str(files.dir / "ca-bundle.pem"))
    context.check_hostname = False
    context.load_cert_chain(files.chain(name), files.key(name))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            # TLS 1.3: the server's verdict on the client arrives with the first read.
            return "accepted" if tls.recv(6) == b"hello\n" else "no greeting"
    except (ssl.SSLError, ConnectionError) as error:
        return str(error)


def test_rabbitmq_listener_refuses_a_revoked_client_and_reads_a_new_crl_live(
    listener: tuple[Pki, Files, int],
) -> None:
    pki, files, port = listener
    issue(pki, files, "kept", Profile.CLIENT)
    gone = issue(pki, files, "gone", Profile.CLIENT)
    revoke(pki.store, gone.serial, pki.passphrase, "key_compromise")
    publish_crls(pki, files.dir / "live")
    assert connect(files, "kept", port) == "accepted"
    assert "CERTIFICATE_REVOKED" in connect(files, "gone", port)
    # Revoked later, CRL replaced in place: refused at the next handshake, no restart.
    later = x509.load_pem_x509_certificates(files.chain("kept").read_bytes())[0]
    revoke(pki.store, later.serial_number, pki.passphrase, "superseded")
    publish_crls(pki, files.dir / "live")
    assert "CERTIFICATE_REVOKED" in connect(files, "kept", port)


def test_without_the_root_crl_erlang_refuses_every_client(
    listener: tuple[Pki, Files, int],
) -> None:
    """crl_check true checks the intermediate against the root's CRL, like OpenSSL's
    CRL_CHECK_ALL: the hash directory must hold the root's CRL too."""
    pki, files, port = listener
    issue(pki, files, "kept", Profile.CLIENT)
    for link in (files.dir / "hashed").iterdir():
        if link.is_symlink() and link.resolve().name == "root.crl.pem":
            link.unlink()
    assert "BAD_CERTIFICATE" in connect(files, "kept", port)
