"""Wheelhouses without a host: Airflow's (resolved) and Patroni's (hash-locked), and the
shared offline install command (the real builds run in the lab deploy)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plinth.wheelhouse import (
    HASHES_NAME,
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


# ---- the host install (operations.wheelhouse), shared by Airflow and Patroni ----


def _wheelhouse(hashed: bool) -> object:
    from plinth.wheelhouse import Wheelhouse

    tarball = Path("/cache/apache-airflow-celery-postgres-3.3.2-cp311.tar")
    return Wheelhouse("apache-airflow[celery,postgres]==3.3.2", tarball, "cd" * 32, (), hashed)


def test_airflow_installs_exactly_as_before_the_factoring() -> None:
    from operations.airflow import AirflowInstall
    from operations.wheelhouse import install_command

    spec = AirflowInstall(_wheelhouse(hashed=False))  # type: ignore[arg-type]
    tag = "cd" * 6
    staging = f"/opt/airflow/wheelhouse/unpacked-{tag}"
    venv = f"/opt/airflow/venv-{tag}"
    # The command of the previous commit, byte for byte.
    assert install_command(spec) == (
        f"set -e; rm -rf {staging} {venv}; mkdir -p {staging}; "
        f"tar -xf /opt/airflow/wheelhouse/apache-airflow-celery-postgres-3.3.2-cp311.tar "
        f"-C {staging}; python3 -m venv {venv}; "
        f"{venv}/bin/pip install --quiet --no-index --no-cache-dir "
        f"--disable-pip-version-check --find-links {staging} "
        f"--constraint {staging}/requirements.lock "
        f"'apache-airflow[celery,postgres]==3.3.2'; "
        f"echo {'cd' * 32} > {venv}/.plinth-wheelhouse; rm -rf {staging}"
    )
    assert spec.current == "/opt/airflow/current"


def test_a_locked_wheelhouse_installs_hash_checked() -> None:
    from operations.wheelhouse import VenvInstall, install_command

    command = install_command(VenvInstall(_wheelhouse(hashed=True), "/opt/patroni"))  # type: ignore[arg-type]
    assert "--no-index" in command
    assert "--require-hashes -r /opt/patroni/wheelhouse/unpacked-" in command
    assert command.endswith(
        f"/{HASHES_NAME}; echo {'cd' * 32} > /opt/patroni/venv-{'cd' * 6}"
        f"/.plinth-wheelhouse; rm -rf /opt/patroni/wheelhouse/unpacked-{'cd' * 6}"
    )
    assert "--constraint" not in command


# ---- locked (hash-checked) wheelhouses, built against a local index ----


def _wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal valid wheel (pip reads its metadata)."""
    import zipfile

    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "")
        wheel.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        wheel.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _local_index(tmp_path: Path) -> tuple[str, Path]:
    """A PEP 503 index on disk with one project, ``demo`` 1.0; returns (url, wheel)."""
    wheels = tmp_path / "files"
    wheels.mkdir()
    wheel = _wheel(wheels, "demo", "1.0")
    project = tmp_path / "simple" / "demo"
    project.mkdir(parents=True)
    (project / "index.html").write_text(f'<a href="{wheel.as_uri()}">{wheel.name}</a>\n')
    return (tmp_path / "simple").as_uri() + "/", wheel


def _needs_host_python() -> None:
    import plinth.wheelhouse as wh

    if sys.version_info[:2] != wh.HOST_PYTHON:
        pytest.skip("needs the hosts' Python minor version")


def test_a_locked_build_packs_the_pinned_wheels_and_their_hashes(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    _needs_host_python()
    index, wheel = _local_index(tmp_path)
    lock = tmp_path / "demo-1.0.txt"
    lock.write_text(f"demo==1.0 \\\n    --hash=sha256:{_sha256(wheel)}\n    # via -r -\n")
    built = wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index)
    assert built.hashed and built.lock == ("demo==1.0",)
    assert built.tarball.name == "demo-1.0-h" + _sha256(lock)[:8] + "-cp311.tar"
    import tarfile

    with tarfile.open(built.tarball) as tar:
        hashes = tar.extractfile(HASHES_NAME)
        assert hashes is not None
        assert hashes.read().decode() == f"demo==1.0 --hash=sha256:{_sha256(wheel)}\n"


def test_an_artifact_that_changed_on_the_index_is_refused(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    _needs_host_python()
    index, _ = _local_index(tmp_path)
    lock = tmp_path / "demo-1.0.txt"
    lock.write_text("demo==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(WheelhouseError, match=r"refused: an artifact of demo==1\.0") as refused:
        wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index)
    assert str(lock) in str(refused.value)
    assert not list(wh.cache_dir(tmp_path / "root").glob("*.tar"))


def test_pins_of_a_hash_lock() -> None:
    from plinth.wheelhouse import locked_pins

    text = (
        "# header\ncertifi==2026.10.19.post1 \\\n    --hash=sha256:aa\n    # via requests\n"
        "Typing_Extensions==4.16.0 ; python_version < '3.12' \\\n    --hash=sha256:bb\n"
    )
    assert locked_pins(text) == ["certifi==2026.10.19.post1", "typing-extensions==4.16.0"]
