"""The second run of the whole small stack, in one place: nothing changes, nothing leaks.

One module fixture runs each kind of second run once, on the deployed lab with one host
restarted by hand first (the engine used to rewrite its /etc/hosts: not drift any more);
every check an operator makes of a second run reads these outputs:

- `plinth up lab --yes` (the CLI, with the outputs it prints),
- `plinth preview lab --json --expect-no-changes` (the drift check CI pipelines use),
- `pyinfra inventory/lab-dc1.py deploy.py --dry --json -vv` (plain pyinfra, verbose).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.lab.conftest import REPO, Baseline, Lab, lab_secret, plinth, wait_status_healthy
from tests.lab.test_pki import STATE, issuance_lines

pytestmark = pytest.mark.lab

RESTARTED_HOST = "dc1-n2"


@dataclass(frozen=True)
class SecondRun:
    up: subprocess.CompletedProcess[str]
    preview: subprocess.CompletedProcess[str]
    plain: subprocess.CompletedProcess[str]
    issued_before: list[dict[str, str]]
    issued_after: list[dict[str, str]]
    healthy_after_restart: float


@pytest.fixture(scope="module")
def second_run(deployed_small_lab: Lab, small_baseline: Baseline) -> SecondRun:
    small_baseline.pristine()
    # A container restarted by hand, as an operator (or a host reboot) would.
    subprocess.run(["docker", "restart", f"plinth-lab-{RESTARTED_HOST}"], check=True)
    small_baseline.changed = True  # until the runs below show otherwise
    healthy = wait_status_healthy()
    issued_before = issuance_lines()
    started = time.monotonic()
    up = plinth("up", "lab", "--yes", check=False)
    preview = plinth("preview", "lab", "--json", "--expect-no-changes", check=False)
    plain = subprocess.run(
        ["pyinfra", "inventory/lab-dc1.py", "deploy.py", "--dry", "--json", "-vv"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    print(
        f"\n{RESTARTED_HOST} restarted by hand: healthy after {healthy:.1f} s; up + preview + "
        f"plain pyinfra dry run: {time.monotonic() - started:.1f} s"
    )
    small_baseline.changed = up.returncode != 0 or "nothing to do" not in up.stdout
    return SecondRun(up, preview, plain, issued_before, issuance_lines(), healthy)


def test_the_second_up_changes_nothing(second_run: SecondRun) -> None:
    up = second_run.up
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    assert "stack lab-dc1: nothing to do" in up.stdout, up.stdout[-3000:]


def test_the_preview_finds_no_drift_after_a_restart_by_hand(
    second_run: SecondRun,
) -> None:
    preview = second_run.preview
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-2000:]
    plan = json.loads(preview.stdout)
    assert [s["change_count"] for s in plan["stacks"]] == [0]


def test_plain_pyinfra_sees_nothing_to_do(second_run: SecondRun) -> None:
    """`pyinfra inventory/lab-dc1.py deploy.py` works without the CLI, and is a no-op."""
    assert second_run.plain.returncode == 0, second_run.plain.stderr[-3000:]
    plan = json.loads(second_run.plain.stdout.strip().splitlines()[-1])
    changing = [op["name"] for op in plan["plan"] if op["hosts_with_change"]]
    assert changing == []


def test_the_second_up_reissues_no_certificate(second_run: SecondRun) -> None:
    assert second_run.issued_after == second_run.issued_before


def test_no_secret_reaches_any_output_or_the_stores(second_run: SecondRun) -> None:
    names = plinth("secrets", "list", "lab").stdout.split()
    assert {
        "airflow-fernet-key",
        "postgresql-replication-password",
        "postgresql-superuser-password",
        "rabbitmq-erlang-cookie",
        "redis-default-password",
    } <= set(names)
    values = {name: lab_secret(name) for name in names}
    assert all(len(v) >= 32 for v in values.values())
    outputs = {
        "plinth up stdout": second_run.up.stdout,
        "plinth up stderr": second_run.up.stderr,
        "plinth preview --json": second_run.preview.stdout,
        "pyinfra --dry --json -vv stdout": second_run.plain.stdout,
        "pyinfra --dry --json -vv stderr": second_run.plain.stderr,
        "secrets.json": (STATE / "secrets.json").read_text(),
        **{str(p): p.read_text() for p in (STATE / "pki").rglob("*.jsonl")},
    }
    leaks = [(n, where) for n, v in values.items() for where, text in outputs.items() if v in text]
    assert leaks == []
    wrong = plinth(
        "secrets", "list", "lab", env={"PLINTH_PASSPHRASE": "not-the-lab-one"}, check=False
    )
    assert wrong.returncode == 1 and "secrets.json" in wrong.stderr
