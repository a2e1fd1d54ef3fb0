"""Wall times of the lab: cold image build (--cold), warm `lab up` small and full, `lab down`.

Usage: python bench/lab_up.py [--cold]

``--cold`` removes the base image first (only when no lab container uses it). Ends with the
lab down and asserts that nothing labelled ``plinth.lab=1`` is left.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from plinth.lab import LABEL
from plinth.lab.containers import lab_down, lab_up
from plinth.lab.engine import ensure_engine
from plinth.lab.image import ensure_base_image, image_tag

T = TypeVar("T")


def timed(label: str, func: Callable[[], T], results: dict[str, float]) -> T:
    started = time.monotonic()
    value = func()
    results[label] = time.monotonic() - started
    print(f"bench: {label}: {results[label]:.1f}s", flush=True)
    return value


def leftovers() -> list[str]:
    client = ensure_engine(start=False)
    found = [c.name for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"})]
    found += [n.name for n in client.networks.list(filters={"label": f"{LABEL}=1"})]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="rebuild the base image first")
    args = parser.parse_args()
    results: dict[str, float] = {}
    client = ensure_engine()
    if args.cold:
        lab_down()  # a running lab would hold the image
        tag = image_tag()
        if client.images.list(name=tag):
            client.images.remove(tag)
        timed("cold image build", lambda: ensure_base_image(client), results)
    timed("warm lab up small", lambda: lab_up("small"), results)
    timed("warm lab up full (replaces small)", lambda: lab_up("full"), results)
    timed("lab down", lab_down, results)
    left = leftovers()
    print("bench: results")
    for label, secs in results.items():
        print(f"  {label:<36} {secs:7.1f}s")
    print(f"  left after down: {', '.join(left) if left else 'nothing'}")
    assert not left, f"lab down left {left}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
