"""A controller-built wheelhouse installed into its own virtualenv on a host, offline.

The host half of :mod:`plinth.wheelhouse`, shared by Airflow and Patroni. The venv is named
after the wheelhouse's content hash, ``<prefix>/venv-<tag>``, so a new version builds a new
venv beside the one in use and nothing running is touched; ``<prefix>/current`` is switched
by the caller. The same wheelhouse on a second run installs nothing (a marker in the venv
holds the hash it was built from).
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.files import File

from plinth.reasons import explain_change
from plinth.wheelhouse import HASHES_NAME, LOCK_NAME, Wheelhouse

MARKER = ".plinth-wheelhouse"


@dataclass(frozen=True)
class VenvInstall:
    """Where one wheelhouse lands on a host."""

    wheelhouse: Wheelhouse
    prefix: str
    """``/opt/<component>``: holds ``wheelhouse/``, the ``venv-<tag>`` dirs and ``current``."""

    @property
    def remote_tarball(self) -> str:
        return f"{self.prefix}/wheelhouse/{self.wheelhouse.tarball.name}"

    @property
    def venv(self) -> str:
        return f"{self.prefix}/venv-{self.wheelhouse.tag}"

    @property
    def current(self) -> str:
        """The symlink to the venv in use (units and wrappers run from it)."""
        return f"{self.prefix}/current"


def install_command(spec: VenvInstall) -> str:
    """The shell command that builds ``spec.venv`` from the uploaded tar, offline."""
    q = shlex.quote
    staging = f"{spec.prefix}/wheelhouse/unpacked-{spec.wheelhouse.tag}"
    if spec.wheelhouse.hashed:
        # Every wheel checked against the sha256 the controller recorded when it built
        # the tar from the committed hash lock.
        selection = f"--require-hashes -r {q(staging + '/' + HASHES_NAME)}"
    else:
        selection = f"--constraint {q(staging + '/' + LOCK_NAME)} {q(spec.wheelhouse.requirement)}"
    # Built in place (scripts carry the venv's absolute path in their shebang), the
    # marker written last: an interrupted install has no marker and is redone from
    # scratch by the next run, never taken as done.
    return (
        f"set -e; rm -rf {q(staging)} {q(spec.venv)}; mkdir -p {q(staging)}; "
        f"tar -xf {q(spec.remote_tarball)} -C {q(staging)}; "
        f"python3 -m venv {q(spec.venv)}; "
        f"{q(spec.venv)}/bin/pip install --quiet --no-index --no-cache-dir "
        f"--disable-pip-version-check --find-links {q(staging)} {selection}; "
        f"echo {q(spec.wheelhouse.sha256)} > {q(spec.venv + '/' + MARKER)}; "
        f"rm -rf {q(staging)}"
    )


@operation()
def venv_from_wheelhouse(spec: VenvInstall) -> Generator[StringCommand, None, None]:
    """Install the wheelhouse into its own venv, offline; nothing when already done.

    Does not touch ``current`` nor any running process.
    """
    marker = host.get_fact(File, path=f"{spec.venv}/{MARKER}")
    if marker:
        host.noop(f"{spec.wheelhouse.requirement} already installed in {spec.venv}")
        return
    explain_change(f"install {spec.wheelhouse.requirement} offline into {spec.venv}")
    yield StringCommand(install_command(spec))
