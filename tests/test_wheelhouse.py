"""Wheelhouses without a host: Airflow's (resolved) and Patroni's (hash-locked), and the
shared offline install command (the real builds run in the lab deploy)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from plinth.model import Environment, PatroniSettings, parse_environment
from plinth.releases import BOOKWORM, TRIXIE
from plinth.wheelhouse import (
    HASHES_NAME,
    LOCK_NAME,
    HostPython,
    WheelhouseError,
    _hermetic_pip_env,
    _pack,
    _read_lock,
    _sha256,
    lock_lines,
    requirement,
)

CP311, CP313 = HostPython.of(BOOKWORM), HostPython.of(TRIXIE)


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


def test_the_hosts_python_comes_from_the_release_not_the_controller() -> None:
    assert (CP311.full, CP311.tag, CP311.minor) == ("3.11.2", "cp311", "3.11")
    assert (CP313.full, CP313.tag, CP313.minor) == ("3.13.5", "cp313", "3.13")


def test_platform_tags_are_every_manylinux_a_glibc_236_host_accepts() -> None:
    from plinth.wheelhouse import pip_target_options, platform_tags

    tags = platform_tags()
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-1] == "manylinux1_x86_64"
    pep600 = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)]
    assert [t for t in tags if t.startswith("manylinux_")] == pep600
    # each legacy alias right after its PEP 600 equal (a wheel may carry the alias alone)
    for alias, equal in (("2014", 17), ("2010", 12), ("1", 5)):
        assert tags[tags.index(f"manylinux_2_{equal}_x86_64") + 1] == f"manylinux{alias}_x86_64"
    assert len(tags) == len(set(tags)) == 32 + 3
    assert "linux_x86_64" not in tags and "any" not in tags
    options = pip_target_options(CP313)
    assert options[:6] == ["--python-version", "3.13.5", "--implementation", "cp", "--abi", "cp313"]
    assert options[6:] == [x for tag in tags for x in ("--platform", tag)]


def test_only_py3_none_any_wheels_are_pure() -> None:
    from plinth.wheelhouse import is_pure

    assert is_pure("python_etcd-0.4.5-py3-none-any.whl")
    assert is_pure("six-1.17.0-py2.py3-none-any.whl")
    assert is_pure("demo-1.0-1-py3-none-any.whl")  # with a build tag
    assert not is_pure("demo-1.0-cp311-cp311-linux_x86_64.whl")
    assert not is_pure("demo-1.0-cp311-abi3-manylinux_2_17_x86_64.whl")
    assert not is_pure("demo-1.0-cp313-none-any.whl")  # for one interpreter only


def test_resolved_pins_compare_with_wheel_names() -> None:
    from plinth.wheelhouse import lock_lines_normalised

    assert lock_lines_normalised(["Zope.Interface==7.0", "async_timeout==5.0.1"]) == [
        "async-timeout==5.0.1",
        "zope-interface==7.0",
    ]


def _fake_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """uv's resolution replaced by an empty one (nothing to fetch); its commands recorded."""
    import plinth.wheelhouse as wh

    commands: list[list[str]] = []

    def fake_run(command: list[str], what: str, index_url: str) -> None:
        commands.append(command)
        Path(command[command.index("-o") + 1]).write_text("")
        if "--constraint" in command:
            constraint = Path(command[command.index("--constraint") + 1])
            assert constraint.read_text() == "celery<5.7\n"

    monkeypatch.setattr(wh, "_run", fake_run)
    monkeypatch.setattr(wh, "cache_dir", lambda root: tmp_path)
    return commands


def test_constraints_bound_the_resolution_and_name_their_own_wheelhouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plinth.wheelhouse as wh

    commands = _fake_resolution(monkeypatch, tmp_path)
    plain = wh.ensure_wheelhouse(tmp_path, "3.3.2", ("celery",), "https://pypi.org/simple", CP311)
    bounded = wh.ensure_wheelhouse(
        tmp_path, "3.3.2", ("celery",), "https://pypi.org/simple", CP311, ("celery<5.7",)
    )
    # without constraints the name is the one existing installs already have
    assert plain.tarball.name == "apache-airflow-celery-3.3.2-cp311.tar"
    assert bounded.tarball != plain.tarball and "-c" in bounded.tarball.name
    compiles = [c for c in commands if "compile" in c]
    assert "--constraint" not in compiles[0] and "--constraint" in compiles[1]
    assert bounded.requirement == plain.requirement  # hosts install the same requirement


