"""The lab for integration tests: real systemd containers reached over SSH.

One `small` lab serves the whole session (bringing it up costs a minute); it is
taken down at the end and the machine must be left as it was found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra

from plinth.model import Environment, load_environment

REPO = Path(__file__).resolve().parents[2]
LAB_ENV = REPO / "inventory" / "lab.yaml"
SSH_DIR = REPO / ".lab" / "ssh"
BASELINE_SNAPSHOT = "tests-small"
"""The snapshot of the deployed small lab (with PLINTH_LAB_RESTORE=1)."""
RESTORE_HEALTHY_WITHIN = 300
ADOPT_HEALTHY_WITHIN = 120
DRIFT_FILE = "/etc/systemd/journald.conf.d/60-plinth.conf"
"""A managed file tests move aside as drift a run would repair (and move back: DRIFT_ASIDE)."""
DRIFT_ASIDE = "/root/60-plinth.conf.aside"


def plinth(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: int = 1500
) -> subprocess.CompletedProcess[str]:
    """Run the plinth CLI as an operator would; output is kept for assertions."""
    proc = subprocess.run(
        ["plinth", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"plinth {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


PHASES: dict[str, float] = {}
"""Wall seconds of the lab's phases in this session (printed at the end, for bench/lab.py
and the CI log): first deploy, snapshot, restores..."""
MODULE_SECONDS: dict[str, float] = {}


@contextmanager
def lab_phase(name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        PHASES[name] = PHASES.get(name, 0.0) + time.monotonic() - started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the call phase's report on the item: ``disposable_lab`` adopts a rolled model
    only after a passing test."""
    report = yield
    if report.when == "call":
        item.call_report = report  # type: ignore[attr-defined]
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Wall seconds per lab test module (setup, call and teardown of its tests); and a
    lab test's failure printed the moment it happens, so a CI log cut short by the job's
    time limit still says what failed and why (pytest prints them only at the end)."""
    path = report.nodeid.split("::")[0]
    if not path.startswith("tests/lab/"):
        return
    MODULE_SECONDS[path] = MODULE_SECONDS.get(path, 0.0) + report.duration
    if report.failed:
        text = report.longreprtext
        sys.stderr.write(
            f"\n---- {report.when} of {report.nodeid} failed after {report.duration:.1f} s "
            f"(last 6000 characters) ----\n{text[-6000:]}\n---- end ----\n"
        )
        sys.stderr.flush()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PHASES and not MODULE_SECONDS:
        return
    terminalreporter.section("lab phases (wall seconds)")
    for name, seconds in PHASES.items():
        terminalreporter.write_line(f"lab phase: {name}: {seconds:.1f}s")
    for path, seconds in sorted(MODULE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"lab module: {path}: {seconds:.1f}s")


DEPLOY = ("up", "lab", "--yes", "--skip-preview")
"""How the tests deploy the lab model: the preview's own pass over the hosts costs about a
minute per deploy and decides nothing (every gate is decided while applying). Tests of
what the preview shows, and the second-run checks, call `preview` / `up` themselves."""


def lab_secret(name: str) -> str:
    """A secret of the lab environment, as an operator reads it (``plinth secrets get``)."""
    return plinth("secrets", "get", "lab", name).stdout.strip()


@dataclass
class Lab:
    environment: Environment

    def ssh_config(self, tmp: Path) -> Path:
        config = tmp / "ssh_config"
        config.write_text(
            "Host *\n"
            "  User root\n"
            f"  IdentityFile {SSH_DIR / 'id_ed25519'}\n"
            f"  UserKnownHostsFile {SSH_DIR / 'known_hosts'}\n"
            "  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 5\n"
        )
        return config

    def host(self, name: str, tmp: Path) -> Any:
        address = next(str(h.address) for h in self.environment.hosts if h.name == name)
        return testinfra.get_host(f"ssh://root@{address}", ssh_config=str(self.ssh_config(tmp)))

    def wait_for_ssh(self, name: str, tmp: Path, seconds: float = 90) -> None:
        """Block until ``name`` accepts SSH logins again (after a container restart)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                result = self.host(name, tmp).run("systemctl is-system-running --wait")
                if result.rc in (0, 1):  # running or degraded
                    return
            except RuntimeError:  # testinfra: ssh itself failed (exit 255), not up yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} did not accept SSH within {seconds} s")
            time.sleep(2)


