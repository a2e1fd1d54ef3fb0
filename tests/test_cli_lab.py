"""``plinth lab`` commands that fail before touching Docker (no engine needed)."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth.cli import main


@pytest.fixture(autouse=True)
def _own_lab_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's lock lives in the checkout's .lab/: these tests must not meet (or wait
    for) a lab command an engineer runs meanwhile."""
    monkeypatch.setenv("PLINTH_ROOT", str(tmp_path))


def test_missing_docker_engine_is_one_clear_line() -> None:
    runner = CliRunner()
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = runner.invoke(main, ["lab", "up", "--progress", "off"], env=env)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no Docker engine answers at DOCKER_HOST=unix:///nonexistent")
    # with progress (plain when not a terminal): the phase it was in, then the same line
    result = runner.invoke(main, ["lab", "up"], env=env)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "lab 00:00 engine: finding the Docker engine",
        lines[0],
    ]


def test_invalid_snapshot_name_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["lab", "restore", "Not/A/Name"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: snapshot name 'Not/A/Name' is not valid: lowercase letters, digits, '-' and "
        "'_', starting with a letter or digit, at most 63 characters"
    ]


def test_removing_a_snapshot_that_does_not_exist_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["lab", "snapshots", "--remove", "Not/A/Name"])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        .splitlines()[0]
        .startswith("error: snapshot name 'Not/A/Name' is not valid")
    )


def test_a_second_lab_command_is_refused_while_one_runs(tmp_path: Path) -> None:
    """Two restores at once removed each other's containers (seen while measuring cold
    starts): a command that changes the lab refuses while another holds the lab's lock."""
    (tmp_path / ".lab").mkdir()
    with open(tmp_path / ".lab" / "lock", "w") as held:
        held.write("pid 4242: plinth lab restore tests-small\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        for command in (["lab", "snapshot", "x"], ["lab", "down"], ["lab", "restore", "x"]):
            result = CliRunner().invoke(main, command, env={"PLINTH_ROOT": str(tmp_path)})
            assert result.exit_code == 1, command
            assert result.stderr.strip().splitlines() == [
                "error: another lab command is running (pid 4242: plinth lab restore "
                "tests-small); wait for it or end that process"
            ], command
        fcntl.flock(held, fcntl.LOCK_UN)
    # released: the next command gets past the lock (and fails on the bad name instead)
    result = CliRunner().invoke(
        main, ["lab", "restore", "Not/A/Name"], env={"PLINTH_ROOT": str(tmp_path)}
    )
    assert result.stderr.startswith("error: snapshot name 'Not/A/Name' is not valid")
