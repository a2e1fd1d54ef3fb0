"""Wheelhouses: a pinned Python requirement built once on the controller, installed offline.

No platform host reaches PyPI. The controller fetches the requirement's wheels from the
model's ``package_sources.pypi_index`` with ``pip wheel`` (sdists are built into wheels
here, so hosts need no compiler), records the exact set in a lock file, and packs both
into one tar. Hosts receive the tar (one file: a re-run compares one checksum, not
hundreds) and install it with ``pip install --no-index`` (:mod:`operations.wheelhouse`),
so every host of every DC runs the same bytes. Two kinds:

* resolved (Airflow, :func:`ensure_wheelhouse`): ``apache-airflow[extras]==version`` is
  resolved at build time (bounded by the model's constraints); hosts install constrained
  by the resolved ``name==version`` list.
* locked (Patroni, :func:`ensure_locked_wheelhouse`): the resolution is a file committed
  in ``plinth/locks/`` with a sha256 for every artifact, fetched with
  ``pip wheel --require-hashes``: an artifact the index changed since the lock was made is
  refused, not packed. The tar then also carries every packed wheel's own sha256
  (:data:`HASHES_NAME`, wheels built here from an sdist included) and hosts install with
  ``--require-hashes`` from it.

The build is hermetic with respect to the controller's own pip configuration (its extra
indexes, find-links and constraints are ignored): only the model's index counts. Wheels
with compiled code must match the hosts' interpreter, so the controller's Python minor
version must be the hosts' (3.11 on Debian 12).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plinth.model import Environment, PatroniSettings

HOST_PYTHON = (3, 11)
"""Debian 12's python3 (minor version: the ABI of compiled wheels)."""
HOST_PYTHON_FULL = "3.11.2"
"""Debian 12's exact python3: dependency markers such as ``python_full_version <
"3.11.3"`` (redis needs async-timeout below 3.11.3) are decided for it, not for the
controller's interpreter."""
HOST_PLATFORM = "x86_64-manylinux_2_17"
LOCK_NAME = "requirements.lock"
HASHES_NAME = "requirements.hashes"
"""In a locked wheelhouse: ``name==version --hash=sha256:...`` of every wheel in the tar."""
_IN_PROCESS_BUILD = threading.Lock()
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class WheelhouseError(Exception):
    """The wheelhouse cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class Wheelhouse:
    requirement: str
    """``apache-airflow[celery,postgres]==3.3.2``"""
    tarball: Path
    """One tar of every wheel plus the lock file."""
    sha256: str
    lock: tuple[str, ...]
    """``name==version`` of every wheel, sorted."""
    hashed: bool = False
    """Built from a committed hash lock; the tar carries :data:`HASHES_NAME` and hosts
    install with ``pip --require-hashes``."""

    @property
    def tag(self) -> str:
        """Short identity of the exact content (part of the hosts' venv path)."""
        return self.sha256[:12]


def requirement(version: str, extras: tuple[str, ...]) -> str:
    return f"apache-airflow[{','.join(sorted(extras))}]=={version}"


def lock_lines(wheel_names: list[str]) -> list[str]:
    """``name==version`` for each wheel file name (PEP 427), names normalised (PEP 503)."""
    lines = []
    for name in wheel_names:
        match = _WHEEL.match(name)
        if match is None:
            raise WheelhouseError(f"not a wheel file name: {name}")
        project = re.sub(r"[-_.]+", "-", match["name"]).lower()
        lines.append(f"{project}=={match['version']}")
    return sorted(lines)


def cache_dir(root: Path) -> Path:
    return root / ".cache" / "wheelhouse"


def _hermetic_pip_env(index_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    # The system's certificate bundle (a TLS-inspecting proxy's CA is added there).
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": index_url}
    cert = os.environ.get("PIP_CERT")
    if cert:
        env["PIP_CERT"] = cert
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _pack(wheels: Path, lock: list[str], tarball: Path) -> None:
    """A reproducible tar: sorted members, no owners, no timestamps."""
    (wheels / LOCK_NAME).write_text("\n".join(lock) + "\n")
    partial = tarball.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for path in sorted(wheels.iterdir()):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    partial.replace(tarball)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_lock(tarball: Path) -> tuple[str, ...]:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(LOCK_NAME)
        if member is None:
            raise WheelhouseError(f"{tarball}: no {LOCK_NAME} inside; delete it and rebuild")
        return tuple(member.read().decode().split())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def _tarball_path(root: Path, slug: str) -> Path:
    return cache_dir(root) / f"{slug}-cp{HOST_PYTHON[0]}{HOST_PYTHON[1]}.tar"


def _cached(tarball: Path, build_it: Callable[[], None]) -> None:
    """Run ``build_it`` unless ``tarball`` exists, one build at a time.

    Two stacks (or two operators' runs) share the cache. pyinfra runs deploy.py for every
    host as greenlets of one process, and a second flock on the same file from that
    process would block it whole (the first host's build never resumes): the in-process
    lock, which gevent makes cooperative, is taken first.
    """
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with _IN_PROCESS_BUILD, (tarball.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            build_it()


def ensure_wheelhouse(
    root: Path,
    version: str,
    extras: tuple[str, ...],
    index_url: str,
    python: str | None = None,
    constraints: tuple[str, ...] = (),
) -> Wheelhouse:
    """The Airflow wheelhouse for ``version`` (built now if the cache has none).

    ``constraints`` (pip constraint lines) bound the resolution; a wheelhouse built with
    them is cached under its own name, and none gives the same name as before they existed.
    """
    wanted = requirement(version, extras)
    slug = _slug(wanted)
    if constraints:
        digest = hashlib.sha256("\n".join(sorted(constraints)).encode()).hexdigest()[:8]
        slug += f"-c{digest}"
    tarball = _tarball_path(root, slug)
    _cached(
        tarball, lambda: build(wanted, index_url, tarball, python or sys.executable, constraints)
    )
    return Wheelhouse(wanted, tarball, _sha256(tarball), _read_lock(tarball))


def ensure_locked_wheelhouse(
    root: Path, wanted: str, lock_file: Path, index_url: str, python: str | None = None
) -> Wheelhouse:
    """The wheelhouse of ``wanted`` exactly as the committed hash lock ``lock_file`` pins it
    (built now if the cache has none).

    The cache name carries a digest of the lock: a regenerated lock is a new wheelhouse,
    hence a new venv on the hosts, even for the same version.
    """
    if not lock_file.is_file():
        raise WheelhouseError(f"{wanted}: no lock file {lock_file}")
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:8]
    tarball = _tarball_path(root, f"{_slug(wanted)}-h{digest}")
    _cached(
        tarball,
        lambda: build_locked(wanted, lock_file, index_url, tarball, python or sys.executable),
    )
    return Wheelhouse(wanted, tarball, _sha256(tarball), _read_lock(tarball), hashed=True)


def _check_python(python: str) -> None:
    """Refuse a build interpreter whose minor version is not the hosts'."""
    probe = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = tuple(int(x) for x in probe.stdout.split()) if probe.returncode == 0 else ()
    if found != HOST_PYTHON:
        have = ".".join(map(str, found)) or "unknown"
        raise WheelhouseError(
            f"{python} is Python {have}; the hosts run "
            f"{HOST_PYTHON[0]}.{HOST_PYTHON[1]} and compiled wheels must match: build with a "
            f"{HOST_PYTHON[0]}.{HOST_PYTHON[1]} interpreter (PLINTH_WHEELHOUSE_PYTHON)"
        )


def locked_pins(lock_text: str) -> list[str]:
    """``name==version`` of every requirement of a ``uv pip compile --generate-hashes``
    file (continuation lines, hashes, markers and comments left out)."""
    pins = []
    for line in lock_text.splitlines():
        if not line or line[0].isspace() or line.startswith("#") or "==" not in line:
            continue
        pins.append(line.split(";")[0].rstrip(" \\").strip())
    return lock_lines_normalised(pins)


def hash_lines(wheels: Path) -> list[str]:
    """``name==version --hash=sha256:...`` of every wheel in ``wheels``, sorted by name."""
    lines = []
    for path in sorted(wheels.glob("*.whl")):
        (pin,) = lock_lines([path.name])
        lines.append(f"{pin} --hash=sha256:{_sha256(path)}")
    return sorted(lines)


def build_locked(wanted: str, lock_file: Path, index_url: str, tarball: Path, python: str) -> None:
    """Fetch exactly the artifacts ``lock_file`` pins, each checked against its hash."""
    _check_python(python)
    with tempfile.TemporaryDirectory(prefix="plinth-wheelhouse-", dir=tarball.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        result = subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--require-hashes",
             "--wheel-dir", str(wheels), "-r", str(lock_file)],
            env=_hermetic_pip_env(index_url), capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stderr + result.stdout).strip()
            tail = " / ".join(output.splitlines()[-6:])
            if "DO NOT MATCH THE HASHES" in output:
                raise WheelhouseError(
                    f"refused: an artifact of {wanted} on {index_url} is not the one whose "
                    f"hash is committed in {lock_file} (nothing was cached): {tail}. If the "
                    "change is expected, regenerate the lock with the command in its header "
                    "and review the diff"
                )
            raise WheelhouseError(
                f"fetching the wheels of {wanted} from {index_url} failed: {tail}"
            )
        built = lock_lines(sorted(p.name for p in wheels.glob("*.whl")))
        pinned = locked_pins(lock_file.read_text())
        if built != pinned:
            missing = sorted(set(pinned) - set(built))
            extra = sorted(set(built) - set(pinned))
            raise WheelhouseError(
                f"the wheels of {wanted} differ from {lock_file}: "
                f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(extra) or 'none'}"
            )
        (wheels / HASHES_NAME).write_text("\n".join(hash_lines(wheels)) + "\n")
        _pack(wheels, built, tarball)
        shutil.rmtree(wheels, ignore_errors=True)


