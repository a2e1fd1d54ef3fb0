"""Edge benchmark on a deployed lab: edge VIP failover under a registry client, squid's
cache across hosts, and a no-op `up`.

    flock /tmp/plinth-lab.lock python bench/edge.py      # after `plinth up lab --yes`

Prints one line per figure. The lab must be deployed (small or full profile); it is
left as found (keepalived restarted on the node that was stopped).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plinth.model import Role, load_environment  # noqa: E402

SSH = [
    "ssh", "-i", str(REPO / ".lab/ssh/id_ed25519"),
    "-o", f"UserKnownHostsFile={REPO / '.lab/ssh/known_hosts'}",
    "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
]  # fmt: skip


def ssh(address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SSH, f"root@{address}", command], capture_output=True, text=True, check=False
    )


def main() -> None:
    env = load_environment(REPO / "inventory" / "lab.yaml")
    dc = env.datacenters[0].name
    vip = next(v for v in env.vips_in(dc) if "registry" in v.services)
    holders = env.hosts_with(Role.KEEPALIVED, dc)
    port = next(v.port for v in env.components.nginx.virtual_hosts if v.name == "registry")
    figures: list[tuple[str, str]] = []

    def holder() -> str | None:
        for h in holders:
            if f" {vip.address}/" in ssh(str(h.address), "ip -4 -o addr show").stdout:
                return str(h.address)
        return None

    # squid: the same package through the edge VIP from two hosts; the second is a HIT
    proxy = f"http://{vip.address}:{env.components.squid.port}"
    clients = env.hosts_with(Role.SQUID, dc)[-2:]
    for client in clients:
        ssh(str(client.address), f"apt-get clean && DEBIAN_FRONTEND=noninteractive apt-get "
            f"install -y -q --reinstall -o Acquire::http::Proxy={proxy} hello")  # fmt: skip
    current = holder()
    log = ssh(current, "grep '/hello_' /var/log/squid/access.log").stdout if current else ""
    results = re.findall(r"(TCP_\w+)/200", log)
    figures.append(("squid: hello_*.deb via the edge VIP, 2 hosts", " then ".join(results[-2:])))

    # edge VIP failover under a client polling the registry every 0.2 s
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["plinth", "pki", "client-cert", "lab", "--cn", "bench-reader",
                        "--out", tmp], cwd=REPO, check=True, capture_output=True)  # fmt: skip
        url = f"https://{vip.address}:{port}/v2/"
        curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                "--cacert", f"{tmp}/ca.crt", "--cert", f"{tmp}/bench-reader.crt",
                "--key", f"{tmp}/bench-reader.key", url]  # fmt: skip
        ok: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                if subprocess.run(curl, capture_output=True, text=True).stdout == "200":
                    ok.append(time.monotonic())
                time.sleep(0.2)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        time.sleep(2)
        old = holder()
        if old is None:
            sys.exit("nobody holds the edge VIP")
        ssh(old, "systemctl stop keepalived")
        started = time.monotonic()
        new = None
        while time.monotonic() - started < 30:
            new = holder()
            if new not in (None, old):
                break
            time.sleep(0.1)
        moved = time.monotonic() - started
        time.sleep(5)
        stop.set()
        thread.join()
        ssh(old, "systemctl start keepalived")
        times = [started] + [t for t in ok if t >= started]
        gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        figures.append(("edge VIP moved after keepalived stop", f"{moved:.1f} s ({old} -> {new})"))
        figures.append(("longest registry gap through the VIP", f"{gap:.1f} s"))

    # a no-op up of the whole stack (the edge has no separate entry point)
    started = time.monotonic()
    proc = subprocess.run(["plinth", "up", "lab", "--yes"], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    changed = "nothing to do" in proc.stdout
    figures.append(
        ("no-op `plinth up lab` (whole stack)",
         f"{time.monotonic() - started:.1f} s, {'no changes' if changed else 'CHANGED'}")
    )  # fmt: skip

    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
