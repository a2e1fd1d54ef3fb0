"""Wall times of the lab's building blocks, for issue 12's targets (not a timed test).

Usage: python bench/lab.py [--profile small|full ...] [--cold] [--deploy] [--ci-log FILE]

Per profile: warm `lab up`, optionally the first deploy (`plinth up lab --yes`), `lab
snapshot`, `lab restore` (to SSH, and with --deploy until `plinth status lab` is
healthy); with ``--cold`` the base image is rebuilt first; with ``--ci-log`` the phases
of a `.ci/run` log (``.ci/run.log``: its `ci phase:` lines, the test session's `lab
phase:` and `lab module:` lines, and the lab commands' `lab: <phase>: <secs>s` lines,
summed). Replaces any lab that is up and ends with `lab down --all`.
Targets: restore <= 30 s (small), <= 90 s (full); warm `lab up` <= 60 s.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

# `python bench/lab.py` puts bench/ on sys.path: the timer is bench/lab_up.py's.
from lab_up import timed  # type: ignore[import-not-found]

from plinth.lab.containers import lab_down, lab_up
from plinth.lab.engine import ensure_engine
from plinth.lab.image import ensure_base_image, image_tag
from plinth.lab.snapshot import restore_snapshot, take_snapshot
from plinth.lab.topology import PROFILES, Profile

SNAPSHOT = "bench"
PHASE_LINE = re.compile(r"^(ci phase|lab phase|lab module|lab): (.+): ([0-9.]+)s$")


def deploy() -> None:
    subprocess.run(["plinth", "up", "lab", "--yes"], check=True)


def ci_phases(log: Path) -> dict[str, float]:
    """Seconds per phase in a `.ci/run` log, summed over the run, keyed ``kind: name``."""
    phases: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = PHASE_LINE.search(line.strip())
        if match:
            key = f"{match[1]}: {match[2]}"
            phases[key] = phases.get(key, 0.0) + float(match[3])
    return phases


def restore_to_healthy() -> None:
    subprocess.run(["plinth", "lab", "restore", SNAPSHOT], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", action="append", choices=PROFILES)
    parser.add_argument("--cold", action="store_true", help="rebuild the base image first")
    parser.add_argument("--deploy", action="store_true", help="time the first deploy too")
    parser.add_argument("--ci-log", type=Path, help="a .ci/run log to summarise")
    args = parser.parse_args()
    results: dict[str, float] = {}
    client = ensure_engine()
    if args.cold:
        lab_down(snapshots=True)  # a lab or a snapshot would hold the image
        tag = image_tag()
        if client.images.list(name=tag):
            client.images.remove(tag)
        timed("image build (cold)", lambda: ensure_base_image(client), results)
    profiles: list[Profile] = args.profile or ["small"]
    try:
        for profile in profiles:
            timed(f"{profile}: warm lab up", partial(lab_up, profile), results)
            if args.deploy:
                timed(f"{profile}: first deploy", deploy, results)
            timed(f"{profile}: snapshot", lambda: take_snapshot(SNAPSHOT), results)
            if args.deploy:
                timed(f"{profile}: restore to healthy", restore_to_healthy, results)
            else:
                timed(f"{profile}: restore to SSH", lambda: restore_snapshot(SNAPSHOT), results)
    finally:
        timed("lab down --all", lambda: lab_down(snapshots=True), results)
    if args.ci_log:
        for phase, secs in ci_phases(args.ci_log).items():
            results[phase] = secs
    print("bench: results")
    for label, secs in results.items():
        print(f"  {label:<56} {secs:7.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
