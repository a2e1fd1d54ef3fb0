"""Airflow's offline install on one lab host, phase by phase, as `venv_from_wheelhouse` runs it.

    flock /tmp/plinth-lab.lock python bench/airflow_install.py [HOST] [ROUNDS]

Needs a deployed lab (`scripts/lab-deploy`): the wheelhouse tarball must already be on
the host. Each round unpacks it, creates a venv and runs the same `pip install
--no-index` into a scratch directory beside the real one (the venv in use is not
touched), then removes the scratch. Prints the seconds of each phase and the venv's size.
The controller-side wheelhouse build is timed by `plinth wheelhouse` itself.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from operations.airflow import PREFIX, AirflowInstall  # noqa: E402
from plinth.lab import ssh_dir  # noqa: E402
from plinth.model import AIRFLOW_ROLES, load_environment  # noqa: E402
from plinth.wheelhouse import LOCK_NAME, airflow_wheelhouse  # noqa: E402

SCRATCH = f"{PREFIX}/bench-install"


def install_script(spec: AirflowInstall) -> str:
    """The install of `venv_from_wheelhouse`, with a timestamp after each phase."""
    q = shlex.quote
    staging, venv = f"{SCRATCH}/unpacked", f"{SCRATCH}/venv"
    return (
        f"set -e; rm -rf {SCRATCH}; mkdir -p {staging}; t0=$(date +%s.%N); "
        f"tar -xf {q(spec.remote_tarball)} -C {staging}; t1=$(date +%s.%N); "
        f"python3 -m venv {venv}; t2=$(date +%s.%N); "
        f"{venv}/bin/pip install --quiet --no-index --no-cache-dir "
        f"--disable-pip-version-check --find-links {staging} "
        f"--constraint {staging}/{LOCK_NAME} {q(spec.wheelhouse.requirement)}; "
        "t3=$(date +%s.%N); "
        f"size=$(du -sm {venv} | cut -f1); rm -rf {SCRATCH}; "
        'echo "$t0 $t1 $t2 $t3 $size"'
    )


def main() -> None:
    env = load_environment(REPO / "inventory" / "lab.yaml")
    hosts = [h for h in env.hosts if any(r in h.roles for r in AIRFLOW_ROLES)]
    if not hosts:
        sys.exit("inventory/lab.yaml: no host carries an Airflow role")
    wanted = sys.argv[1] if len(sys.argv) > 1 else hosts[0].name
    host = next((h for h in hosts if h.name == wanted), None)
    if host is None:
        sys.exit(f"inventory/lab.yaml: {wanted} carries no Airflow role")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    spec = AirflowInstall(airflow_wheelhouse(env))
    ssh = [
        "ssh", "-i", str(ssh_dir() / "id_ed25519"),
        "-o", f"UserKnownHostsFile={ssh_dir() / 'known_hosts'}", "-o", "BatchMode=yes",
        f"root@{host.address}",
    ]  # fmt: skip
    print(f"{spec.wheelhouse.requirement} on {host.name} ({spec.wheelhouse.tarball.name})")
    totals = []
    for number in range(1, rounds + 1):
        proc = subprocess.run([*ssh, install_script(spec)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{host.name}: the install failed:\n{proc.stderr[-2000:]}")
        t0, t1, t2, t3, size = (float(x) for x in proc.stdout.split()[-5:])
        totals.append(t3 - t0)
        print(
            f"round {number}: unpack {t1 - t0:.1f} s, venv {t2 - t1:.1f} s, "
            f"pip install {t3 - t2:.1f} s, total {t3 - t0:.1f} s; venv {size:.0f} MiB"
        )
    print(f"median total {statistics.median(totals):.1f} s over {rounds} rounds")


if __name__ == "__main__":
    main()
