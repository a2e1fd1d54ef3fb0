"""Wheelhouses: a pinned Python requirement built once on the controller, installed offline.

No platform host reaches PyPI. The controller fetches the requirement's wheels from the
model's ``package_sources.pypi_index`` for the hosts' Python (the environment's Debian
release: 3.11 on Debian 12, 3.13 on Debian 13), records the exact set in a lock file, and
packs both into one tar named after the hosts' wheel tag (``-cp311.tar``, ``-cp313.tar``:
the wheelhouses of two releases coexist in the cache). Hosts receive the tar (one file: a
re-run compares one checksum, not hundreds) and install it with
``pip install --no-index`` (:mod:`operations.wheelhouse`), so every host of every DC runs
the same bytes. Two kinds:

* resolved (Airflow, :func:`ensure_wheelhouse`): ``apache-airflow[extras]==version`` is
  resolved at build time for the hosts' exact Python (bounded by the model's
  constraints); hosts install constrained by the resolved ``name==version`` list.
* locked (Patroni, :func:`ensure_locked_wheelhouse`): the resolution is a file committed
  in ``plinth/locks/``, one per hosts' Python (:func:`patroni_lock_path`), with a sha256
  for every artifact, fetched with ``--require-hashes``: an artifact the index changed
  since the lock was made is refused, not packed. The tar then also carries every packed
  wheel's own sha256 (:data:`HASHES_NAME`, wheels built here from an sdist included) and
  hosts install with ``--require-hashes`` from it.

The controller's own Python does not matter. Wheels are fetched for the hosts'
interpreter and platform, never the controller's: ``pip download --only-binary=:all:
--no-deps`` with ``--python-version``, ``--implementation cp``, ``--abi cpXY`` and every
manylinux tag a host accepts (:func:`pip_target_options`). A pin the index has no such
wheel of (sdist only) is fetched as its sdist (its Requires-Python checked against the
hosts' Python, its hash against the lock) and built into a wheel by the controller's
interpreter, kept only when that wheel is pure Python (:data:`PURE_TAGS`): a compiled one
would be for the controller's Python, so it is refused naming the package.

The build is hermetic with respect to the controller's own pip configuration (its extra
indexes, find-links and constraints are ignored): only the model's index counts.
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
from plinth.releases import DebianRelease

MANYLINUX_GLIBC = (2, 36)
"""The glibc every host has at least (Debian 12's 2.36; Debian 13 has 2.41): a manylinux
wheel for it or an older glibc runs on every host of every release."""
HOST_ARCH = "x86_64"
HOST_PLATFORM = "x86_64-manylinux_2_17"
"""uv's ``--python-platform`` for resolving (the lock files' headers name it too)."""
PURE_TAGS = frozenset({"py3-none-any", "py2.py3-none-any"})
"""The only tags a wheel built here, from an sdist, may carry: no compiled code."""
LOCK_NAME = "requirements.lock"
HASHES_NAME = "requirements.hashes"
"""In a locked wheelhouse: ``name==version --hash=sha256:...`` of every wheel in the tar."""
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_IN_PROCESS_BUILD = threading.Lock()
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_NO_WHEEL = re.compile(r"No matching distribution found for (\S+)")
_HASH = re.compile(r"--hash=\S+")


class WheelhouseError(Exception):
    """The wheelhouse cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class HostPython:
    """The interpreter a wheelhouse is built for: the hosts' ``python3``, not the
    controller's."""

    version: tuple[int, int]
    """``(3, 13)``: the ABI of compiled wheels."""
    full: str
    """``3.13.5``: dependency markers such as ``python_full_version < "3.11.3"`` (redis
    needs async-timeout below 3.11.3) and Requires-Python are decided for it."""
    tag: str
    """``cp313``"""

    @classmethod
    def of(cls, release: DebianRelease) -> HostPython:
        return cls(release.python, release.python_full, release.python_tag)

    @property
    def minor(self) -> str:
        """``3.13``"""
        return f"{self.version[0]}.{self.version[1]}"


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


