"""Redis benchmark on a deployed `small` lab: master loss to writes resumed, no-op runs.

    flock /tmp/plinth-lab.lock python bench/redis.py

Needs `plinth lab up --profile small && plinth up lab --yes` first (it does not bring
the lab up or down). Prints one line per figure:

* master container stopped -> first write acknowledged by the new master, for a client
  that follows Sentinel over TLS (target <= 10 s);
* a no-op run of the Redis cell alone (target <= 15 s) and of the whole stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `python bench/redis.py` puts bench/ first on sys.path, where this file would shadow
# the redis client package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import redis  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402
from redis.sentinel import Sentinel  # noqa: E402

from plinth.model import Role, load_environment  # noqa: E402

CN = "redis-bench"


def plinth(*args: str) -> str:
    proc = subprocess.run(["plinth", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"plinth {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def timed(command: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.monotonic() - started, proc.stdout


def main() -> None:
    env = load_environment(REPO / "inventory" / "lab.yaml")
    settings = env.components.redis
    name = f"{settings.master_name_prefix}-dc1"
    bundle = Path(tempfile.mkdtemp(prefix="redis-bench-"))
    plinth("pki", "client-cert", "lab", "--cn", CN, "--out", str(bundle))
    tls = {
        "ssl": True,
        "ssl_ca_certs": str(bundle / "ca.crt"),
        "ssl_certfile": str(bundle / f"{CN}.crt"),
        "ssl_keyfile": str(bundle / f"{CN}.key"),
        "socket_timeout": 1,
        "socket_connect_timeout": 1,
        # No retries with backoff inside redis-py (its default): the loop retries at once.
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = Sentinel(
        [(str(h.address), settings.sentinel_port) for h in env.hosts_with(Role.SENTINEL, "dc1")],
        sentinel_kwargs=tls
        | {"password": plinth("secrets", "get", "lab", "redis-sentinel-password").strip()},
        password=plinth("secrets", "get", "lab", "redis-default-password").strip(),
        **tls,
    )
    figures: list[tuple[str, str]] = []

    seconds, _ = timed(["pyinfra", "inventory/lab-dc1.py", "bench/redis_cell.py", "-y"])
    figures.append(("no-op run of the Redis cell (pyinfra, 3 hosts)", f"{seconds:.1f} s"))
    seconds, _ = timed(["plinth", "up", "lab", "--yes"])
    figures.append(("no-op `plinth up lab` (whole stack)", f"{seconds:.1f} s"))

    master_ip = str(sentinel.discover_master(name)[0])
    victim = next(h.name for h in env.hosts if str(h.address) == master_ip)
    client = sentinel.master_for(name)
    successes: list[float] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            try:
                client.incr("plinth:bench")
                successes.append(time.monotonic())
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    time.sleep(1)
    subprocess.run(["docker", "stop", "-t", "1", f"plinth-lab-{victim}"], check=True)
    # The container is gone once `docker stop` returns; the outage a client sees runs from
    # its last write acknowledged by the old master to its first on the new one.
    stopped = time.monotonic()
    try:
        while not [t for t in successes if t > stopped] and time.monotonic() - stopped < 60:
            time.sleep(0.05)
        after = [t for t in successes if t > stopped]
        stop.set()
        if not after:
            figures.append((f"master {victim} stopped -> writes resumed", "NOT within 60 s"))
        else:
            new = sentinel.discover_master(name)[0]
            last_old = max(t for t in successes if t <= stopped)
            figures.append(
                (
                    f"master {victim} stopped -> writes resumed on {new}",
                    f"{after[0] - last_old:.1f} s without an acknowledged write "
                    f"({after[0] - stopped:.1f} s after `docker stop` returned)",
                )
            )
    finally:
        stop.set()
        subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True)
    # The old master rejoins as a replica (Sentinel reconfigures it); wait until healthy.
    returned = time.monotonic()
    while True:
        status = subprocess.run(
            ["plinth", "status", "lab-dc1", "--json"], cwd=REPO, capture_output=True, text=True
        )
        redis_cell = json.loads(status.stdout)["stacks"][0]["redis"] if status.stdout else None
        if redis_cell and not redis_cell["problems"]:
            waited = f"{time.monotonic() - returned:.1f} s"
            figures.append(("old master back as a replica, cell healthy after", waited))
            break
        if time.monotonic() - returned > 120:
            figures.append(("cell healthy again after the old master returned", "NOT within 120 s"))
            break
        time.sleep(2)
    width = max(len(k) for k, _ in figures)
    for key, value in figures:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
