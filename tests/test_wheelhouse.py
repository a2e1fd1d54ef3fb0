"""The Airflow wheelhouse's own logic (the real build runs in the lab deploy)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plinth.wheelhouse import (
    LOCK_NAME,
    WheelhouseError,
    _hermetic_pip_env,
    _pack,
    _read_lock,
    _sha256,
    build,
    lock_lines,
    requirement,
)


def test_lock_lines_name_every_wheel_once_normalised() -> None:
    names = [
        "apache_airflow-3.3.2-py3-none-any.whl",
        "psycopg2_binary-2.9.13-cp311-cp311-manylinux2014_x86_64.whl",
        "Zope.Interface-7.0-1-cp311-cp311-linux_x86_64.whl",  # with a build tag
    ]
    assert lock_lines(names) == [
        "apache-airflow==3.3.2",
        "psycopg2-binary==2.9.13",
        "zope-interface==7.0",
    ]
    with pytest.raises(WheelhouseError, match="not a wheel"):
        lock_lines(["airflow-3.3.2.tar.gz"])


def test_requirement_sorts_extras() -> None:
    assert requirement("3.3.2", ("postgres", "celery")) == "apache-airflow[celery,postgres]==3.3.2"


def test_the_controllers_pip_configuration_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple")
    monkeypatch.setenv("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    env = _hermetic_pip_env("https://mirror.example/simple")
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["PIP_CONFIG_FILE"] == "/dev/null"
    assert "PIP_FIND_LINKS" not in env and "PIP_EXTRA_INDEX_URL" not in env
    assert env["PIP_CERT"] == "/etc/ssl/certs/ca-certificates.crt"


def test_packing_is_reproducible(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"a")
    (wheels / "b-2.0-py3-none-any.whl").write_bytes(b"b")
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    _pack(wheels, ["a==1.0", "b==2.0"], first)
    (wheels / LOCK_NAME).unlink()
    _pack(wheels, ["a==1.0", "b==2.0"], second)
    assert _sha256(first) == _sha256(second)
    assert _read_lock(first) == ("a==1.0", "b==2.0")


def test_a_controller_python_other_than_the_hosts_is_refused(tmp_path: Path) -> None:
    if sys.version_info[:2] == (3, 11):
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\necho 3 12\n")
        fake.chmod(0o755)
        python = str(fake)
    else:
        python = sys.executable
    with pytest.raises(WheelhouseError, match=r"the hosts run 3\.11"):
        build("apache-airflow==3.3.2", "https://pypi.org/simple", tmp_path / "w.tar", python)
    assert not (tmp_path / "w.tar").exists()


def test_resolved_pins_compare_with_wheel_names() -> None:
    from plinth.wheelhouse import lock_lines_normalised

    assert lock_lines_normalised(["Zope.Interface==7.0", "async_timeout==5.0.1"]) == [
        "async-timeout==5.0.1",
        "zope-interface==7.0",
    ]


def test_constraints_bound_the_resolution_and_name_their_own_wheelhouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plinth.wheelhouse as wh

    commands: list[list[str]] = []

    def fake_run(command: list[str], what: str, index_url: str) -> None:
        commands.append(command)
        if "--wheel-dir" in command:
            Path(command[command.index("--wheel-dir") + 1]).mkdir(parents=True, exist_ok=True)
        if "compile" in command:
            Path(command[command.index("-o") + 1]).write_text("")
            if "--constraint" in command:
                constraint = Path(command[command.index("--constraint") + 1])
                assert constraint.read_text() == "celery<5.7\n"

    monkeypatch.setattr(wh, "_run", fake_run)
    monkeypatch.setattr(wh, "cache_dir", lambda root: tmp_path)
    python = sys.executable if sys.version_info[:2] == wh.HOST_PYTHON else None
    if python is None:
        pytest.skip("needs the hosts' Python minor version")
    plain = wh.ensure_wheelhouse(tmp_path, "3.3.2", ("celery",), "https://pypi.org/simple")
    bounded = wh.ensure_wheelhouse(
        tmp_path, "3.3.2", ("celery",), "https://pypi.org/simple", constraints=("celery<5.7",)
    )
    # without constraints the name is the one existing installs already have
    assert plain.tarball.name == f"apache-airflow-celery-3.3.2-cp{wh.HOST_PYTHON[0]}11.tar"
    assert bounded.tarball != plain.tarball and "-c" in bounded.tarball.name
    compiles = [c for c in commands if "compile" in c]
    assert "--constraint" not in compiles[0] and "--constraint" in compiles[1]
    assert bounded.requirement == plain.requirement  # hosts install the same requirement
