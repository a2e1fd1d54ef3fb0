"""``plinth lab`` commands that fail before touching Docker (no engine needed)."""

from __future__ import annotations

from click.testing import CliRunner

from plinth.cli import main


def test_missing_docker_engine_is_one_clear_line() -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["lab", "up"], env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: no Docker engine answers at DOCKER_HOST=unix:///nonexistent")


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