def platform_tags(
    glibc: tuple[int, int] = MANYLINUX_GLIBC, arch: str = HOST_ARCH
) -> tuple[str, ...]:
    """Every manylinux platform tag a host with ``glibc`` accepts, most specific first as
    the hosts' own pip orders them: ``manylinux_2_36`` down to ``manylinux_2_5``, each
    legacy alias (``manylinux2014``/``2010``/``1``) beside its PEP 600 equal (a wheel
    tagged only ``manylinux2014_x86_64`` matches that string alone).

    Pure wheels need no platform here: pip always accepts ``py3-none-any`` and
    ``cpXY-none-any`` (``--platform any`` would only add tags no wheel carries).
    ``linux_x86_64`` is left out: such a wheel was built on some machine, for it.
    """
    major, newest = glibc
    tags = []
    for minor in range(newest, 4, -1):
        tags.append(f"manylinux_{major}_{minor}_{arch}")
        if major == 2 and minor in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[minor]}_{arch}")
    return tuple(tags)


def pip_target_options(host: HostPython) -> list[str]:
    """pip's options that make it pick (and check Requires-Python) for the hosts'
    interpreter and platform instead of its own; ``--abi cpXY`` admits ``abi3`` and
    ``none`` wheels too."""
    options = ["--python-version", host.full, "--implementation", "cp", "--abi", host.tag]
    for tag in platform_tags():
        options += ["--platform", tag]
    return options


def is_pure(wheel_name: str) -> bool:
    """The wheel file carries no compiled code (:data:`PURE_TAGS`)."""
    return "-".join(wheel_name.removesuffix(".whl").split("-")[-3:]) in PURE_TAGS


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


def _tarball_path(root: Path, slug: str, host: HostPython) -> Path:
    return cache_dir(root) / f"{slug}-{host.tag}.tar"


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
    host: HostPython,
    constraints: tuple[str, ...] = (),
) -> Wheelhouse:
    """The Airflow wheelhouse for ``version`` on hosts running ``host`` (built now if the
    cache has none).

    ``constraints`` (pip constraint lines) bound the resolution; a wheelhouse built with
    them is cached under its own name, and none gives the same name as before they existed.
    """
    wanted = requirement(version, extras)
    slug = _slug(wanted)
    if constraints:
        digest = hashlib.sha256("\n".join(sorted(constraints)).encode()).hexdigest()[:8]
        slug += f"-c{digest}"
    tarball = _tarball_path(root, slug, host)
    _cached(tarball, lambda: build(wanted, index_url, tarball, host, constraints))
    return Wheelhouse(wanted, tarball, _sha256(tarball), _read_lock(tarball))


def ensure_locked_wheelhouse(
    root: Path, wanted: str, lock_file: Path, index_url: str, host: HostPython
) -> Wheelhouse:
    """The wheelhouse of ``wanted`` exactly as the committed hash lock ``lock_file`` (made
    for ``host``) pins it (built now if the cache has none).

    The cache name carries a digest of the lock: a regenerated lock is a new wheelhouse,
    hence a new venv on the hosts, even for the same version.
    """
    if not lock_file.is_file():
        raise WheelhouseError(f"{wanted}: no lock file {lock_file}")
    digest = hashlib.sha256(lock_file.read_bytes()).hexdigest()[:8]
    tarball = _tarball_path(root, f"{_slug(wanted)}-h{digest}", host)
    _cached(tarball, lambda: build_locked(wanted, lock_file, index_url, tarball, host))
    return Wheelhouse(wanted, tarball, _sha256(tarball), _read_lock(tarball), hashed=True)


