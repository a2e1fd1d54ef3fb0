"""Fixtures shared by the unit tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root holding only the example production model (``PLINTH_ROOT``)."""
    (tmp_path / "inventory").mkdir()
    shutil.copy(REPO / "inventory" / "example-prod.yaml", tmp_path / "inventory")
    (tmp_path / "deploy.py").write_text("")
    monkeypatch.setenv("PLINTH_ROOT", str(tmp_path))
    return tmp_path