def leftovers() -> list[str]:
    found = []
    for kind, cmd in (
        ("container", ["docker", "ps", "-aq", "--filter", "label=plinth.lab=1"]),
        ("network", ["docker", "network", "ls", "-q", "--filter", "label=plinth.lab=1"]),
    ):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.split()
        found += [f"{kind} {x}" for x in out]
    return found


def wait_status_healthy(seconds: int = RESTORE_HEALTHY_WITHIN) -> float:
    """Block until `plinth status lab` says healthy (its own --wait); seconds waited."""
    started = time.monotonic()
    result = plinth("status", "lab", "--wait", str(seconds), check=False, timeout=seconds + 300)
    if result.returncode != 0:
        raise AssertionError(
            f"lab not healthy within {seconds} s:\n{result.stdout}\n{result.stderr[-4000:]}"
        )
    return time.monotonic() - started


def full_lab_enabled() -> bool:
    return os.environ.get("PLINTH_FULL_LAB") == "1"


def reuse_lab() -> bool:
    """PLINTH_LAB_REUSE=1: test against the small lab already up (a developer iterating on
    one module after `scripts/lab-deploy`), and leave it up. CI never sets it."""
    return os.environ.get("PLINTH_LAB_REUSE") == "1"


@pytest.fixture(scope="session")
def small_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if reuse_lab():
        if not LAB_ENV.exists():
            pytest.exit(f"PLINTH_LAB_REUSE=1 but there is no lab ({LAB_ENV} missing)", 2)
        yield Lab(load_environment(LAB_ENV))
        return
    with lab_phase("small: lab up"):
        plinth("lab", "up", "--profile", "small")
    yield Lab(load_environment(LAB_ENV))
    plinth("lab", "down")
    remaining = leftovers()
    assert remaining == [], f"lab down left {remaining}"


def restores_enabled() -> bool:
    """PLINTH_LAB_RESTORE=1: a changed lab is given back by restoring the snapshot taken
    after the first deploy, instead of by a repair deploy. Not the default yet: one of
    about ten cold starts of the whole small lab (every host booting at once) stayed
    unhealthy for the 300 s the restore waits, and CI must not rest on that (the
    lab-snapshot issue's note)."""
    return os.environ.get("PLINTH_LAB_RESTORE") == "1"


@dataclass
class Baseline:
    """The deployed small lab: a test that changed it marks it changed, and the next test
    that needs the lab gets it back first: a repair deploy of the model as it was (or,
    with PLINTH_LAB_RESTORE=1, a restore of snapshot tests-small)."""

    lab: Lab
    model: str
    """inventory/lab.yaml as the first deploy applied it."""
    changed: bool = False
    repairs: int = 0
    adopted: int = 0

    def undone(self) -> None:
        """The test that changed the lab put it back itself (see ``undoable_lab``)."""
        self.changed = False

    def adopt(self) -> None:
        """The lab is converged to the model now in inventory/lab.yaml (a passing rolling
        test applied it): that model is the baseline from here on, once the lab is healthy;
        a lab that does not become healthy stays changed (the next test repairs it)."""
        try:
            with lab_phase("small: adopting a rolled model (to healthy)"):
                wait_status_healthy(ADOPT_HEALTHY_WITHIN)
        except AssertionError as error:
            print(f"\nrolled model not adopted, the lab is repaired instead: {error}")
            return
        self.model = LAB_ENV.read_text()
        self.lab.environment = load_environment(LAB_ENV)
        self.changed = False
        self.adopted += 1

    def pristine(self) -> Lab:
        if not self.changed:
            return self.lab
        if restores_enabled():
            with lab_phase("small: restores (to healthy)"):
                # --force: this session took the snapshot itself; a commit made while it
                # runs (a developer's) must not stop its restores.
                plinth(
                    "lab", "restore", BASELINE_SNAPSHOT, "--force",
                    "--healthy-within", str(RESTORE_HEALTHY_WITHIN),
                )  # fmt: skip
        else:
            with lab_phase("small: repair deploys"):
                LAB_ENV.write_text(self.model)
                plinth(*DEPLOY, timeout=1500)
        self.changed = False
        self.repairs += 1
        return self.lab


