"""Redis + Sentinel in the small lab: mutual TLS, failover, gated rolling restart, no-op.

Clients are what an application runs: redis-py following Sentinel over TLS with a
certificate from ``plinth pki client-cert`` and the passwords from ``plinth secrets get``.
"""

from __future__ import annotations

import itertools
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from plinth.model import Role
from tests.lab.conftest import DEPLOY, LAB_ENV, REPO, Baseline, Lab, lab_secret, plinth

pytestmark = pytest.mark.lab

CLIENT_CN = "redis-probe"
CELL_WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def redis_bundle(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("redis-client")
    plinth("pki", "client-cert", "lab", "--cn", CLIENT_CN, "--out", str(out))
    return out


def tls_kwargs(bundle: Path | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "ssl": True,
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        # redis-py's default retries with exponential backoff (up to 10 s) against a
        # Sentinel that is gone: the writer loop retries itself, at once.
        "retry": Retry(NoBackoff(), 0),
    }
    if bundle is not None:
        kwargs |= {
            "ssl_ca_certs": str(bundle / "ca.crt"),
            "ssl_certfile": str(bundle / f"{CLIENT_CN}.crt"),
            "ssl_keyfile": str(bundle / f"{CLIENT_CN}.key"),
        }
    return kwargs


def master_name(lab: Lab) -> str:
    return f"{lab.environment.components.redis.master_name_prefix}-dc1"


def sentinel(lab: Lab, bundle: Path) -> Sentinel:
    env = lab.environment
    port = env.components.redis.sentinel_port
    addresses = [(str(h.address), port) for h in env.hosts_with(Role.SENTINEL, "dc1")]
    sentinel_kwargs = tls_kwargs(bundle) | {"password": lab_secret("redis-sentinel-password")}
    # redis-py's Sentinel is unannotated (constructor and methods): called through types.
    new_sentinel = cast("Callable[..., Sentinel]", Sentinel)
    return new_sentinel(
        addresses,
        sentinel_kwargs=sentinel_kwargs,
        password=lab_secret("redis-default-password"),
        **tls_kwargs(bundle),
    )


def master_address(lab: Lab, bundle: Path) -> str:
    discover_master = cast(
        "Callable[[str], tuple[str, int]]", sentinel(lab, bundle).discover_master
    )
    address, _ = discover_master(master_name(lab))
    return str(address)


def master_client(lab: Lab, bundle: Path) -> redis.Redis:
    """A client of dc1's master through Sentinel: ``Sentinel.master_for``, typed."""
    master_for = cast("Callable[[str], redis.Redis]", sentinel(lab, bundle).master_for)
    return master_for(master_name(lab))


def replica_client(lab: Lab, bundle: Path) -> redis.Redis:
    """A client of one of dc1's replicas through Sentinel: ``Sentinel.slave_for``, typed."""
    slave_for = cast("Callable[[str], redis.Redis]", sentinel(lab, bundle).slave_for)
    return slave_for(master_name(lab))


def host_of(lab: Lab, address: str) -> str:
    return next(h.name for h in lab.environment.hosts if str(h.address) == address)


def cell_status(lab: Lab) -> dict[str, Any]:
    import json

    result = plinth("status", "lab-dc1", "--json", check=False)
    return dict(json.loads(result.stdout)["stacks"][0]["redis"])


def wait_cell_healthy(lab: Lab, seconds: float = CELL_WAIT_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        cell = cell_status(lab)
        if not cell["problems"]:
            return cell
        if time.monotonic() > deadline:
            raise AssertionError(f"redis cell not healthy after {seconds} s: {cell['problems']}")
        time.sleep(2)


def test_client_with_certificate_reads_and_writes_through_sentinel(
    deployed_small_lab: Lab, redis_bundle: Path
) -> None:
    lab = deployed_small_lab
    client = master_client(lab, redis_bundle)
    assert client.set("plinth:probe", "over-tls") is True
    assert client.get("plinth:probe") == b"over-tls"
    replica = replica_client(lab, redis_bundle)
    deadline = time.monotonic() + 10
    while replica.get("plinth:probe") != b"over-tls":
        assert time.monotonic() < deadline, "write did not reach a replica"
        time.sleep(0.2)


def test_without_certificate_or_in_plaintext_refused(
    deployed_small_lab: Lab, redis_bundle: Path
) -> None:
    lab = deployed_small_lab
    settings = lab.environment.components.redis
    address = master_address(lab, redis_bundle)
    password = lab_secret("redis-default-password")
    no_cert = tls_kwargs(None) | {"ssl_ca_certs": str(redis_bundle / "ca.crt")}
    for port in (settings.port, settings.sentinel_port):
        # TLS with the right CA and password but no client certificate: handshake refused.
        with pytest.raises((redis.ConnectionError, ssl.SSLError)):
            redis.Redis(host=address, port=port, password=password, **no_cert).ping()
        # Plaintext on the TLS port: the server never answers a RESP command.
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            redis.Redis(
                host=address, port=port, password=password, socket_timeout=2,
                socket_connect_timeout=2,
            ).ping()  # fmt: skip
    # No plaintext listener at all on the default port numbers' neighbours: port 0.
    # redis-py 6.4 types config_get's *args as lists, not names (redis/redis-py#3780).
    config = master_client(lab, redis_bundle).config_get("port", "tls-port")  # type: ignore[arg-type]
    assert config == {"port": "0", "tls-port": str(settings.port)}
    # A certificate but a wrong password: refused by the ACL.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(
            host=address, port=settings.port, password="wrong", **tls_kwargs(redis_bundle)
        ).ping()


@dataclass
class Writer:
    """Writes 1, 2, 3... to a list through the master Sentinel names; records which
    writes were acknowledged, and when."""

    lab: Lab
    bundle: Path
    key: str
    acknowledged: list[int] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = master_client(self.lab, self.bundle)
        for value in itertools.count(1):
            if self.stop.is_set():
                return
            try:
                client.rpush(self.key, value)
            except (redis.RedisError, OSError):
                time.sleep(0.1)
                continue
            self.acknowledged.append(value)
            self.successes.append(time.monotonic())
            time.sleep(0.05)

    def longest_gap(self, since: float) -> float:
        times = [t for t in self.successes if t >= since - 5]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def lost(self) -> list[int]:
        client = master_client(self.lab, self.bundle)
        stored = {int(v) for v in cast("list[bytes]", client.lrange(self.key, 0, -1))}
        return [v for v in self.acknowledged if v not in stored]


@pytest.fixture
def writer(deployed_small_lab: Lab, redis_bundle: Path) -> Iterator[Writer]:
    w = Writer(deployed_small_lab, redis_bundle, f"plinth:writer:{time.time_ns()}")
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    time.sleep(1)
    yield w
    w.stop.set()
    thread.join(timeout=10)


def test_master_container_stopped_replica_promoted_writes_resume(
    deployed_small_lab: Lab, redis_bundle: Path, writer: Writer, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    old = master_address(lab, redis_bundle)
    victim = host_of(lab, old)
    subprocess.run(["docker", "stop", "-t", "1", f"plinth-lab-{victim}"], check=True)
    # The container is gone once `docker stop` returns: the outage a client sees runs from
    # its last write acknowledged by the old master to its first on the new one.
    stopped_at = time.monotonic()
    try:
        deadline = stopped_at + 60
        while not [t for t in writer.successes if t > stopped_at]:
            assert time.monotonic() < deadline, "writes did not resume within 60 s"
            time.sleep(0.1)
        first_new = next(t for t in writer.successes if t > stopped_at)
        last_old = max(t for t in writer.successes if t <= stopped_at)
        new = master_address(lab, redis_bundle)
        assert new != old
        print(f"\nmaster {victim} stopped: {host_of(lab, new)} promoted, no write acknowledged "
              f"for {first_new - last_old:.1f} s ({first_new - stopped_at:.1f} s after "
              "`docker stop` returned)")  # fmt: skip
        assert first_new - last_old <= 30
    finally:
        subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True)
        lab.wait_for_ssh(victim, tmp_path)
    cell = wait_cell_healthy(lab)
    assert cell["master"] == new
    old_node = next(n for n in cell["nodes"] if n["address"] == old)
    assert old_node["role"] == "slave" and old_node["link_up"]
    # A deploy after the failover leaves it alone (rewriting the files would restore the
    # old master); the restarted container may need other repairs, so deploy, then expect
    # a no-op.
    plinth(*DEPLOY, timeout=900)
    assert master_address(lab, redis_bundle) == new
    assert wait_cell_healthy(lab)["master"] == new
    result = plinth("preview", "lab", "--expect-no-changes", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def set_io_threads(value: int) -> None:
    data = yaml.safe_load(LAB_ENV.read_text())
    data.setdefault("components", {}).setdefault("redis", {})["io_threads"] = value
    LAB_ENV.write_text(yaml.safe_dump(data, sort_keys=False))


def io_threads(lab: Lab, bundle: Path) -> dict[str, str]:
    env = lab.environment
    password = lab_secret("redis-default-password")
    out = {}
    for h in env.hosts_with(Role.REDIS, "dc1"):
        try:
            client = redis.Redis(
                host=str(h.address), port=env.components.redis.port, password=password,
                **tls_kwargs(bundle),
            )  # fmt: skip
            out[h.name] = cast("dict[str, str]", client.config_get("io-threads"))["io-threads"]
        except redis.RedisError:
            continue
    return out


def test_rolling_restart_refuses_while_a_node_is_down(
    deployed_small_lab: Lab,
    redis_bundle: Path,
    lab_model: Path,
    undoable_lab: Baseline,
    tmp_path: Path,
) -> None:
    lab = deployed_small_lab
    wait_cell_healthy(lab)
    master = host_of(lab, master_address(lab, redis_bundle))
    victim = next(h.name for h in lab.environment.hosts_with(Role.REDIS) if h.name != master)
    unit = lab.environment.debian.key_value_store.server_unit  # redis-server, valkey-server
    lab.host(victim, tmp_path).run(f"systemctl stop {unit}")
    limit = [a for h in lab.environment.hosts if h.name != victim for a in ("--limit", h.name)]
    try:
        set_io_threads(2)
        result = subprocess.run(
            ["pyinfra", "inventory/lab-dc1.py", "deploy.py", "-y", *limit],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        refusal = [line for line in output.splitlines() if "refused:" in line]
        victim_address = next(str(h.address) for h in lab.environment.hosts if h.name == victim)
        assert refusal, output
        assert f"redis {victim_address} is down" in refusal[0], refusal
        assert "nothing was changed" in refusal[0], refusal
        print(f"\n{refusal[0].strip()}")
        assert set(io_threads(lab, redis_bundle).values()) == {"1"}  # nothing restarted
    finally:
        lab.host(victim, tmp_path).run(f"systemctl start {unit}")
    wait_cell_healthy(lab)
    undoable_lab.undone()


def test_rolling_restart_loses_no_acknowledged_write(
    deployed_small_lab: Lab, redis_bundle: Path, disposable_lab: Lab, writer: Writer
) -> None:
    lab = deployed_small_lab
    wait_cell_healthy(lab)
    old_master = master_address(lab, redis_bundle)
    set_io_threads(2)
    started = time.monotonic()
    result = plinth(*DEPLOY, timeout=900)
    took = time.monotonic() - started
    time.sleep(2)
    writer.stop.set()
    time.sleep(0.5)
    assert set(io_threads(lab, redis_bundle).values()) == {"2"}, result.stdout
    assert master_address(lab, redis_bundle) != old_master  # one SENTINEL FAILOVER
    lost = writer.lost()
    gap = writer.longest_gap(started)
    print(
        f"\nrolling restart (replicas, failover, old master) in {took:.1f} s: "
        f"{len(writer.acknowledged)} writes acknowledged, {len(lost)} lost, "
        f"longest gap {gap:.1f} s"
    )
    assert lost == []
    assert len(writer.acknowledged) > 20