def locked_requirements(lock_text: str) -> dict[str, str]:
    """``name==version`` -> ``name==version --hash=sha256:... ...`` for every requirement
    of a ``uv pip compile --generate-hashes`` file (names normalised).

    Markers are left out: the lock was resolved for one Python and platform, every entry
    applies to it (pip would judge a marker by the controller's interpreter instead).
    """
    hashes: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            current = None
            requirement_part = line.split(" --hash")[0].split(";")[0].rstrip(" \\").strip()
            if "==" in requirement_part:
                (pin,) = lock_lines_normalised([requirement_part])
                current = hashes.setdefault(pin, [])
        if current is not None:
            current.extend(_HASH.findall(line))
    return {pin: " ".join([pin, *found]) for pin, found in sorted(hashes.items())}


def locked_pins(lock_text: str) -> list[str]:
    """``name==version`` of every requirement of a ``uv pip compile --generate-hashes``
    file (continuation lines, hashes, markers and comments left out)."""
    return sorted(locked_requirements(lock_text))


def hash_lines(wheels: Path) -> list[str]:
    """``name==version --hash=sha256:...`` of every wheel in ``wheels``, sorted by name."""
    lines = []
    for path in sorted(wheels.glob("*.whl")):
        (pin,) = lock_lines([path.name])
        lines.append(f"{pin} --hash=sha256:{_sha256(path)}")
    return sorted(lines)


def _pip(arguments: list[str], index_url: str) -> subprocess.CompletedProcess[str]:
    """The controller's pip (whatever its Python), configured by ``index_url`` alone."""
    return subprocess.run(
        [sys.executable, "-m", "pip", *arguments],
        env=_hermetic_pip_env(index_url), capture_output=True, text=True, check=False,
    )  # fmt: skip


def _pip_failed(
    result: subprocess.CompletedProcess[str], what: str, wanted: str, index_url: str,
    lock_file: Path | None,
) -> WheelhouseError:  # fmt: skip
    output = (result.stderr + result.stdout).strip()
    tail = " / ".join(output.splitlines()[-6:])
    if lock_file is not None and "DO NOT MATCH THE HASHES" in output:
        return WheelhouseError(
            f"refused: an artifact of {wanted} on {index_url} is not the one whose hash is "
            f"committed in {lock_file} (nothing was cached): {tail}. If the change is "
            "expected, regenerate the lock with the command in its header and review the diff"
        )
    return WheelhouseError(f"{what} failed: {tail}")


def _target(host: HostPython) -> str:
    return f"the hosts' Python {host.full} ({host.tag}, manylinux {HOST_ARCH})"


def fetch_wheels(
    wanted: str,
    requirements: dict[str, str],
    host: HostPython,
    index_url: str,
    wheels: Path,
    lock_file: Path | None = None,
) -> list[str]:
    """Download a wheel for ``host`` of every requirement (``pin -> requirement line``)
    into ``wheels``; return the pins the index has no such wheel of (sdist only).

    pip stops at the first pin it finds no wheel for: that pin is set aside and the rest
    fetched again (the wheels already saved are kept). With ``lock_file``, every line
    carries its hashes and pip checks them (``--require-hashes``).
    """
    pending = dict(requirements)
    no_wheel: list[str] = []
    listing = wheels.parent / "wheels.txt"
    checked = ["--require-hashes"] if lock_file is not None else []
    while pending:
        listing.write_text("\n".join(pending[pin] for pin in sorted(pending)) + "\n")
        result = _pip(
            ["download", "--quiet", "--no-deps", "--only-binary=:all:",
             *pip_target_options(host), *checked, "--dest", str(wheels), "-r", str(listing)],
            index_url,
        )  # fmt: skip
        if result.returncode == 0:
            break
        missing = _NO_WHEEL.search(result.stderr + result.stdout)
        pin = lock_lines_normalised([missing[1]])[0] if missing else ""
        if pin not in pending:
            what = f"fetching the wheels of {wanted} for {_target(host)} from {index_url}"
            raise _pip_failed(result, what, wanted, index_url, lock_file)
        no_wheel.append(pin)
        del pending[pin]
    return sorted(no_wheel)


