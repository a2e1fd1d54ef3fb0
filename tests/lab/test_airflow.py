"""Airflow's offline install on the small lab (configuration and services: not yet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from operations.airflow import AIRFLOW_ROLES, PREFIX
from plinth.wheelhouse import airflow_wheelhouse
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab


def test_every_airflow_host_runs_the_wheelhouse_installed_offline(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    env = deployed_small_lab.environment
    wheelhouse = airflow_wheelhouse(env)
    hosts = [h for h in env.hosts if any(r in h.roles for r in AIRFLOW_ROLES)]
    assert hosts
    for host in hosts:
        remote = deployed_small_lab.host(host.name, tmp_path)
        venv = remote.check_output(f"readlink -f {PREFIX}/current")
        assert venv == f"{PREFIX}/venv-{wheelhouse.tag}"
        version = remote.check_output(
            f'{venv}/bin/python -c "import importlib.metadata as m; '
            f"print(m.version('apache-airflow'))\""
        )
        assert version == env.components.airflow.version
        # Exactly the controller's resolution: every locked project at its locked version,
        # and nothing installed that the lock does not name (pip, setuptools aside).
        frozen = remote.check_output(f"{venv}/bin/pip freeze --all --disable-pip-version-check")
        installed = {
            line.split("==")[0].lower().replace("_", "-").replace(".", "-")
            + "=="
            + line.split("==")[1]
            for line in frozen.splitlines()
            if "==" in line
        }
        extra = installed - set(wheelhouse.lock)
        assert {e.split("==")[0] for e in extra} <= {"pip", "setuptools"}, extra
        assert set(wheelhouse.lock) <= installed
        assert remote.run(f"{venv}/bin/pip check --disable-pip-version-check").rc == 0
