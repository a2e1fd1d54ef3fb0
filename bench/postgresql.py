"""PostgreSQL cell benchmark on the small lab, with a client writing through the VIP.

    python bench/postgresql.py [--keep]

Prints: first deploy and no-op deploy, planned-switchover write gap, write gap when the
primary's container is killed (SIGKILL, no clean shutdown), VIP failover time, the
duration of a rolling restart (a restart-requiring parameter) with its switchover count,
and the controller's peak memory. The lab is brought up from nothing (leftovers are
cleaned) and taken down at the end unless --keep. Run it on an otherwise idle machine:
it has 2 cores, so compare figures from the same run.

The first deploy is of the whole platform as ``deploy.py`` composes it; the cell is
the largest part of it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LAB_ENV = REPO / "inventory" / "lab.yaml"
PROBE = "plinth_probe"


def plinth(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(["plinth", *args], cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"plinth {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def on_host(host: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", f"plinth-lab-{host}", "bash", "-c", command],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def members() -> list[dict[str, object]]:
    for host in ("dc1-n1", "dc1-n2", "dc1-n3"):
        out = on_host(host, "patronictl -c /etc/patroni/config.yml list -f json")
        if out.returncode == 0:
            return list(json.loads(out.stdout))
    return []


def leader() -> str:
    return next(str(m["Member"]) for m in members() if m["Role"] == "Leader")


def timeline() -> int:
    return next(int(str(m["TL"])) for m in members() if m["Role"] == "Leader")


def wait(probe: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if probe():
            return time.monotonic() - started
        time.sleep(0.2)
    sys.exit(f"timed out after {seconds:.0f} s waiting for {what}")


def healthy() -> bool:
    found = members()
    return len(found) == 3 and all(m["State"] in ("running", "streaming") for m in found)


@dataclass
class Writer:
    """One insert per attempt through the VIP (verify-full, client certificate)."""

    conninfo: str
    successes: list[float] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(
                ["psql", self.conninfo, "-XAtq", "-c",
                 "insert into bench_probe default values returning id"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                self.committed.append(int(out.stdout.split()[-1]))
                self.successes.append(time.monotonic())
            time.sleep(0.05)

    def gap_after(self, since: float) -> float:
        times = [t for t in self.successes if t >= since - 2]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("nan"))


def conninfo(bundle: Path) -> str:
    env = yaml.safe_load(LAB_ENV.read_text())
    vip = next(v for v in env["vips"] if "postgresql" in v.get("services", []))
    domain = next(d["domain"] for d in env["datacenters"] if d["name"] == vip["datacenter"])
    params = {
        "host": f"{vip['name']}.{domain}", "hostaddr": vip["address"], "port": "5000",
        "dbname": "postgres", "user": PROBE, "sslmode": "verify-full", "connect_timeout": "2",
        "sslrootcert": bundle / "ca.crt", "sslcert": bundle / f"{PROBE}.crt",
        "sslkey": bundle / f"{PROBE}.key",
    }  # fmt: skip
    return " ".join(f"{k}={v}" for k, v in params.items())


def vip_holder() -> str | None:
    for host in ("dc1-n1", "dc1-n2", "dc1-n3"):
        if " 10.231.1.100/" in on_host(host, "ip -4 -o addr show").stdout:
            return host
    return None


def measured(writer: Writer, action: Callable[[], None], settle: float = 4.0) -> float:
    started = time.monotonic()
    action()
    wait(lambda: bool([t for t in writer.successes if t > started + 0.5]), 60, "writes to resume")
    time.sleep(settle)
    return writer.gap_after(started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    figures: list[tuple[str, str]] = []

    plinth("lab", "up", "--profile", "small")
    seconds, _ = plinth("up", "lab", "--yes")
    figures.append(("first deploy (whole platform)", f"{seconds:.1f} s"))
    noop = [plinth("up", "lab", "--yes")[0] for _ in range(2)]
    figures.append(("no-op up (2 runs)", " / ".join(f"{s:.1f} s" for s in noop)))

    bundle = Path(tempfile.mkdtemp(prefix="plinth-bench-"))
    plinth("pki", "client-cert", "lab", "--cn", PROBE, "--out", str(bundle))
    dsn = conninfo(bundle)
    subprocess.run(
        ["psql", dsn, "-Xqc", "create table if not exists bench_probe (id bigserial primary key)"],
        check=True,
    )
    writer = Writer(dsn)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    time.sleep(2)

    def switchover() -> None:
        plinth("switchover", "lab-dc1")

    gap = measured(writer, switchover)
    figures.append(("planned switchover: write gap", f"{gap:.1f} s"))
    wait(healthy, 120, "3 healthy members")

    victim = leader()

    def kill_primary() -> None:
        subprocess.run(["docker", "kill", f"plinth-lab-{victim}"], check=True, capture_output=True)

    gap = measured(writer, kill_primary)
    figures.append((f"primary container killed ({victim}): write gap", f"{gap:.1f} s"))
    subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True, capture_output=True)
    wait(healthy, 180, "the killed member to rejoin")

    holder = vip_holder()
    assert holder is not None, "nobody holds the PostgreSQL VIP"
    on_host(holder, "systemctl stop keepalived")
    moved = wait(lambda: vip_holder() not in (None, holder), 30, "the VIP to move")
    figures.append(("VIP failover (keepalived MASTER stopped)", f"{moved:.1f} s"))
    on_host(holder, "systemctl start keepalived")

    original = LAB_ENV.read_text()
    data = yaml.safe_load(original)
    patroni = data.setdefault("components", {}).setdefault("patroni", {})
    from plinth.model import PatroniSettings

    patroni["parameters"] = dict(PatroniSettings().parameters, shared_buffers="112MB")
    LAB_ENV.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        before = timeline()
        started = time.monotonic()
        seconds, _ = plinth("up", "lab", "--yes")
        gap = writer.gap_after(started)
        switchovers = timeline() - before
    finally:
        LAB_ENV.write_text(original)
    figures.append(
        ("rolling restart (shared_buffers)", f"{seconds:.1f} s, {switchovers} switchover(s), "
         f"write gap {gap:.1f} s")
    )  # fmt: skip
    writer.stop.set()
    thread.join(timeout=30)
    present = subprocess.run(
        ["psql", dsn, "-XAtqc", "select id from bench_probe"], capture_output=True, text=True
    ).stdout.split()
    lost = len(set(writer.committed) - {int(x) for x in present})
    figures.append(("committed rows lost (all of the above)", f"{lost} of {len(writer.committed)}"))
    plinth("up", "lab", "--yes")  # back to the model's parameters (rolled again)

    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures.append(("controller peak memory (largest process)", f"{peak_mb:.0f} MiB"))
    if not args.keep:
        plinth("lab", "down")
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
