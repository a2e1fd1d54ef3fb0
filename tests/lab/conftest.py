"""The lab for integration tests: real systemd containers reached over SSH.

One `small` lab serves the whole session (bringing it up costs a minute); it is
taken down at the end and the machine must be left as it was found.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra

from plinth.model import Environment, load_environment

REPO = Path(__file__).resolve().parents[2]
LAB_ENV = REPO / "inventory" / "lab.yaml"
SSH_DIR = REPO / ".lab" / "ssh"


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
    plinth("lab", "up", "--profile", "small")
    yield Lab(load_environment(LAB_ENV))
    plinth("lab", "down")
    remaining = leftovers()
    assert remaining == [], f"lab down left {remaining}"


@pytest.fixture(scope="session")
def deployed_small_lab(small_lab: Lab) -> Lab:
    """The small lab after one `plinth up lab --yes`."""
    result = plinth("up", "lab", "--yes")
    # a reused lab is deployed already: its run is a no-op ("nothing to do")
    done = (
        ("stack lab-dc1: applied", "stack lab-dc1: nothing to do")
        if reuse_lab()
        else ("stack lab-dc1: applied",)
    )
    assert any(line in result.stdout for line in done), result.stdout
    return small_lab


LAB_TESTS = Path(__file__).resolve().parent


def pytest_itemcollected(item: pytest.Item) -> None:
    """Everything under tests/lab needs the lab: marked here too, so a test that forgets
    its mark is still deselected by ``-m "not lab"`` (which must run without Docker)."""
    if item.path.is_relative_to(LAB_TESTS):
        item.add_marker(pytest.mark.lab)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The full rehearsal replaces the small lab: run it after every small-lab test."""
    items.sort(key=lambda item: item.get_closest_marker("full") is not None)