def build_pure_wheels(
    wanted: str,
    pins: list[str],
    requirements: dict[str, str],
    host: HostPython,
    index_url: str,
    wheels: Path,
    lock_file: Path | None = None,
) -> None:
    """Build a wheel into ``wheels`` of each of ``pins``, which the index has as an sdist
    only, with the controller's interpreter; refuse one that is not pure Python.

    The sdist is fetched for ``host`` (pip checks its Requires-Python against the hosts'
    Python, and its hash when ``lock_file`` is given), then built as it is: the
    controller's own Requires-Python does not matter, the wheel runs on the hosts.
    """
    work = wheels.parent
    sdists, built, listing = work / "sdists", work / "built", work / "sdists.txt"
    listing.write_text("\n".join(requirements[pin] for pin in pins) + "\n")
    names = ",".join(pin.partition("==")[0] for pin in pins)
    checked = ["--require-hashes"] if lock_file is not None else []
    fetched = _pip(
        ["download", "--quiet", "--no-deps", f"--no-binary={names}", *pip_target_options(host),
         *checked, "--dest", str(sdists), "-r", str(listing)],
        index_url,
    )  # fmt: skip
    if fetched.returncode != 0:
        what = (
            f"{', '.join(pins)}: no wheel for {_target(host)} on {index_url}; fetching "
            "the sdist instead"
        )
        raise _pip_failed(fetched, what, wanted, index_url, lock_file)
    made = _pip(
        ["wheel", "--quiet", "--no-deps", "--ignore-requires-python", "--wheel-dir",
         str(built), *(str(path) for path in sorted(sdists.iterdir()))],
        index_url,
    )  # fmt: skip
    if made.returncode != 0:
        what = (
            f"{', '.join(pins)}: no wheel for {_target(host)} on {index_url}; building "
            "the sdist into one on the controller"
        )
        raise _pip_failed(made, what, wanted, index_url, None)
    controller = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for path in sorted(built.glob("*.whl")):
        if not is_pure(path.name):
            (pin,) = lock_lines([path.name])
            raise WheelhouseError(
                f"{pin} (for {wanted}) has no wheel for {_target(host)} on {index_url}, "
                f"and its sdist builds {path.name}: compiled code for the controller's "
                f"Python {controller}, which hosts running Python {host.minor} cannot "
                f"load. Publish a {host.tag} manylinux wheel of it on the index, or pin a "
                "version that has one (nothing was cached)"
            )
        shutil.move(path, wheels / path.name)


def _fetch(
    wanted: str,
    requirements: dict[str, str],
    host: HostPython,
    index_url: str,
    wheels: Path,
    lock_file: Path | None = None,
) -> list[str]:
    """Every requirement as a wheel for ``host`` in ``wheels``: downloaded, or built here
    from its sdist when pure Python. Returns ``name==version`` of the wheels there."""
    wheels.mkdir(parents=True, exist_ok=True)
    no_wheel = fetch_wheels(wanted, requirements, host, index_url, wheels, lock_file)
    if no_wheel:
        build_pure_wheels(wanted, no_wheel, requirements, host, index_url, wheels, lock_file)
    return lock_lines(sorted(p.name for p in wheels.glob("*.whl")))