@pytest.fixture(scope="session")
def small_baseline(small_lab: Lab) -> Iterator[Baseline]:
    """The small lab after one `plinth up lab --yes` (kept as snapshot tests-small when
    restores are enabled)."""
    with lab_phase("small: first deploy"):
        result = plinth(*DEPLOY)
    assert "stack lab-dc1: applied" in result.stdout, result.stdout
    if restores_enabled():
        with lab_phase("small: snapshot (to healthy)"):
            plinth("lab", "snapshot", BASELINE_SNAPSHOT)
            # The snapshot brings the lab back from its own images, as every restore does.
            wait_status_healthy()
    deployed = LAB_ENV.read_text()
    baseline = Baseline(small_lab, deployed)
    yield baseline
    print(
        f"\nsmall lab given back {baseline.repairs} time(s) after a changing test; "
        f"{baseline.adopted} rolled model(s) adopted as the baseline"
    )
    if reuse_lab():
        # the developer's lab is left as deployed: a rolled model adopted on the way is
        # rolled back here (CI never gets here)
        if baseline.model != deployed:
            baseline.model, baseline.changed = deployed, True
        baseline.pristine()
    elif restores_enabled():
        plinth("lab", "snapshots", "--remove", BASELINE_SNAPSHOT)


@pytest.fixture(scope="session")
def deployed_small_lab(small_baseline: Baseline) -> Lab:
    """The deployed small lab (as the first deploy left it, see ``_baseline_first``)."""
    return small_baseline.lab


@pytest.fixture(autouse=True)
def _baseline_first(request: pytest.FixtureRequest) -> None:
    """A test on the deployed small lab starts from the baseline: given back first when an
    earlier test changed it."""
    if "deployed_small_lab" in request.fixturenames:
        request.getfixturevalue("small_baseline").pristine()


@pytest.fixture
def undoable_lab(small_baseline: Baseline) -> Baseline:
    """For a test that undoes its own change cheaply (a unit started again, a file moved
    back): until it calls ``undone()`` the lab counts as changed, so a test that fails
    midway leaves the next one a lab given back, not a broken one."""
    small_baseline.pristine()
    small_baseline.changed = True
    return small_baseline


@pytest.fixture
def lab_model() -> Iterator[Path]:
    """inventory/lab.yaml for a test that edits the model but whose run is refused (nothing
    applied): the file is put back afterwards, which is all the undo it needs."""
    original = LAB_ENV.read_text()
    yield LAB_ENV
    LAB_ENV.write_text(original)


@pytest.fixture
def disposable_lab(small_baseline: Baseline, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """For a test that changes the model and rolls it (a setting changed, applied host by
    host). When it passed, the lab is converged to the changed model (its own assertions
    say so) and, once `plinth status` is healthy, that model becomes the baseline
    (``Baseline.adopt``): rolling the setting back would prove nothing new and costs a
    whole second roll (275 s for Airflow's). When it failed, the next test that needs the
    lab gets the baseline back by a repair deploy."""
    yield small_baseline.pristine()
    small_baseline.changed = True
    report = getattr(request.node, "call_report", None)
    if report is not None and report.passed:
        small_baseline.adopt()


LAB_TESTS = Path(__file__).resolve().parent


def pytest_itemcollected(item: pytest.Item) -> None:
    """Everything under tests/lab needs the lab: marked here too, so a test that forgets
    its mark is still deselected by ``-m "not lab"`` (which must run without Docker)."""
    if item.path.is_relative_to(LAB_TESTS):
        item.add_marker(pytest.mark.lab)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The full rehearsal replaces the small lab: run it after every small-lab test.

    PLINTH_LAB_ORDER=reverse runs the tests in the reverse of their file order (modules
    and the tests in them): no test may rely on what an earlier one left.
    """
    if os.environ.get("PLINTH_LAB_ORDER") == "reverse":
        items.reverse()
    items.sort(key=lambda item: item.get_closest_marker("full") is not None)
