"""Bad input stops before any host is touched, with one clear line.

(The lab command that needs no Docker at all is in tests/test_cli_lab.py.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab.conftest import DRIFT_ASIDE, DRIFT_FILE, REPO, Baseline, Lab, plinth

pytestmark = pytest.mark.lab


def test_wrong_passphrase_applies_nothing(
    deployed_small_lab: Lab, undoable_lab: Baseline, tmp_path: Path
) -> None:
    host = deployed_small_lab.host(deployed_small_lab.environment.hosts[0].name, tmp_path)
    # Drift a run that went ahead would repair; moved back afterwards (the whole undo).
    host.run(f"mv {DRIFT_FILE} {DRIFT_ASIDE}")
    wrong = {"PLINTH_PASSPHRASE": "certainly-not-the-lab-passphrase"}
    result = plinth("up", "lab", "--yes", env=wrong, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "secrets.json" in result.stderr or "PLINTH_PASSPHRASE" in result.stderr
    # plain pyinfra: the passphrase is proven while preparing, before any command runs
    plain = subprocess.run(
        ["pyinfra", "inventory/lab-dc1.py", "deploy.py", "-y"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **wrong},
    )
    assert plain.returncode != 0
    assert "wrong PLINTH_PASSPHRASE" in plain.stdout + plain.stderr
    assert not host.file(DRIFT_FILE).exists
    assert host.run(f"mv {DRIFT_ASIDE} {DRIFT_FILE}").rc == 0
    undoable_lab.undone()


def test_invalid_environment_touches_nothing(deployed_small_lab: Lab, tmp_path: Path) -> None:
    lab_yaml = (REPO / "inventory" / "lab.yaml").read_text()
    broken = REPO / "inventory" / "labbroken.yaml"
    broken.write_text(
        lab_yaml.replace("name: lab\n", "name: labbroken\n").replace(
            "router_id: 52", "router_id: 51"
        )
    )
    try:
        result = plinth("up", "labbroken", "--yes", check=False)
        assert result.returncode == 1
        assert f"{broken}: vips[1].router_id: 51 is already used by vips[0]" in result.stderr
        assert not (REPO / "inventory" / "labbroken").exists()  # no PKI, no secrets written
    finally:
        broken.unlink()