def build(
    wanted: str, index_url: str, tarball: Path, python: str, constraints: tuple[str, ...] = ()
) -> None:
    _check_python(python)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plinth-wheelhouse-", dir=tarball.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        wanted_file, resolved_file = Path(tmp) / "wanted.in", Path(tmp) / "resolved.txt"
        wanted_file.write_text(wanted + "\n")
        bounds: list[str] = []
        if constraints:
            constraints_file = Path(tmp) / "constraints.txt"
            constraints_file.write_text("\n".join(constraints) + "\n")
            bounds = ["--constraint", str(constraints_file)]
        # Resolve for the hosts' interpreter and platform (pip can only resolve for the
        # one running it), then fetch exactly that set.
        _run(
            [sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-config",
             "--native-tls", "--no-header", "--no-annotate", "--index-url", index_url,
             "--python-version", HOST_PYTHON_FULL, "--python-platform", HOST_PLATFORM,
             *bounds, str(wanted_file), "-o", str(resolved_file)],
            f"resolving {wanted} for Python {HOST_PYTHON_FULL} from {index_url}",
            index_url,
        )  # fmt: skip
        resolved = sorted(
            line.strip() for line in resolved_file.read_text().splitlines() if "==" in line
        )
        _run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
             "-r", str(resolved_file)],
            f"fetching the wheels of {wanted} from {index_url}",
            index_url,
        )  # fmt: skip
        built = lock_lines(sorted(p.name for p in wheels.glob("*.whl")))
        if built != lock_lines_normalised(resolved):
            missing = set(lock_lines_normalised(resolved)) - set(built)
            raise WheelhouseError(f"wheels missing after the fetch: {', '.join(sorted(missing))}")
        _pack(wheels, built, tarball)
        shutil.rmtree(wheels, ignore_errors=True)


