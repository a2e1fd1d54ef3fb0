"""Foundation benchmark: lab up (warm image), first `up`, no-op preview, controller memory.

    python bench/foundation.py [--profile small|full] [--keep]

Prints one line per figure. The lab is brought up from nothing (leftovers are
cleaned), deployed once, then previewed three times; it is taken down at the
end unless --keep. Run it on an otherwise idle machine and compare figures
from the same run: the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(*args: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run(["plinth", *args], cwd=REPO, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"plinth {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=["small", "full"], default="small")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()

    figures: list[tuple[str, str]] = []
    seconds, _ = timed("lab", "up", "--profile", args.profile)
    figures.append((f"lab up ({args.profile}, warm image)", f"{seconds:.1f} s"))
    seconds, _ = timed("up", "lab", "--yes")
    figures.append(("first up (base deploy)", f"{seconds:.1f} s"))
    noop = []
    for _ in range(3):
        seconds, out = timed("preview", "lab", "--json")
        changes = sum(s["change_count"] for s in json.loads(out)["stacks"])
        if changes:
            sys.exit(f"preview after up still has {changes} change(s): not idempotent")
        noop.append(seconds)
    figures.append(
        ("no-op preview (3 runs)", f"median {statistics.median(noop):.1f} s, min {min(noop):.1f} s")
    )
    seconds, _ = timed("up", "lab", "--yes")
    figures.append(("second up (nothing to apply)", f"{seconds:.1f} s"))
    # Every pyinfra run is a child of a plinth child: RUSAGE_CHILDREN covers them all.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    figures.append(("controller peak memory (largest process)", f"{peak_mb:.0f} MiB"))
    if not args.keep:
        seconds, _ = timed("lab", "down")
        figures.append(("lab down", f"{seconds:.1f} s"))

    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
