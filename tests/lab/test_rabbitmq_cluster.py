"""RabbitMQ in the small lab: AMQPS with a client certificate from `plinth pki client-cert`,
refusals without one or in plaintext, a node container stopped under a publisher, a gated
rolling restart with confirms counted, and a roll refused while a node is down.
Figures are printed (pytest -s)."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from pika.exceptions import AMQPError

from plinth.model import Role
from plinth.rolling import wait_for
from tests.lab.conftest import DEPLOY, LAB_ENV, Baseline, Lab, plinth

pytestmark = pytest.mark.lab

PROBE_USER = "plinth_probe"
VHOST = "plinth-probe"


@pytest.fixture(scope="module")
def mq_bundle(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client certificate for the probe user, as an application gets one."""
    out = tmp_path_factory.mktemp("mq-client")
    plinth("pki", "client-cert", "lab", "--cn", PROBE_USER, "--out", str(out))
    return out


def mq_hosts(lab: Lab) -> list[tuple[str, str, str]]:
    """(host name, FQDN, address) of every RabbitMQ node."""
    env = lab.environment
    return [(h.name, env.fqdn(h), str(h.address)) for h in env.hosts_with(Role.RABBITMQ)]


def tls_context(bundle: Path, with_certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(bundle / "ca.crt"))
    if with_certificate:
        context.load_cert_chain(
            str(bundle / f"{PROBE_USER}.crt"), str(bundle / f"{PROBE_USER}.key")
        )
    return context


def parameters(
    lab: Lab, bundle: Path, node: tuple[str, str, str], with_certificate: bool = True
) -> pika.ConnectionParameters:
    _, fqdn, address = node
    return pika.ConnectionParameters(
        host=address,
        port=lab.environment.components.rabbitmq.amqps_port,
        virtual_host=VHOST,
        credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(tls_context(bundle, with_certificate), server_hostname=fqdn),
        connection_attempts=1,
        socket_timeout=3,
        blocked_connection_timeout=10,
        heartbeat=10,
    )


def connect(lab: Lab, bundle: Path, skip: str = "") -> pika.BlockingConnection:
    """A connection to the first node that accepts one (clients list every node)."""
    errors = []
    for node in mq_hosts(lab):
        if node[0] == skip:
            continue
        try:
            return pika.BlockingConnection(parameters(lab, bundle, node))
        except (AMQPError, OSError) as error:
            errors.append(f"{node[0]}: {error!r}")
    raise ConnectionError("; ".join(errors))


def rabbitmqctl(lab: Lab, tmp: Path, host: str, args: str) -> Any:
    out = lab.host(host, tmp).check_output(f"rabbitmqctl -q {args}")
    return json.loads(out) if "--formatter json" in args else out


def queue_leader(lab: Lab, tmp: Path, queue: str) -> str | None:
    """Host name of the node leading ``queue`` (a quorum queue), if it can be read."""
    first = mq_hosts(lab)[0][0]
    with contextlib.suppress(Exception):
        rows = rabbitmqctl(lab, tmp, first, f"list_queues -p {VHOST} name leader --formatter json")
        for row in rows:
            if row.get("name") == queue:
                leader = str(row.get("leader", ""))
                return next((n for n, fqdn, _ in mq_hosts(lab) if leader.endswith(fqdn)), None)
    return None


def wait_all_running(lab: Lab, tmp: Path, seconds: float = 180) -> None:
    names = {f"rabbit@{fqdn}" for _, fqdn, _ in mq_hosts(lab)}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for host, _, _ in mq_hosts(lab):
            with contextlib.suppress(Exception):
                out = lab.host(host, tmp).check_output(
                    "rabbitmq-diagnostics -q cluster_status --formatter json"
                )
                if set(json.loads(out)["running_nodes"]) == names:
                    return
        time.sleep(2)
    raise AssertionError("the RabbitMQ cluster did not come back to 3 running nodes")


