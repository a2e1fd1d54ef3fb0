"""The sample DAG end to end on a deployed `small` lab, through the API as a user runs it.

    flock /tmp/plinth-lab.lock python bench/airflow_dag.py [ROUNDS]

Needs `scripts/lab-deploy` first (it does not bring the lab up or down). Each round
triggers `feeder_load_hourly` through nginx on the edge VIP (platform client
certificate, then Airflow's JWT) and waits for the run to finish. Prints one line per
round: trigger-to-success seconds, the first task's queue delay (trigger to the first
task starting: the scheduler and Celery's share) and each task's duration and worker.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plinth.airflow_api import AirflowApi, api_base  # noqa: E402
from plinth.model import load_environment  # noqa: E402

DAG_ID = "feeder_load_hourly"
CN = "airflow-bench"
RUN_WAIT_SECONDS = 600


def plinth(*args: str) -> str:
    proc = subprocess.run(["plinth", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"plinth {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    env = load_environment(REPO / "inventory" / "lab.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp)
        plinth("pki", "client-cert", "lab", "--cn", CN, "--out", tmp)
        client = AirflowApi(
            base=api_base(env, "dc1"),
            ca=bundle / "ca.crt",
            cert=bundle / f"{CN}.crt",
            key=bundle / f"{CN}.key",
        )
        client.login(plinth("secrets", "get", "lab", "airflow-admin-password").strip())
        client.open_dag(DAG_ID, 120)
        totals = []
        for round_ in range(1, rounds + 1):
            started = time.monotonic()
            run_id = client.trigger(DAG_ID)
            state = client.wait_run(DAG_ID, run_id, RUN_WAIT_SECONDS)
            total = time.monotonic() - started
            totals.append(total)
            _, run = client.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
            tasks = sorted(
                client.task_instances(DAG_ID, run_id), key=lambda t: t.get("start_date") or ""
            )
            queued = seconds_between(run.get("queued_at"), tasks[0].get("start_date"))
            detail = ", ".join(
                f"{t['task_id']} {t.get('duration') or 0:.1f} s on {t.get('hostname')}"
                for t in tasks
            )
            print(
                f"round {round_}: {state} in {total:.1f} s (trigger to success); first task "
                f"started {queued if queued is not None else float('nan'):.1f} s after "
                f"queueing; {detail}",
                flush=True,
            )
        print(
            f"sample DAG end to end: median {statistics.median(totals):.1f} s, "
            f"min {min(totals):.1f} s, max {max(totals):.1f} s over {rounds} run(s)"
        )


if __name__ == "__main__":
    main()
