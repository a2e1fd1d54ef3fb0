"""Preview and apply a stack by running pyinfra on its inventory.

plinth drives the same entry point an operator can run by hand
(``pyinfra inventory/<stack>.py deploy.py``), so the CLI adds summaries and
safety, never a second deploy path:

* preview = ``--dry --json``: pyinfra's prepare phase reads live facts and
  records which operations would run commands on which hosts; the JSON plan
  lists them, and our operations log their reasons (``explain``).
* apply = ``-y --fail-percent 0``: any failed host stops the run.

Before either, every host's SSH port is probed, so an unreachable host is a
clear one-line error and nothing is applied anywhere.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plinth import progress
from plinth.reasons import MARKER
from plinth.stacks import Stack, project_root

REASON_PATTERN = re.compile(rf"^\s*\[(?P<host>[^\]]+)\] (?P<kind>noop|{MARKER}): (?P<text>.*)$")


class PlanError(Exception):
    """pyinfra failed, a host is unreachable, or its output could not be read."""


@dataclass(frozen=True)
class OperationChange:
    name: str
    conditional: bool = False
    """Decided only at apply time (``_if``): it may or may not run."""
    reasons: tuple[str, ...] = ()


@dataclass
class StackPlan:
    stack: str
    hosts: list[str]
    changes: dict[str, list[OperationChange]] = field(default_factory=dict)
    unchanged_notes: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def change_count(self) -> int:
        return sum(1 for ops in self.changes.values() for op in ops if not op.conditional)

    def as_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "hosts": {
                h: {
                    "changes": [
                        {
                            "operation": op.name,
                            "conditional": op.conditional,
                            "reasons": list(op.reasons),
                        }
                        for op in self.changes.get(h, [])
                    ],
                }
                for h in self.hosts
            },
            "change_count": self.change_count,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class ApplyResult:
    stack: str
    changed: dict[str, list[str]]
    failed_hosts: list[str]
    seconds: float


def pyinfra_command(stack: Stack, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pyinfra",
        str(stack.inventory_file.relative_to(project_root())),
        "deploy.py",
        *args,
    ]


def check_reachable(stack: Stack, timeout: float = 3.0) -> None:
    """Raise PlanError naming every host whose SSH port does not answer."""
    env = stack.environment
    port = env.ssh.port
    hosts = env.hosts_in(stack.datacenter)

    def probe(address: str) -> str | None:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return None
        except OSError as error:
            return error.strerror or str(error)

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        results = list(pool.map(lambda h: probe(h.ssh_address or str(h.address)), hosts))
    failures = [
        f"{h.name} ({h.ssh_address or h.address}:{port}): {err}"
        for h, err in zip(hosts, results, strict=True)
        if err
    ]
    if failures:
        raise PlanError(
            f"stack {stack.name}: unreachable host(s), nothing was applied: " + "; ".join(failures)
        )


def _run(
    stack: Stack, args: Sequence[str], view: progress.View | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pyinfra on ``stack``; with a ``view``, its progress events are shown while it
    runs (pyinfra's own output is kept for the plan and the failure summary)."""
    env = dict(os.environ, PLINTH_ROOT=str(project_root()))
    with tempfile.TemporaryDirectory(prefix="plinth-progress-") as scratch:
        events = Path(scratch) / "events.jsonl"
        tail: AbstractContextManager[object] = nullcontext()
        if view is not None:
            env[progress.PROGRESS_FILE_VARIABLE] = str(events)
            tail = progress.ProgressTail(events, view, progress.RunStatus(stack.name))
        with tail:
            return subprocess.run(
                pyinfra_command(stack, *args),
                cwd=project_root(),
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise ValueError("no JSON document in pyinfra's output")


def _failure_summary(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    interesting = [
        ln
        for ln in lines
        if any(k in ln for k in ("Error", "error", "Failed", "failed", "Could not", "Traceback"))
    ]
    return " | ".join((interesting or lines)[-6:])


def preview(stack: Stack, view: progress.View | None = None) -> StackPlan:
    check_reachable(stack)
    started = time.monotonic()
    proc = _run(stack, ["--dry", "--json", "-v", "--fail-percent", "0"], view)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise PlanError(f"stack {stack.name}: preview failed: {_failure_summary(proc)}")
    try:
        data = _last_json(proc.stdout)
    except ValueError as error:
        raise PlanError(f"stack {stack.name}: cannot read pyinfra's plan: {error}") from None

    reasons: dict[tuple[str, str], list[str]] = {}
    notes: dict[str, list[str]] = {}
    for line in proc.stderr.splitlines():
        match = REASON_PATTERN.match(line)
        if not match:
            continue
        host, kind, text = match["host"], match["kind"], match["text"]
        if kind == MARKER and ": " in text:
            op_name, reason = text.split(": ", 1)
            reasons.setdefault((host, op_name), []).append(reason)
        else:
            notes.setdefault(host, []).append(text)

    hosts = [h.name for h in stack.environment.hosts_in(stack.datacenter)]
    plan = StackPlan(stack=stack.name, hosts=hosts, unchanged_notes=notes, seconds=elapsed)
    for op in data.get("plan", []):
        name = op.get("name") or ", ".join(op.get("names", []))
        for host in op.get("hosts_with_change", []):
            plan.changes.setdefault(host, []).append(
                OperationChange(name, False, tuple(reasons.get((host, name), ())))
            )
        for host in op.get("hosts_with_conditional_change", []):
            plan.changes.setdefault(host, []).append(OperationChange(name, True))
    return plan


def apply(
    stack: Stack, data: dict[str, str] | None = None, view: progress.View | None = None
) -> ApplyResult:
    """Apply ``stack``; ``data`` becomes pyinfra ``--data key=value`` (one-off switches
    such as a requested rotation, never secrets); ``view`` shows progress as it goes."""
    check_reachable(stack)
    started = time.monotonic()
    extra = [arg for key, value in (data or {}).items() for arg in ("--data", f"{key}={value}")]
    proc = _run(stack, ["-y", "--json", "--fail-percent", "0", *extra], view)
    elapsed = time.monotonic() - started
    try:
        data = _last_json(proc.stdout)
    except ValueError:
        data = {}
    raw_results = data.get("results")
    results: dict[str, Any] = raw_results if isinstance(raw_results, dict) else {}
    failed = list(results.get("failed_hosts") or [])
    if proc.returncode != 0 or failed:
        raise PlanError(
            f"stack {stack.name}: apply failed"
            + (f" on {', '.join(failed)}" if failed else "")
            + f": {_failure_summary(proc)}"
        )
    changed: dict[str, list[str]] = {}
    for op in results.get("operations") or []:
        for host in op.get("success", []):
            changed.setdefault(host, []).append(op.get("name", "?"))
    return ApplyResult(stack=stack.name, changed=changed, failed_hosts=failed, seconds=elapsed)


def children_peak_rss_mb() -> float:
    """Peak resident memory of any finished child (the pyinfra run), in MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