@dataclass
class Publisher:
    """Publishes numbered persistent messages with publisher confirms, reconnecting to any
    node on failure; records which numbers the cluster confirmed, and when."""

    lab: Lab
    bundle: Path
    queue: str
    confirmed: list[int] = field(default_factory=list)
    confirm_times: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        number = 0
        connection = None
        while not self.stop.is_set():
            try:
                if connection is None or connection.is_closed:
                    connection = connect(self.lab, self.bundle)
                    channel = connection.channel()
                    channel.confirm_delivery()
                number += 1
                channel.basic_publish(
                    "", self.queue, str(number).encode(),
                    pika.BasicProperties(delivery_mode=2), mandatory=True,
                )  # fmt: skip
                self.confirmed.append(number)
                self.confirm_times.append(time.monotonic())
            except (AMQPError, OSError, ConnectionError):
                with contextlib.suppress(Exception):
                    if connection is not None:
                        connection.close()
                connection = None
                time.sleep(0.2)
            time.sleep(0.02)
        with contextlib.suppress(Exception):
            if connection is not None:
                connection.close()

    def longest_gap(self, since: float) -> float:
        times = [t for t in self.confirm_times if t >= since - 2]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@dataclass
class Consumer:
    """Consumes with manual acks (acked after it is recorded), reconnecting on failure."""

    lab: Lab
    bundle: Path
    queue: str
    received: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                connection = connect(self.lab, self.bundle)
                channel = connection.channel()
                channel.basic_qos(prefetch_count=50)
                for method, _, body in channel.consume(self.queue, inactivity_timeout=0.5):
                    if method is not None:
                        self.received.add(int(body))
                        channel.basic_ack(method.delivery_tag)
                    if self.stop.is_set():
                        break
                with contextlib.suppress(Exception):
                    connection.close()
            except (AMQPError, OSError, ConnectionError):
                time.sleep(0.2)


def declare(lab: Lab, bundle: Path, queue: str) -> None:
    """A durable queue declared without a type: the vhost's default (quorum) applies."""
    connection = connect(lab, bundle)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.queue_purge(queue)
    connection.close()


def drain(lab: Lab, bundle: Path, consumer: Consumer, expected: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not set(expected) <= consumer.received:
        time.sleep(0.5)


@contextlib.contextmanager
def traffic(lab: Lab, bundle: Path, queue: str) -> Iterator[tuple[Publisher, Consumer]]:
    publisher = Publisher(lab, bundle, queue)
    consumer = Consumer(lab, bundle, queue)
    threads = [threading.Thread(target=t.run, daemon=True) for t in (publisher, consumer)]
    for t in threads:
        t.start()
    try:
        yield publisher, consumer
    finally:
        publisher.stop.set()
        drain(lab, bundle, consumer, publisher.confirmed, 60)
        consumer.stop.set()
        for t in threads:
            t.join(timeout=30)


def test_client_with_certificate_publishes_and_consumes_over_amqps(
    deployed_small_lab: Lab, mq_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    declare(lab, mq_bundle, "probe-tls")
    connection = connect(lab, mq_bundle)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "probe-tls", b"hello", pika.BasicProperties(delivery_mode=2))
    method, _, body = channel.basic_get("probe-tls", auto_ack=True)
    connection.close()
    assert body == b"hello", method
    first = mq_hosts(lab)[0][0]
    queues = rabbitmqctl(lab, tmp_path, first, f"list_queues -p {VHOST} name type --formatter json")
    assert {"name": "probe-tls", "type": "quorum"} in queues


def test_client_without_certificate_is_refused(deployed_small_lab: Lab, mq_bundle: Path) -> None:
    lab = deployed_small_lab
    for node in mq_hosts(lab):
        with pytest.raises((AMQPError, OSError)):
            pika.BlockingConnection(parameters(lab, mq_bundle, node, with_certificate=False))


def test_plaintext_amqp_and_management_ports_are_closed(deployed_small_lab: Lab) -> None:
    for _, _, address in mq_hosts(deployed_small_lab):
        for port in (5672, 15672):
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
                pass


def test_management_api_requires_a_client_certificate(
    deployed_small_lab: Lab, mq_bundle: Path
) -> None:
    lab = deployed_small_lab
    _, fqdn, address = mq_hosts(lab)[0]
    port = lab.environment.components.rabbitmq.management_port
    resolve = f"{fqdn}:{port}:{address}"
    base = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
            "--resolve", resolve, "--cacert", str(mq_bundle / "ca.crt")]  # fmt: skip
    url = f"https://{fqdn}:{port}/api/overview"
    without = subprocess.run([*base, url], capture_output=True, text=True, check=False)
    assert without.stdout in ("000", ""), without  # TLS handshake refused: no HTTP at all
    cert = [
        "--cert",
        str(mq_bundle / f"{PROBE_USER}.crt"),
        "--key",
        str(mq_bundle / f"{PROBE_USER}.key"),
    ]
    with_cert = subprocess.run([*base, *cert, url], capture_output=True, text=True, check=False)
    assert with_cert.stdout == "401", with_cert  # TLS accepted; the API still wants a login