def test_each_python_resolves_for_itself_into_a_wheelhouse_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plinth.wheelhouse as wh

    commands = _fake_resolution(monkeypatch, tmp_path)
    built = {
        host.tag: wh.ensure_wheelhouse(tmp_path, "3.3.2", ("celery",), "https://x/simple", host)
        for host in (CP311, CP313)
    }
    assert built["cp311"].tarball.name == "apache-airflow-celery-3.3.2-cp311.tar"
    assert built["cp313"].tarball.name == "apache-airflow-celery-3.3.2-cp313.tar"
    assert built["cp311"].tarball.exists() and built["cp313"].tarball.exists()
    versions = [c[c.index("--python-version") + 1] for c in commands]
    assert versions == ["3.11.2", "3.13.5"]


def test_the_environments_release_picks_the_python_of_both_wheelhouses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import plinth.wheelhouse as wh

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(wh, "ensure_wheelhouse", lambda *args: calls.append(args))
    monkeypatch.setattr(wh, "ensure_locked_wheelhouse", lambda *args: calls.append(args))
    for release in ("bookworm", "trixie"):
        env = _environment(release)
        wh.airflow_wheelhouse(env)
        wh.patroni_wheelhouse(env)
    (af11, pg11, af13, pg13) = calls
    assert af11[4] == pg11[4] == CP311 and af13[4] == pg13[4] == CP313
    assert af13[1:4] == ("3.3.2", ("celery", "postgres"), "https://pypi.org/simple")
    assert af13[5] == ("celery<5.7",)
    assert pg11[1] == pg13[1] == "patroni[etcd3,psycopg3]==4.1.5"
    locks = (pg11[2], pg13[2])
    assert [lock.name for lock in locks if isinstance(lock, Path)] == [
        "patroni-4.1.5.txt",
        "patroni-4.1.5-cp313.txt",
    ]


def _environment(release: str, patroni: str | None = None) -> Environment:
    """A one-host environment on ``release`` (trixie is refused by validation until it is
    proven, so it is set here without validation)."""
    env = parse_environment(
        {
            "name": "unit",
            "datacenters": [
                {"name": "dc1", "subnet": "10.0.1.0/24", "domain": "dc1.unit.internal"}
            ],
            "hosts": [
                {"name": "h1", "address": "10.0.1.11", "datacenter": "dc1", "roles": ["nginx"]}
            ],
        }
    )
    components = env.components
    if patroni is not None:
        components = components.model_copy(
            update={"patroni": PatroniSettings.model_construct(version=patroni)}
        )
    return env.model_copy(update={"release": release, "components": components})


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


