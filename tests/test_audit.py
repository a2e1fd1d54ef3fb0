"""``plinth audit``'s judgement (issue 16): sockets against the model's listeners, and the
probes' reading of a server's answers. The probes also run against a real TLS server in
this process that requires client certificates (our own logic, over a real handshake);
the daemons themselves are probed in the lab (tests/lab/test_network_audit.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from facts.sockets import Socket, parse_sockets
from plinth import audit
from plinth.audit import Outcome, Wire
from plinth.diagram_files import DOCUMENTED
from plinth.model import Environment
from plinth.topology import flows as F

SS_OUTPUT = """\
tcp   LISTEN 0      4096     10.231.1.11:2379       0.0.0.0:*    users:(("etcd",pid=812,fd=8))
tcp   LISTEN 0      4096       127.0.0.1:2379       0.0.0.0:*    users:(("etcd",pid=812,fd=7))
tcp   LISTEN 0      128          0.0.0.0:22         0.0.0.0:*    users:(("sshd",pid=90,fd=3))
tcp   LISTEN 0      128             [::]:22            [::]:*    users:(("sshd",pid=90,fd=4))
tcp   LISTEN 0      4096               *:4369             *:*    users:(("epmd",pid=77,fd=3),("systemd",pid=1,fd=60))
udp   UNCONN 0      0          127.0.0.1:323        0.0.0.0:*    users:(("chronyd",pid=55,fd=5))
udp   UNCONN 0      0     127.0.0.53%lo:53          0.0.0.0:*    users:(("systemd-resolve",pid=50,fd=13))
"""  # noqa: E501


def test_ss_output_is_read_with_wildcards_ipv6_and_interfaces() -> None:
    sockets = parse_sockets(SS_OUTPUT.splitlines())
    by_port = {(s.port, s.address): s for s in sockets}
    assert by_port[(2379, "10.231.1.11")].process == "etcd"
    assert not by_port[(2379, "10.231.1.11")].loopback
    assert by_port[(2379, "127.0.0.1")].loopback
    assert by_port[(22, "::")].every_address and by_port[(4369, "*")].every_address
    assert by_port[(53, "127.0.0.53")].protocol == "udp"  # the %lo suffix dropped
    assert len(sockets) == 7


def small_lab_host() -> tuple[Environment, str, list[F.Listener]]:
    env = DOCUMENTED["lab-small"]()
    host = env.hosts[0].name
    return env, host, [item for item in F.listeners(env) if item.host == host]


def sockets_for(declared: list[F.Listener]) -> list[Socket]:
    """What a host that runs exactly the model would show."""
    found = []
    for item in declared:
        if item.protocol in (F.Protocol.TCP, F.Protocol.UDP) and item.port is not None:
            address = "0.0.0.0" if item.bind == "*" else item.bind
            found.append(Socket(item.protocol.value, address, item.port, item.component))
    return found


def test_a_host_that_runs_the_model_has_no_finding() -> None:
    env, host, declared = small_lab_host()
    sockets = [*sockets_for(declared), Socket("tcp", "127.0.0.1", 6010, "sshd")]
    findings, matched = audit.listener_findings(env, host, sockets)
    assert findings == []
    assert len(matched) == len(sockets) - 1  # loopback is not judged


def test_an_undeclared_listener_a_missing_one_and_a_wider_bind_are_findings() -> None:
    env, host, declared = small_lab_host()
    sockets = sockets_for(declared)
    etcd = next(s for s in sockets if s.port == env.components.etcd.client_port)
    sockets.remove(etcd)
    sockets.append(Socket("tcp", "0.0.0.0", etcd.port, "etcd"))  # wider than the model
    redis = next(s for s in sockets if s.port == env.components.redis.port)
    sockets.remove(redis)  # the daemon is down
    sockets.append(Socket("tcp", "0.0.0.0", 8080, "python3"))  # nobody declared it
    findings, _ = audit.listener_findings(env, host, sockets)
    problems = sorted((f.subject.split()[0], f.problem.split(";")[0]) for f in findings)
    assert ("0.0.0.0:8080/tcp", "listening, but no listener of the model has this port") in (
        problems
    )
    assert (f"0.0.0.0:{etcd.port}/tcp", "bound to every address") in problems
    missing = [f for f in findings if "nothing listens there" in f.problem]
    assert [f.subject.split(":")[1] for f in missing] == [f"{redis.port}/tcp Redis"]
    assert len(findings) == 3


def test_a_vip_bound_on_every_haproxy_host_is_probed_once() -> None:
    env = DOCUMENTED["lab-small"]()
    matched = {}
    for host in env.hosts:
        declared = [item for item in F.listeners(env) if item.host == host.name]
        matched[host.name] = audit.listener_findings(env, host.name, sockets_for(declared))[1]
    targets = audit.tls_targets(env, matched)
    dials = [(dial, listener.port) for _, listener, dial, _ in targets]
    assert len(dials) == len(set(dials))
    rw = [t for t in targets if t[1].name == "rw"]
    vip = env.vips_in("dc1")[0]
    assert len(rw) == 1 and rw[0][2:] == (str(vip.address), (str(vip.address), env.vip_fqdn(vip)))
    assert all(listener.security in (F.Security.MUTUAL_TLS, F.Security.TLS)
               for _, listener, _, _ in targets)  # fmt: skip


def test_replies_are_judged_by_protocol() -> None:
    nginx_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n<h1>No required SSL certificate was sent</h1>"
    assert audit.judge_reply(Wire.HTTP, nginx_400).outcome is Outcome.REFUSED
    assert audit.judge_reply(Wire.HTTP, b"HTTP/1.1 200 OK\r\n\r\n{}").outcome is Outcome.SERVED
    assert audit.judge_reply(Wire.HTTP, b"HTTP/1.1 404 Not Found\r\n").outcome is Outcome.SERVED
    fatal = b"E\x00\x00\x00\x30SFATAL\x00C28000\x00Mconnection requires a valid client certificate\x00\x00"  # noqa: E501
    answer = audit.judge_reply(Wire.POSTGRESQL, fatal)
    assert answer.outcome is Outcome.REFUSED
    assert "requires a valid client certificate" in answer.detail
    assert audit.judge_reply(Wire.POSTGRESQL, b"R\x00\x00\x00\x08\x00\x00\x00\x03").outcome is (
        Outcome.SERVED
    )
    assert audit.judge_reply(Wire.REDIS, b"-NOAUTH Authentication required.\r\n").outcome is (
        Outcome.SERVED
    )
    assert audit.judge_reply(Wire.AMQP, b"").outcome is Outcome.REFUSED


# ---- a real TLS server that requires a client certificate ----


Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issuer | None,
    ca: bool,
    days: float,
    san: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30 - days if days < 30 else 0, minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*items: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@contextmanager
def serving(context: ssl.SSLContext) -> Iterator[int]:
    """An HTTP-over-TLS server on 127.0.0.1 with ``context``, in a thread that is stopped
    and joined on exit (a thread left blocked would meet gevent's patching in a later
    test of this process); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, int]]:
    """(trust, client chain, client key, port) of an HTTP-over-TLS server on 127.0.0.1
    that requires a client certificate of its CA, TLS 1.2 at least."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test platform root", ca_key, None, True, 365)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("server", server_key, (ca.subject, ca_key), False, 20, "127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("client", client_key, (ca.subject, ca_key), False, 20)
    (tmp_path / "ca.crt").write_bytes(_pem(ca))
    (tmp_path / "server.crt").write_bytes(_pem(server))
    (tmp_path / "server.key").write_bytes(_key_pem(server_key))
    (tmp_path / "client.crt").write_bytes(_pem(client))
    (tmp_path / "client.key").write_bytes(_key_pem(client_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.load_verify_locations(tmp_path / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    with serving(context) as port:
        yield tmp_path / "ca.crt", tmp_path / "client.crt", tmp_path / "client.key", port


def _listener(port: int) -> F.Listener:
    return F.Listener("h1", "dc1", F.Protocol.TCP, port, "127.0.0.1", "patroni", "Patroni API",
                      "components.patroni.rest_api_port", F.Security.MUTUAL_TLS)  # fmt: skip


def test_a_server_requiring_client_certificates_passes_every_probe(
    platform: tuple[Path, Path, Path, int], tmp_path: Path
) -> None:
    trust, chain, key, port = platform
    foreign = audit.foreign_client_certificate(tmp_path)
    result = audit.probe("h1", _listener(port), "127.0.0.1", ("127.0.0.1",), trust, foreign)
    assert {c: a.outcome for c, a in result.answers.items()} == {
        "no client certificate": Outcome.REFUSED,
        "foreign CA": Outcome.REFUSED,
        "TLS 1.1": Outcome.REFUSED,
        "plaintext": Outcome.REFUSED,
    }
    # the platform's own client is served: the refusals above are the server's judgement
    own = audit.tls_answer("127.0.0.1", port, Wire.HTTP, audit._client_context((chain, key)))
    assert own.outcome is Outcome.SERVED, own
    # 20 of 20 days left (the renewal point is a third), chain and IP SAN verify
    assert result.findings == [], result.findings
    assert "CN=server" in result.certificate


def test_a_listener_the_model_calls_mutual_that_serves_strangers_is_a_finding(
    tmp_path: Path,
) -> None:
    """A plain-TLS server where the model says mTLS: the no-certificate and foreign-CA
    probes are served, each a finding naming what it must be."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("root", ca_key, None, True, 365)
    server_key = ec.generate_private_key(ec.SECP256R1())
    # 5 days left of a 30-day certificate: past the renewal point.
    server = _certificate("server", server_key, (ca.subject, ca_key), False, 5, "127.0.0.1")
    (tmp_path / "ca.crt").write_bytes(_pem(ca))
    (tmp_path / "s.crt").write_bytes(_pem(server))
    (tmp_path / "s.key").write_bytes(_key_pem(server_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    foreign = audit.foreign_client_certificate(tmp_path)
    with serving(context) as port:
        result = audit.probe(
            "h1", _listener(port), "127.0.0.1", ("h1.example",), tmp_path / "ca.crt", foreign
        )
        now = dt.datetime.now(dt.UTC)
        _, stale = audit.served_certificate(
            "127.0.0.1", port, Wire.HTTP, ("127.0.0.1",), tmp_path / "ca.crt", now
        )
    assert stale is not None and "past the renewal point" in stale
    problems = [f.problem for f in result.findings]
    assert any(p.startswith("no client certificate: served") for p in problems), problems
    assert any(p.startswith("foreign CA: served") for p in problems), problems
    # it names 127.0.0.1, not the name clients use here
    assert any("names none of h1.example" in p for p in problems), problems
    assert not any(p.startswith(("TLS 1.1", "plaintext")) for p in problems), problems


def test_plaintext_counts_as_served_only_on_evidence() -> None:
    https_port_400 = (
        b"HTTP/1.1 400 Bad Request\r\n\r\nThe plain HTTP request was sent to HTTPS port"
    )
    assert audit.judge_plaintext(Wire.HTTP, https_port_400).outcome is Outcome.REFUSED
    assert audit.judge_plaintext(Wire.HTTP, b"HTTP/1.0 200 OK\r\n").outcome is Outcome.SERVED
    tls_alert = b"\x15\x03\x03\x00\x02\x02\n"
    assert audit.judge_plaintext(Wire.AMQP, tls_alert).outcome is Outcome.REFUSED
    assert audit.judge_plaintext(Wire.AMQP, b"AMQP\x00\x00\x09\x01").outcome is Outcome.SERVED
    assert audit.judge_plaintext(Wire.REDIS, b"+PONG\r\n").outcome is Outcome.SERVED


def test_a_resolver_reply_socket_is_not_a_listener() -> None:
    line = (
        "udp UNCONN 0 0 0.0.0.0:55149 0.0.0.0:* uid:13 ino:4514826 sk:1099 "
        "cgroup:/docker/92fc/system.slice/squid.service <->"
    )
    (sock,) = parse_sockets([line])
    assert sock.process == "squid.service" and sock.client_socket
    assert not Socket("udp", "0.0.0.0", 123, "chronyd").client_socket
    env, host, declared = small_lab_host()
    assert audit.listener_findings(env, host, [*sockets_for(declared), sock])[0] == []


def test_the_postgresql_probe_speaks_ssl_request_first() -> None:
    assert struct.pack("!II", 8, 80877103) == audit.SSL_REQUEST
    startup = audit.FIRST_BYTES[Wire.POSTGRESQL]
    assert struct.unpack("!I", startup[:4])[0] == len(startup)
    assert struct.unpack("!I", startup[4:8])[0] == 3 << 16  # protocol 3.0


def test_the_controller_is_admitted_only_where_a_flow_says_so() -> None:
    env = DOCUMENTED["lab-small"]()
    host = env.hosts[0]
    address = str(host.address)
    c = env.components
    assert audit.controller_admitted(env, address, c.patroni.rest_api_port)  # its own reads
    assert audit.controller_admitted(env, address, c.redis.port)  # the lab's client
    assert not audit.controller_admitted(env, address, c.etcd.client_port)
    assert not audit.controller_admitted(env, address, c.patroni.postgresql_port)
    vip = str(env.vips_in("dc1")[0].address)
    assert audit.controller_admitted(env, vip, c.haproxy.primary_port)


def test_a_cli_tool_listener_is_neither_required_nor_probed() -> None:
    """rabbitmqctl's own distribution listener (35672-35682) is declared, so its socket is
    no finding while it runs and its absence none when it does not."""
    env, host, declared = small_lab_host()
    cli = next(item for item in declared if item.transient)
    assert cli.port_text == "35672-35682/tcp" and cli.serves(35675)
    sockets = [s for s in sockets_for(declared) if not cli.serves(s.port)]
    assert audit.listener_findings(env, host, sockets)[0] == []
    running = [*sockets, Socket("tcp", "0.0.0.0", 35675, "session-4.scope")]
    findings, matched = audit.listener_findings(env, host, running)
    assert findings == []
    assert all(listener is not cli for _, listener, _, _ in audit.tls_targets(env, {host: matched}))
