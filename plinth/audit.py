"""``plinth audit``: prove the network statement (:mod:`plinth.topology.flows`) against the
running hosts (issue 16).

Two halves, both judged here and printed by ``plinth audit``:

* **Listeners.** Every socket a host listens on (:class:`facts.sockets.ListeningSockets`)
  against the listeners the model declares: a socket reachable from the network that the
  model does not declare is a finding (a daemon nobody accounted for, or one bound wider
  than the model says); a declared listener with no socket is one too (a daemon down, or
  bound elsewhere). Loopback sockets are the host's own business and are not judged.
* **Probes from the controller.** Every TCP listener that carries TLS is dialled the way a
  stranger would: without a client certificate, with a certificate from a foreign CA,
  offering only TLS 1.1, in plaintext; and its served certificate is checked (chain to the
  platform root, the dialled address in its SAN, and not past the point where ``plinth
  up`` renews it, which would mean a renewal that never reached the daemon). What each
  listener must do comes from its :class:`~plinth.topology.flows.Security`.

Revoked and expired client certificates are not probed yet: they need the CRLs the
daemons read (issue 15) and a certificate signed by a DC intermediate for the purpose.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import struct
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from facts.sockets import Socket
from plinth.model import Environment
from plinth.topology.flows import Listener, Protocol, Security, flows, listeners

PARALLEL_PROBES = 8
PROBE_TIMEOUT = 3.0
"""Seconds to wait for a refusal after a handshake: a server that verifies clients
answers a missing or foreign certificate at once (a TLS alert, an HTTP 400, a FATAL)."""


class Wire(StrEnum):
    """What a listener speaks inside TLS: what a probe sends first, and how it reads
    the answer."""

    HTTP = "http"
    POSTGRESQL = "postgresql"
    """TLS only after an ``SSLRequest``; a client certificate is enforced by pg_hba,
    after the handshake, with a FATAL error."""
    REDIS = "redis"
    AMQP = "amqp"
    SILENT = "silent"
    """Erlang distribution: nothing to send; only a refusal is read."""


def wire_of(listener: Listener) -> Wire:
    if listener.name in ("PostgreSQL", "rw", "ro"):
        return Wire.POSTGRESQL
    if listener.component == "redis":
        return Wire.REDIS
    if listener.name == "AMQPS":
        return Wire.AMQP
    if listener.name == "distribution":
        return Wire.SILENT
    return Wire.HTTP


class Outcome(StrEnum):
    SERVED = "served"
    REFUSED = "refused"


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class Finding:
    host: str
    subject: str
    """The socket or listener concerned (``10.231.1.11:2379/tcp etcd``)."""
    problem: str


@dataclass
class ProbeResult:
    """What one TLS listener did with each kind of stranger."""

    host: str
    listener: Listener
    address: str
    answers: dict[str, Answer] = field(default_factory=dict)
    certificate: str = ""
    """The served certificate in a few words (subject, days left), or why it is bad."""
    findings: list[Finding] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"{self.address}:{self.listener.port}/tcp {self.listener.name}"


# ---- listeners against sockets ----


def _covers(listener: Listener, sock: Socket) -> bool:
    if listener.protocol.value != sock.protocol or not listener.serves(sock.port):
        return False
    return listener.bind == "*" or sock.every_address or sock.address == listener.bind


def listener_findings(
    env: Environment, host: str, sockets: Sequence[Socket]
) -> tuple[list[Finding], list[tuple[Socket, Listener]]]:
    """Findings of ``host``'s sockets against its declared listeners, and the
    (socket, listener) pairs that matched."""
    declared = [
        item
        for item in listeners(env)
        if item.host == host and item.protocol in (Protocol.TCP, Protocol.UDP)
    ]
    findings = []
    matched = []
    for sock in sockets:
        if sock.loopback or sock.client_socket:
            continue
        owner = next((item for item in declared if _covers(item, sock)), None)
        if owner is None:
            findings.append(
                Finding(host, sock.text, "listening, but no listener of the model has this port")
            )
            continue
        matched.append((sock, owner))
        if sock.every_address and owner.bind != "*":
            findings.append(
                Finding(
                    host,
                    sock.text,
                    f"bound to every address; the model has {owner.name} on {owner.bind} only",
                )
            )
    for item in declared:
        if item.transient:  # listens only while a CLI tool runs
            continue
        if not any(_covers(item, sock) for sock in sockets if not sock.loopback):
            findings.append(
                Finding(
                    host,
                    f"{item.bind}:{item.port_text} {item.name}",
                    f"declared ({item.setting}) but nothing listens there",
                )
            )
    return findings, matched


# ---- probes ----


def _startup_message() -> bytes:
    body = struct.pack("!I", 196608) + b"user\0plinth_audit\0database\0postgres\0\0"
    return struct.pack("!I", len(body) + 4) + body


SSL_REQUEST = struct.pack("!II", 8, 80877103)
FIRST_BYTES: dict[Wire, bytes] = {
    Wire.HTTP: b"GET / HTTP/1.1\r\nHost: plinth-audit\r\nConnection: close\r\n\r\n",
    Wire.POSTGRESQL: _startup_message(),
    Wire.REDIS: b"PING\r\n",
    Wire.AMQP: b"AMQP\x00\x00\x09\x01",
    Wire.SILENT: b"",
}


def judge_reply(wire: Wire, reply: bytes) -> Answer:
    """Whether the first bytes a server sent back mean it served the client: a
    protocol-level refusal counts as refused (nginx's 400 for a missing certificate, a
    PostgreSQL FATAL), anything else that answers as served."""
    if not reply:
        return Answer(Outcome.REFUSED, "closed the connection")
    if wire is Wire.HTTP and reply.startswith(b"HTTP/"):
        status = reply.split(b" ", 2)[1:2]
        code = int(status[0]) if status and status[0].isdigit() else 0
        if code == 400 and b"certificate" in reply.lower():
            return Answer(Outcome.REFUSED, "HTTP 400: no required client certificate")
        return Answer(Outcome.SERVED, f"HTTP {code}")
    if wire is Wire.POSTGRESQL and reply[:1] == b"E":
        fields = reply[5:].split(b"\0")
        message = next((f[1:] for f in fields if f[:1] == b"M"), b"error")
        return Answer(Outcome.REFUSED, "FATAL: " + message.decode(errors="replace")[:120])
    if wire is Wire.POSTGRESQL and reply[:1] == b"R":
        return Answer(Outcome.SERVED, "authentication requested (past pg_hba's certificate rule)")
    first_line = reply.split(b"\r\n", 1)[0].decode(errors="replace")[:80]
    return Answer(Outcome.SERVED, f"answered {first_line!r}")


def _read(conn: socket.socket) -> bytes:
    conn.settimeout(PROBE_TIMEOUT)
    return conn.recv(4096)


def _exchange(conn: socket.socket, wire: Wire) -> Answer:
    try:
        if FIRST_BYTES[wire]:
            conn.sendall(FIRST_BYTES[wire])
        return judge_reply(wire, _read(conn))
    except ssl.SSLError as error:
        return Answer(Outcome.REFUSED, f"TLS alert: {error.reason or error}")
    except TimeoutError:
        if wire is Wire.SILENT:
            return Answer(Outcome.SERVED, f"no refusal within {PROBE_TIMEOUT:.0f} s")
        return Answer(Outcome.SERVED, f"no answer and no refusal within {PROBE_TIMEOUT:.0f} s")
    except OSError as error:
        return Answer(Outcome.REFUSED, f"connection closed: {error.strerror or error}")


@contextmanager
def _tcp(address: str, port: int, wire: Wire) -> Iterator[socket.socket]:
    conn = socket.create_connection((address, port), timeout=PROBE_TIMEOUT)
    try:
        if wire is Wire.POSTGRESQL:
            conn.sendall(SSL_REQUEST)
            if conn.recv(1) != b"S":
                raise ssl.SSLError("the server does not offer TLS (SSLRequest answered N)")
        yield conn
    finally:
        conn.close()


def tls_answer(address: str, port: int, wire: Wire, context: ssl.SSLContext) -> Answer:
    """Handshake with ``context`` and send the wire's first request: served or refused."""
    try:
        with (
            _tcp(address, port, wire) as conn,
            context.wrap_socket(conn, server_hostname=None) as tls,
        ):
            return _exchange(tls, wire)
    except ssl.SSLError as error:
        return Answer(Outcome.REFUSED, f"handshake failed: {error.reason or error}")
    except OSError as error:
        return Answer(Outcome.REFUSED, f"cannot connect: {error.strerror or error}")