def _wheel(directory: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A minimal valid wheel (pip reads its metadata)."""
    path = directory / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "")
        wheel.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        wheel.writestr(
            f"{info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


_BACKEND = """
import os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "{name}-{version}-{tag}.whl"
    info = "{name}-{version}.dist-info"
    metadata = "Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n"
    tags = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: {tag}\\n"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        wheel.writestr("{name}/__init__.py", "")
        wheel.writestr(info + "/METADATA", metadata)
        wheel.writestr(info + "/WHEEL", tags)
        wheel.writestr(info + "/RECORD", "")
    return name
"""


def _sdist(directory: Path, name: str, version: str, builds: str = "py3-none-any") -> Path:
    """An sdist whose in-tree build backend (no build requirement: no index needed) makes
    a wheel tagged ``builds`` (a compiled tag stands for an extension module)."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        'backend-path = ["."]\n',
        "backend.py": _BACKEND.format(name=name, version=version, tag=builds),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    path = directory / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as sdist:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{member}")
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    return path


def _index_of(tmp_path: Path, files: list[Path]) -> str:
    """A PEP 503 index on disk listing ``files``; returns its URL."""
    projects: dict[str, list[Path]] = {}
    for path in files:
        projects.setdefault(path.name.split("-")[0].replace("_", "-"), []).append(path)
    for project, found in projects.items():
        page = tmp_path / "simple" / project
        page.mkdir(parents=True)
        links = "".join(f'<a href="{p.as_uri()}">{p.name}</a>\n' for p in found)
        (page / "index.html").write_text(links)
    return (tmp_path / "simple").as_uri() + "/"


def _local_index(tmp_path: Path) -> tuple[str, Path]:
    """A PEP 503 index on disk with one project, ``demo`` 1.0; returns (url, wheel)."""
    wheels = tmp_path / "files"
    wheels.mkdir()
    wheel = _wheel(wheels, "demo", "1.0")
    return _index_of(tmp_path, [wheel]), wheel


def _hash_lock(path: Path, files: dict[str, list[Path]]) -> Path:
    """A ``uv pip compile --generate-hashes`` style lock: pin -> its artifacts."""
    entries = []
    for pin, artifacts in files.items():
        hashes = " \\\n".join(f"    --hash=sha256:{_sha256(a)}" for a in artifacts)
        entries.append(f"{pin} \\\n{hashes}\n    # via -r -\n")
    path.write_text("# header\n" + "".join(entries))
    return path


def _members(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        return sorted(m.name for m in tar.getmembers())


def test_a_locked_build_packs_the_pinned_wheels_and_their_hashes(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    index, wheel = _local_index(tmp_path)
    lock = tmp_path / "demo-1.0.txt"
    lock.write_text(f"demo==1.0 \\\n    --hash=sha256:{_sha256(wheel)}\n    # via -r -\n")
    built = wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index, CP311)
    assert built.hashed and built.lock == ("demo==1.0",)
    assert built.tarball.name == "demo-1.0-h" + _sha256(lock)[:8] + "-cp311.tar"
    with tarfile.open(built.tarball) as tar:
        hashes = tar.extractfile(HASHES_NAME)
        assert hashes is not None
        assert hashes.read().decode() == f"demo==1.0 --hash=sha256:{_sha256(wheel)}\n"
    # the same lock for 3.13 hosts: a wheelhouse of its own beside it
    other = wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index, CP313)
    assert (
        other.tarball.name.endswith("-cp313.tar") and other.tarball.parent == built.tarball.parent
    )
    assert built.tarball.exists()


def test_an_artifact_that_changed_on_the_index_is_refused(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    index, _ = _local_index(tmp_path)
    lock = tmp_path / "demo-1.0.txt"
    lock.write_text("demo==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(WheelhouseError, match=r"refused: an artifact of demo==1\.0") as refused:
        wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index, CP313)
    assert str(lock) in str(refused.value)
    assert not list(wh.cache_dir(tmp_path / "root").glob("*.tar"))


def test_compiled_wheels_are_fetched_for_the_hosts_python_whatever_the_controllers(
    tmp_path: Path,
) -> None:
    import plinth.wheelhouse as wh

    files = tmp_path / "files"
    files.mkdir()
    native = [
        _wheel(files, "native", "1.0", "cp311-cp311-manylinux_2_17_x86_64"),
        _wheel(files, "native", "1.0", "cp313-cp313-manylinux_2_28_x86_64"),
        _wheel(files, "native", "1.0", "cp313-cp313-musllinux_1_2_x86_64"),
    ]
    stable = [_wheel(files, "stable", "2.0", "cp310-abi3-manylinux_2_34_x86_64")]
    legacy = [_wheel(files, "legacy", "3.0", "cp313-cp313-manylinux2014_x86_64")]
    pure = [_wheel(files, "pure", "4.0", "py2.py3-none-any")]
    index = _index_of(tmp_path, native + stable + legacy + pure)
    lock = _hash_lock(
        tmp_path / "lock.txt",
        {"native==1.0": native, "stable==2.0": stable, "legacy==3.0": legacy, "pure==4.0": pure},
    )
    built = wh.ensure_locked_wheelhouse(tmp_path / "root", "native==1.0", lock, index, CP313)
    assert _members(built.tarball) == [
        "legacy-3.0-cp313-cp313-manylinux2014_x86_64.whl",
        "native-1.0-cp313-cp313-manylinux_2_28_x86_64.whl",
        "pure-4.0-py2.py3-none-any.whl",
        HASHES_NAME,
        LOCK_NAME,
        "stable-2.0-cp310-abi3-manylinux_2_34_x86_64.whl",
    ]
    lock_311 = _hash_lock(tmp_path / "lock-311.txt", {"native==1.0": native})
    built = wh.ensure_locked_wheelhouse(tmp_path / "root", "native==1.0", lock_311, index, CP311)
    assert "native-1.0-cp311-cp311-manylinux_2_17_x86_64.whl" in _members(built.tarball)


def test_a_wheel_for_a_newer_glibc_than_the_hosts_is_no_wheel_at_all(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    files = tmp_path / "files"
    files.mkdir()
    wheel = _wheel(files, "recent", "1.0", "cp313-cp313-manylinux_2_39_x86_64")
    index = _index_of(tmp_path, [wheel])
    lock = _hash_lock(tmp_path / "lock.txt", {"recent==1.0": [wheel]})
    with pytest.raises(WheelhouseError) as refused:
        wh.ensure_locked_wheelhouse(tmp_path / "root", "recent==1.0", lock, index, CP313)
    assert "recent==1.0: no wheel for the hosts' Python 3.13.5 (cp313" in str(refused.value)
    assert not list(wh.cache_dir(tmp_path / "root").glob("*.tar"))


def test_pure_sdists_are_built_into_wheels_here_and_hash_checked(tmp_path: Path) -> None:
    import plinth.wheelhouse as wh

    files = tmp_path / "files"
    files.mkdir()
    wheel = _wheel(files, "demo", "1.0", "cp313-cp313-manylinux_2_17_x86_64")
    etcd = _sdist(files, "etcdclient", "0.4.5")
    diff = _sdist(files, "diffy", "1.4.2", builds="py2.py3-none-any")
    index = _index_of(tmp_path, [wheel, etcd, diff])
    pins = {"demo==1.0": [wheel], "etcdclient==0.4.5": [etcd], "diffy==1.4.2": [diff]}
    lock = _hash_lock(tmp_path / "lock.txt", pins)
    built = wh.ensure_locked_wheelhouse(tmp_path / "root", "demo==1.0", lock, index, CP313)
    assert built.lock == ("demo==1.0", "diffy==1.4.2", "etcdclient==0.4.5")
    members = _members(built.tarball)
    assert "etcdclient-0.4.5-py3-none-any.whl" in members
    assert "diffy-1.4.2-py2.py3-none-any.whl" in members
    with tarfile.open(built.tarball) as tar:
        hashes = tar.extractfile(HASHES_NAME)
        assert hashes is not None
        assert "etcdclient==0.4.5 --hash=sha256:" in hashes.read().decode()
    # the sdist's hash is the lock's too: a changed sdist is refused like a wheel
    _hash_lock(lock, pins | {"etcdclient==0.4.5": [wheel]})
    with pytest.raises(WheelhouseError, match=r"refused: an artifact of demo==1\.0"):
        wh.ensure_locked_wheelhouse(tmp_path / "other", "demo==1.0", lock, index, CP313)


def test_an_sdist_that_builds_compiled_code_is_refused_naming_it_and_the_python(
    tmp_path: Path,
) -> None:
    import plinth.wheelhouse as wh

    files = tmp_path / "files"
    files.mkdir()
    sdist = _sdist(files, "speedups", "2.0", builds="cp311-cp311-linux_x86_64")
    index = _index_of(tmp_path, [sdist])
    lock = _hash_lock(tmp_path / "lock.txt", {"speedups==2.0": [sdist]})
    with pytest.raises(WheelhouseError) as refused:
        wh.ensure_locked_wheelhouse(tmp_path / "root", "speedups==2.0", lock, index, CP313)
    message = str(refused.value)
    assert message.startswith("speedups==2.0 (for speedups==2.0) has no wheel for the hosts' ")
    assert "Python 3.13.5 (cp313" in message and "speedups-2.0-cp311-cp311-linux_x86_64" in message
    assert "Publish a cp313 manylinux wheel" in message
    assert not list(wh.cache_dir(tmp_path / "root").glob("*.tar"))


def test_a_resolved_wheelhouse_builds_pure_sdists_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plinth.wheelhouse as wh

    files = tmp_path / "files"
    files.mkdir()
    index = _index_of(tmp_path, [_wheel(files, "demo", "1.0"), _sdist(files, "extra", "0.1")])
    monkeypatch.setattr(wh, "resolve", lambda *args: ["demo==1.0", "extra==0.1"])
    built = wh.ensure_wheelhouse(tmp_path / "root", "1.0", (), index, CP313)
    assert built.lock == ("demo==1.0", "extra==0.1") and not built.hashed
    assert "extra-0.1-py3-none-any.whl" in _members(built.tarball)


def test_pins_of_a_hash_lock() -> None:
    from plinth.wheelhouse import locked_pins, locked_requirements

    text = (
        "# header\ncertifi==2026.10.19.post1 \\\n    --hash=sha256:aa\n    # via requests\n"
        "Typing_Extensions==4.16.0 ; python_version < '3.12' \\\n    --hash=sha256:bb \\\n"
        "    --hash=sha256:cc\n"
    )
    assert locked_pins(text) == ["certifi==2026.10.19.post1", "typing-extensions==4.16.0"]
    assert locked_requirements(text) == {
        "certifi==2026.10.19.post1": "certifi==2026.10.19.post1 --hash=sha256:aa",
        "typing-extensions==4.16.0": "typing-extensions==4.16.0 --hash=sha256:bb --hash=sha256:cc",
    }


# ---- Patroni: one committed hash lock per hosts' Python ----


def test_each_release_has_its_patroni_lock_made_by_the_command_in_its_header() -> None:
    from plinth.wheelhouse import locked_pins, patroni_lock_command, patroni_lock_path

    version = PatroniSettings().version
    assert patroni_lock_path(version, BOOKWORM) == PatroniSettings.lock_path(version)
    assert patroni_lock_path(version, TRIXIE).name == f"patroni-{version}-cp313.txt"
    assert patroni_lock_path(version, TRIXIE).parent == PatroniSettings.lock_path(version).parent
    for release in (BOOKWORM, TRIXIE):
        lock = patroni_lock_path(version, release)
        text = lock.read_text()
        assert text.splitlines()[1] == "#    " + patroni_lock_command(version, release)
        assert f"--python-version {release.python_full} " in text.splitlines()[1]
        pins = locked_pins(text)
        assert f"patroni=={version}" in pins and "python-etcd==0.4.5" in pins
        requirements = [line for line in text.splitlines() if line and line[0].isalpha()]
        assert all(line.endswith("\\") for line in requirements)  # each has its hashes
    # typing-extensions is only for Python below 3.12
    assert "typing-extensions==4.16.0" in locked_pins(
        patroni_lock_path(version, BOOKWORM).read_text()
    )
    assert not any(
        pin.startswith("typing-extensions==")
        for pin in locked_pins(patroni_lock_path(version, TRIXIE).read_text())
    )


def test_a_patroni_version_with_no_lock_for_the_release_is_refused_with_the_command() -> None:
    from plinth.wheelhouse import patroni_wheelhouse

    with pytest.raises(WheelhouseError) as refused:
        patroni_wheelhouse(_environment("trixie", patroni="4.0.1"))
    assert str(refused.value) == (
        "no hash lock for Patroni 4.0.1 on Debian 13 (trixie, Python 3.13.5): commit "
        "plinth/locks/patroni-4.0.1-cp313.txt, generated with: echo "
        "'patroni[etcd3,psycopg3]==4.0.1' | uv pip compile --generate-hashes --python-version "
        "3.13.5 --python-platform x86_64-manylinux_2_17 - -o plinth/locks/patroni-4.0.1-cp313.txt"
    )
    with pytest.raises(WheelhouseError, match=r"plinth/locks/patroni-4\.0\.1\.txt"):
        patroni_wheelhouse(_environment("bookworm", patroni="4.0.1"))