def test_quorum_queue_keeps_accepting_and_delivering_when_a_node_container_stops(
    deployed_small_lab: Lab, mq_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    queue = "probe-node-loss"
    declare(lab, mq_bundle, queue)
    victim = queue_leader(lab, tmp_path, queue) or mq_hosts(lab)[0][0]
    try:
        with traffic(lab, mq_bundle, queue) as (publisher, consumer):
            time.sleep(3)
            stopped_at = time.monotonic()
            # A host shut down, not a crash: the container's systemd stops its units in
            # order (Airflow's worker drains), which takes longer than docker's default
            # 10 s before SIGKILL; a SIGKILLed namespace can leave clients waiting for a
            # heartbeat timeout instead of a closed connection.
            subprocess.run(
                ["docker", "stop", "--time", "60", f"plinth-lab-{victim}"],
                check=True,
                timeout=120,
            )
            down_at = time.monotonic()
            wait_for(lambda: any(t > down_at for t in publisher.confirm_times), 20, 0.2)
            time.sleep(3)
            after_down = [t for t in publisher.confirm_times if t > down_at]
            gap = publisher.longest_gap(stopped_at)
        lost = sorted(set(publisher.confirmed) - consumer.received)
        print(
            f"\nnode loss ({victim}, queue leader): longest gap between confirmed publishes "
            f"{gap:.2f} s; docker stop took {down_at - stopped_at:.1f} s; "
            f"{len(after_down)} confirmed after the container was down; "
            f"confirmed {len(publisher.confirmed)}, received {len(consumer.received)}, "
            f"lost {len(lost)}"
        )
        assert after_down, "no publish was confirmed after the node's container stopped"
        assert lost == [], f"confirmed but never delivered: {lost[:20]}"
    finally:
        subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True, timeout=120)
        lab.wait_for_ssh(victim, tmp_path)
        wait_all_running(lab, tmp_path)


def set_heartbeat(seconds: int) -> None:
    data = yaml.safe_load(LAB_ENV.read_text())
    data.setdefault("components", {}).setdefault("rabbitmq", {})["heartbeat_seconds"] = seconds
    LAB_ENV.write_text(yaml.safe_dump(data, sort_keys=False))


def started_at(lab: Lab, tmp: Path, host: str) -> str:
    return str(
        lab.host(host, tmp).check_output(
            "systemctl show -p ActiveEnterTimestampMonotonic rabbitmq-server.service"
        )
    )


def test_rolling_restart_refuses_while_a_node_is_down(
    deployed_small_lab: Lab, lab_model: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    names = [n for n, _, _ in mq_hosts(lab)]
    down = names[-1]
    before = {n: started_at(lab, tmp_path, n) for n in names[:-1]}
    # The service stays active (so the deploy does not just start it): the node is out
    # of the cluster, as a node paused by pause_minority would be.
    rabbitmqctl(lab, tmp_path, down, "stop_app")
    try:
        set_heartbeat(30)
        result = plinth(*DEPLOY, check=False, timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "refused: node(s) not running in the cluster:" in output, output[-3000:]
        assert "nothing was changed" in output
        assert {n: started_at(lab, tmp_path, n) for n in names[:-1]} == before
    finally:
        rabbitmqctl(lab, tmp_path, down, "start_app")
        wait_all_running(lab, tmp_path)
    undoable_lab.undone()


def test_rolling_restart_loses_no_confirmed_message(
    deployed_small_lab: Lab, mq_bundle: Path, disposable_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    names = [n for n, _, _ in mq_hosts(lab)]
    before = {n: started_at(lab, tmp_path, n) for n in names}
    queue = "probe-rolling"
    declare(lab, mq_bundle, queue)
    set_heartbeat(45)
    with traffic(lab, mq_bundle, queue) as (publisher, consumer):
        started = time.monotonic()
        result = plinth(*DEPLOY, check=False, timeout=900)
        took = time.monotonic() - started
        gap = publisher.longest_gap(started)
    lost = sorted(set(publisher.confirmed) - consumer.received)
    print(
        f"\nrolling restart in {took:.0f} s: confirmed {len(publisher.confirmed)}, "
        f"received {len(consumer.received)}, lost {len(lost)}; longest gap between "
        f"confirmed publishes {gap:.2f} s"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert all(started_at(lab, tmp_path, n) != before[n] for n in names), "not every node restarted"
    assert lost == [], f"confirmed but never delivered: {lost[:20]}"
    assert len(publisher.confirmed) > 100