TLS_RECORD_TYPES = (b"\x15", b"\x16")
"""The first byte of a TLS alert or handshake record: a TLS server's answer to bytes that
are not a ClientHello."""


def judge_plaintext(wire: Wire, reply: bytes) -> Answer:
    """Served in plaintext only on evidence: a protocol answer that is not an error (an
    HTTP status below 400, a PostgreSQL authentication request, a Redis reply, an AMQP
    frame). A TLS record, an HTTP 400 ("plain HTTP request sent to HTTPS port"), a
    closed connection or silence are refusals."""
    if not reply:
        return Answer(Outcome.REFUSED, "closed the connection")
    if reply[:1] in TLS_RECORD_TYPES:
        return Answer(Outcome.REFUSED, "answered with a TLS record")
    if wire is Wire.HTTP and reply.startswith(b"HTTP/"):
        status = reply.split(b" ", 2)[1:2]
        code = int(status[0]) if status and status[0].isdigit() else 0
        outcome = Outcome.SERVED if 0 < code < 400 else Outcome.REFUSED
        return Answer(outcome, f"HTTP {code}")
    return judge_reply(wire, reply)


def plaintext_answer(address: str, port: int, wire: Wire) -> Answer:
    """The wire's first request without TLS (PostgreSQL: without the ``SSLRequest``)."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT) as conn:
            if FIRST_BYTES[wire]:
                conn.sendall(FIRST_BYTES[wire])
            return judge_plaintext(wire, _read(conn))
    except TimeoutError:
        return Answer(Outcome.REFUSED, f"no plaintext answer within {PROBE_TIMEOUT:.0f} s")
    except OSError as error:
        return Answer(Outcome.REFUSED, f"connection closed: {error.strerror or error}")


def _client_context(
    certificate: tuple[Path, Path] | None = None, legacy: bool = False
) -> ssl.SSLContext:
    """A client context that does not judge the server (the certificate checks are
    separate): a stranger's view."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if legacy:
        # Debian's OpenSSL refuses TLS < 1.2 at security level 2 on the client side too:
        # level 0 makes the offer real, so a refusal is the server's.
        context.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            # Python deprecates these versions; offering them is the point of the probe.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    if certificate is not None:
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