def build_locked(
    wanted: str, lock_file: Path, index_url: str, tarball: Path, host: HostPython
) -> None:
    """Fetch exactly the artifacts ``lock_file`` pins, for ``host``, each checked against
    its hash."""
    requirements = locked_requirements(lock_file.read_text())
    with tempfile.TemporaryDirectory(prefix="plinth-wheelhouse-", dir=tarball.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        built = _fetch(wanted, requirements, host, index_url, wheels, lock_file)
        pinned = sorted(requirements)
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


def resolve(
    wanted: str, index_url: str, host: HostPython, work: Path, constraints: tuple[str, ...] = ()
) -> list[str]:
    """``name==version`` of every package ``wanted`` needs on hosts running ``host``
    (pip can only resolve for the interpreter running it; uv resolves for another)."""
    wanted_file, resolved_file = work / "wanted.in", work / "resolved.txt"
    wanted_file.write_text(wanted + "\n")
    bounds: list[str] = []
    if constraints:
        constraints_file = work / "constraints.txt"
        constraints_file.write_text("\n".join(constraints) + "\n")
        bounds = ["--constraint", str(constraints_file)]
    _run(
        [sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-config",
         "--native-tls", "--no-header", "--no-annotate", "--index-url", index_url,
         "--python-version", host.full, "--python-platform", HOST_PLATFORM,
         *bounds, str(wanted_file), "-o", str(resolved_file)],
        f"resolving {wanted} for Python {host.full} from {index_url}",
        index_url,
    )  # fmt: skip
    return lock_lines_normalised(
        [line.strip() for line in resolved_file.read_text().splitlines() if "==" in line]
    )


def build(
    wanted: str,
    index_url: str,
    tarball: Path,
    host: HostPython,
    constraints: tuple[str, ...] = (),
) -> None:
    """Resolve ``wanted`` for ``host``, then fetch exactly that set as wheels for it."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plinth-wheelhouse-", dir=tarball.parent) as tmp:
        resolved = resolve(wanted, index_url, host, Path(tmp), constraints)
        wheels = Path(tmp) / "wheels"
        built = _fetch(wanted, {pin: pin for pin in resolved}, host, index_url, wheels)
        if built != resolved:
            missing = sorted(set(resolved) - set(built))
            extra = sorted(set(built) - set(resolved))
            raise WheelhouseError(
                f"the wheels of {wanted} differ from its resolution: missing "
                f"{', '.join(missing) or 'none'}; unexpected {', '.join(extra) or 'none'}"
            )
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
    """The wheelhouse the model's Airflow settings ask for, from the model's index, for
    the Python of the environment's Debian release (whatever the controller runs)."""
    from plinth.stacks import project_root

    settings = environment.components.airflow
    index = environment.package_sources.pypi_index
    return ensure_wheelhouse(
        project_root(), settings.version, settings.extras, index,
        HostPython.of(environment.debian), settings.constraints,
    )  # fmt: skip


def patroni_requirement(version: str) -> str:
    """Patroni with its etcd v3 client and psycopg 3 (``psycopg[binary]`` brings its own
    libpq, so the hosts need no libpq package)."""
    return f"patroni[etcd3,psycopg3]=={version}"


def patroni_lock_path(version: str, release: DebianRelease) -> Path:
    """The committed hash lock of Patroni ``version`` for ``release``'s Python:
    ``plinth/locks/patroni-<version>-<tag>.txt`` (``-cp313``), except for Debian 12's
    cp311, whose locks predate the releases and keep the name the model validates,
    ``patroni-<version>.txt`` (:meth:`PatroniSettings.lock_path`). Two releases with the
    same Python share a lock."""
    return PatroniSettings.lock_path(version, release.python_tag)


def patroni_lock_command(version: str, release: DebianRelease) -> str:
    """The command that generates :func:`patroni_lock_path` (it heads the file), run from
    the checkout's root."""
    return (
        f"echo '{patroni_requirement(version)}' | uv pip compile --generate-hashes "
        f"--python-version {release.python_full} --python-platform {HOST_PLATFORM} - "
        f"-o plinth/locks/{patroni_lock_path(version, release).name}"
    )


def patroni_wheelhouse(environment: Environment) -> Wheelhouse:
    """The Patroni wheelhouse of ``components.patroni.version`` for the environment's
    release, from its committed hash lock (:func:`patroni_lock_path`) and the model's
    index."""
    from plinth.stacks import project_root

    version, release = environment.components.patroni.version, environment.debian
    lock = patroni_lock_path(version, release)
    if not lock.is_file():
        raise WheelhouseError(
            f"no hash lock for Patroni {version} on Debian {release.number} "
            f"({release.codename}, Python {release.python_full}): commit "
            f"plinth/locks/{lock.name}, generated with: {patroni_lock_command(version, release)}"
        )
    return ensure_locked_wheelhouse(
        project_root(), patroni_requirement(version), lock,
        environment.package_sources.pypi_index, HostPython.of(release),
    )  # fmt: skip