def lock_lines_normalised(pins: list[str]) -> list[str]:
    """``name==version`` pins with PEP 503 names, sorted."""
    out = []
    for pin in pins:
        name, _, version = pin.partition("==")
        out.append(f"{re.sub(r'[-_.]+', '-', name).lower()}=={version.split(';')[0].strip()}")
    return sorted(out)


def _run(command: list[str], what: str, index_url: str) -> None:
    result = subprocess.run(
        command, env=_hermetic_pip_env(index_url), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise WheelhouseError(f"{what} failed: " + " / ".join(tail))


def airflow_wheelhouse(environment: Environment) -> Wheelhouse:
    """The wheelhouse the model's Airflow settings ask for, from the model's index.

    ``PLINTH_WHEELHOUSE_PYTHON`` names the interpreter to build with (default: the one
    running plinth); it must be the hosts' Python version.
    """
    from plinth.stacks import project_root

    settings = environment.components.airflow
    index = environment.package_sources.pypi_index
    return ensure_wheelhouse(
        project_root(), settings.version, settings.extras, index,
        os.environ.get("PLINTH_WHEELHOUSE_PYTHON"), settings.constraints,
    )  # fmt: skip


def patroni_requirement(version: str) -> str:
    """Patroni with its etcd v3 client and psycopg 3 (``psycopg[binary]`` brings its own
    libpq, so the hosts need no libpq package)."""
    return f"patroni[etcd3,psycopg3]=={version}"


def patroni_wheelhouse(environment: Environment) -> Wheelhouse:
    """The Patroni wheelhouse of ``components.patroni.version``, from its committed hash
    lock (``plinth/locks/patroni-<version>.txt``) and the model's index."""
    from plinth.stacks import project_root

    settings = environment.components.patroni
    return ensure_locked_wheelhouse(
        project_root(), patroni_requirement(settings.version),
        PatroniSettings.lock_path(settings.version),
        environment.package_sources.pypi_index, os.environ.get("PLINTH_WHEELHOUSE_PYTHON"),
    )  # fmt: skip