def foreign_client_certificate(directory: Path) -> tuple[Path, Path]:
    """A client certificate (chain, key) from a CA that is not the platform's, made now."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plinth-audit foreign CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    # A CN the platform uses, so only the issuer tells it apart.
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    chain = directory / "foreign.crt"
    key_path = directory / "foreign.key"
    pem = serialization.Encoding.PEM
    chain.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return chain, key_path


def san_matches(cert: x509.Certificate, names: Sequence[str]) -> str | None:
    """The first of ``names`` (addresses or DNS names) the certificate's SAN covers."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    addresses = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    dns = {d.lower() for d in san.get_values_for_type(x509.DNSName)}
    return next((n for n in names if n in addresses or n.lower() in dns), None)


def served_certificate(
    address: str, port: int, wire: Wire, names: Sequence[str], trust: Path, now: dt.datetime
) -> tuple[str, str | None]:
    """(the served certificate in words, a problem or None): the chain verifies against
    the platform's root and intermediates, one of ``names`` (how clients reach it: the
    address, the host's or VIP's FQDN) is in its SAN, and it is not past the point where
    ``plinth up`` renews (a third of its lifetime left)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(trust))
    context.check_hostname = False  # the SAN is checked below against every name clients use
    try:
        with (
            _tcp(address, port, wire) as conn,
            context.wrap_socket(conn, server_hostname=None) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as error:
        return "", f"served certificate does not verify: {error.verify_message}"
    except (ssl.SSLError, OSError) as error:
        # A server that ends the handshake for want of a client certificate (TLS 1.2)
        # shows no certificate to a client without one; the other probes judge it.
        return f"not read ({error})", None
    if der is None:
        return "", "no certificate served"
    cert = x509.load_der_x509_certificate(der)
    left = cert.not_valid_after_utc - now
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    matched = san_matches(cert, names)
    words = f"{cert.subject.rfc4514_string()}, serial {cert.serial_number:x}, {left.days} d left"
    if matched is None:
        return words, f"served certificate names none of {', '.join(names)} in its SAN"
    words += f", valid for {matched}"
    if left * 3 < lifetime:
        return words, (
            f"served certificate has {left.days} d of {lifetime.days} d left: past the "
            "renewal point, so a renewed certificate has not reached the daemon"
        )
    return words, None


def controller_admitted(env: Environment, address: str, port: int) -> bool:
    """Whether a flow admits the controller (``network.controllers``) to ``address:port``
    over TCP: its own flows (SSH, Patroni's reads) or the clients' where the controller
    is among them."""
    controllers = [ipaddress.ip_network(str(n)) for n in env.network.controllers]
    for flow in flows(env):
        if flow.address != address or flow.port != port or flow.protocol is not Protocol.TCP:
            continue
        for network in flow.sources.networks:
            if any(ipaddress.ip_network(network).overlaps(c) for c in controllers):
                return True
    return False


def filtered_answer(address: str, port: int) -> Answer:
    """A TCP connect that the host firewall must drop: refused when it does not open."""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT):
            return Answer(Outcome.SERVED, "the connection opened")
    except OSError as error:
        return Answer(Outcome.REFUSED, f"no connection ({error.strerror or error})")


def expected(listener: Listener, check: str) -> Outcome:
    """What a listener must do with each stranger."""
    if check == "no client certificate":
        return Outcome.REFUSED if listener.security is Security.MUTUAL_TLS else Outcome.SERVED
    return Outcome.REFUSED


CHECKS = ("no client certificate", "foreign CA", "TLS 1.1", "plaintext")


FILTERED = "firewall"
"""The check of a listener the host firewall admits no flow of the controller to."""


def probe(
    host: str,
    listener: Listener,
    address: str,
    names: Sequence[str],
    trust: Path,
    foreign: tuple[Path, Path],
    filtered: bool = False,
) -> ProbeResult:
    """The stranger probes of one TLS listener; with ``filtered`` (the firewall is on and
    no flow admits the controller) only that the controller cannot connect at all."""
    wire = wire_of(listener)
    result = ProbeResult(host, listener, address)
    assert listener.port is not None
    port = listener.port
    if filtered:
        answer = filtered_answer(address, port)
        result.answers[FILTERED] = answer
        result.certificate = "not read: the firewall admits no flow from the controller"
        if answer.outcome is Outcome.SERVED:
            result.findings.append(
                Finding(
                    host,
                    result.subject,
                    "the controller connects, but no flow admits it: the host firewall "
                    "should have dropped it",
                )
            )
        return result
    result.answers["no client certificate"] = tls_answer(address, port, wire, _client_context())
    if listener.security is Security.MUTUAL_TLS:
        result.answers["foreign CA"] = tls_answer(address, port, wire, _client_context(foreign))
    result.answers["TLS 1.1"] = tls_answer(address, port, wire, _client_context(legacy=True))
    result.answers["plaintext"] = plaintext_answer(address, port, wire)
    for check, answer in result.answers.items():
        if answer.outcome is not expected(listener, check):
            result.findings.append(
                Finding(
                    host,
                    result.subject,
                    f"{check}: {answer.outcome} ({answer.detail}); must be "
                    f"{expected(listener, check)} ({listener.security})",
                )
            )
    now = dt.datetime.now(dt.UTC)
    words, problem = served_certificate(address, port, wire, names, trust, now)
    result.certificate = problem or words
    if problem:
        result.findings.append(Finding(host, result.subject, problem))
    return result


def tls_targets(
    env: Environment, matched: dict[str, list[tuple[Socket, Listener]]]
) -> list[tuple[str, Listener, str, tuple[str, ...]]]:
    """(host, listener, address to dial, names clients use) of every TLS listener that has
    a socket, once per address and port: haproxy binds its DC's VIPs on every haproxy
    host, and a dial of a VIP reaches whichever holds it, so it is probed once (named by
    the first host)."""
    hosts = {host.name: host for host in env.hosts}
    vips = {str(vip.address): vip for vip in env.vips}
    targets: dict[tuple[str, int], tuple[str, Listener, tuple[str, ...]]] = {}
    for name, pairs in matched.items():
        host = hosts[name]
        for sock, listener in pairs:
            if listener.protocol is not Protocol.TCP or listener.port is None:
                continue
            if listener.security not in (Security.MUTUAL_TLS, Security.TLS):
                continue
            if listener.transient:  # a CLI tool's own node: not a service to probe
                continue
            dial = str(host.address) if listener.bind == "*" else listener.bind
            if not (sock.every_address or sock.address == dial):
                continue
            vip = vips.get(dial)
            names = (dial, env.vip_fqdn(vip)) if vip else (dial, env.fqdn(host), host.name)
            targets.setdefault((dial, listener.port), (name, listener, names))
    return [
        (host, listener, dial, names)
        for (dial, _), (host, listener, names) in sorted(targets.items())
    ]


def run_probes(
    env: Environment, matched: dict[str, list[tuple[Socket, Listener]]], trust_pem: bytes
) -> list[ProbeResult]:
    """Every TLS listener probed from here (the controller), host by host."""
    with tempfile.TemporaryDirectory(prefix="plinth-audit-") as scratch:
        directory = Path(scratch)
        trust = directory / "ca.crt"
        trust.write_bytes(trust_pem)
        foreign = foreign_client_certificate(directory)
        enforced = env.network.firewall == "enforce"

        def probe_target(target: tuple[str, Listener, str, tuple[str, ...]]) -> ProbeResult:
            host, listener, dial, names = target
            port = listener.port or 0
            filtered = enforced and not controller_admitted(env, dial, port)
            return probe(host, listener, dial, names, trust, foreign, filtered)

        # Filtered dials wait out their timeout: in parallel, the audit takes seconds.
        with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
            return list(pool.map(probe_target, tls_targets(env, matched)))


def to_json(findings: Sequence[Finding], probes: Sequence[ProbeResult]) -> dict[str, Any]:
    return {
        "findings": [
            {"host": f.host, "subject": f.subject, "problem": f.problem} for f in findings
        ],
        "probes": [
            {
                "host": p.host,
                "listener": p.subject,
                "security": str(p.listener.security),
                "answers": {
                    check: {"outcome": str(a.outcome), "detail": a.detail}
                    for check, a in p.answers.items()
                },
                "certificate": p.certificate,
            }
            for p in probes
        ],
    }


def render_text(findings: Sequence[Finding], probes: Sequence[ProbeResult]) -> str:
    lines = []
    for host in dict.fromkeys(p.host for p in probes):
        lines.append(f"{host}:")
        for result in (p for p in probes if p.host == host):
            outcomes = ", ".join(
                f"{check} {answer.outcome}" for check, answer in result.answers.items()
            )
            lines.append(f"  {result.subject} ({result.listener.security}): {outcomes}")
            lines.append(f"    certificate: {result.certificate}")
    if findings:
        lines.append(f"{len(findings)} finding(s):")
        lines.extend(f"  {f.host} {f.subject}: {f.problem}" for f in findings)
    else:
        lines.append("no finding: every listener is declared and behaves as the model says")
    return "\n".join(lines) + "\n"
