"""RabbitMQ benchmark on the small lab: node loss to a quorum queue accepting again, and the
time of a no-op `plinth up`.

    flock /tmp/plinth-lab.lock python bench/rabbitmq.py [--fresh] [--rounds 3]

Expects a deployed small lab (``--fresh``: bring one up and deploy it first). For each
round, a publisher with confirms runs against a quorum queue while the container of the
queue's leader is stopped (``docker stop``); the figure is the longest gap between two
confirmed publishes around the stop (target <= 5 s). The container is started again and
the cluster awaited before the next round. Then `plinth up lab --yes` is timed on the
unchanged lab (every component: the no-op run of the whole stack).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plinth.model import load_environment  # noqa: E402
from tests.lab.conftest import LAB_ENV, Lab, plinth  # noqa: E402
from tests.lab.test_rabbitmq_cluster import (  # noqa: E402
    PROBE_USER,
    Publisher,
    declare,
    mq_hosts,
    queue_leader,
    wait_all_running,
)


def node_loss_round(lab: Lab, bundle: Path, tmp: Path) -> tuple[str, float]:
    queue = "bench-node-loss"
    declare(lab, bundle, queue)
    victim = queue_leader(lab, tmp, queue) or mq_hosts(lab)[0][0]
    publisher = Publisher(lab, bundle, queue)
    thread = threading.Thread(target=publisher.run, daemon=True)
    thread.start()
    try:
        time.sleep(3)
        stopped_at = time.monotonic()
        subprocess.run(["docker", "stop", f"plinth-lab-{victim}"], check=True, timeout=120)
        time.sleep(8)
        gap = publisher.longest_gap(stopped_at)
    finally:
        publisher.stop.set()
        thread.join(timeout=30)
        subprocess.run(["docker", "start", f"plinth-lab-{victim}"], check=True, timeout=120)
        lab.wait_for_ssh(victim, tmp)
        wait_all_running(lab, tmp)
    return victim, gap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true", help="lab up + first up before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.fresh:
        plinth("lab", "up", "--profile", "small")
        started = time.monotonic()
        plinth("up", "lab", "--yes")
        print(f"first up (whole stack): {time.monotonic() - started:.1f} s")
    lab = Lab(load_environment(LAB_ENV))
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bundle = tmp / "bundle"
        plinth("pki", "client-cert", "lab", "--cn", PROBE_USER, "--out", str(bundle))
        gaps = []
        for i in range(args.rounds):
            victim, gap = node_loss_round(lab, bundle, tmp)
            gaps.append(gap)
            print(
                f"node loss round {i + 1} ({victim}, queue leader): accepting again in {gap:.2f} s"
            )
        print(
            f"node loss to accepting: median {statistics.median(gaps):.2f} s, "
            f"max {max(gaps):.2f} s (target <= 5 s)"
        )
    started = time.monotonic()
    result = plinth("up", "lab", "--yes")
    print(f"no-op `plinth up lab --yes` (whole stack): {time.monotonic() - started:.1f} s")
    summary = next((line for line in result.stdout.splitlines() if "applied" in line), "")
    print(f"  {summary.strip()}")


if __name__ == "__main__":
    main()
