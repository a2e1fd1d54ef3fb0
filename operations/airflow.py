"""Apache Airflow on the stateless tier: the offline install (issue 7, first part).

The controller builds the wheelhouse (:mod:`plinth.wheelhouse`); each Airflow host
receives it as one tar and installs it into a virtualenv named after the wheelhouse's
content hash, ``/opt/airflow/venv-<tag>``, with ``pip install --no-index``. ``current``
points at the venv in use. A new version or extra builds a new venv beside the old one,
so what runs keeps running until the units are switched; the same wheelhouse on a second
run installs nothing (the venv's marker holds the hash it was built from).

Not here yet: configuration, the database, the systemd units and rolling (see
docs/components/airflow.md).
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from plinth.model import Role
from plinth.reasons import explain_change
from plinth.wheelhouse import LOCK_NAME, Wheelhouse

AIRFLOW_ROLES = (
    Role.AIRFLOW_API,
    Role.AIRFLOW_SCHEDULER,
    Role.AIRFLOW_DAG_PROCESSOR,
    Role.AIRFLOW_TRIGGERER,
    Role.AIRFLOW_WORKER,
)
USER = "airflow"
HOME = "/var/lib/airflow"
PREFIX = "/opt/airflow"
MARKER = ".plinth-wheelhouse"


@dataclass(frozen=True)
class AirflowInstall:
    wheelhouse: Wheelhouse

    @property
    def remote_tarball(self) -> str:
        return f"{PREFIX}/wheelhouse/{self.wheelhouse.tarball.name}"

    @property
    def venv(self) -> str:
        return f"{PREFIX}/venv-{self.wheelhouse.tag}"


def has_airflow(roles: tuple[Role, ...] | list[Role]) -> bool:
    return any(role in roles for role in AIRFLOW_ROLES)


@operation()
def venv_from_wheelhouse(spec: AirflowInstall) -> Generator[StringCommand, None, None]:
    """Install the wheelhouse into its own venv, offline; nothing when already done."""
    marker = host.get_fact(File, path=f"{spec.venv}/{MARKER}")
    if marker:
        host.noop(f"{spec.wheelhouse.requirement} already installed in {spec.venv}")
        return
    explain_change(f"install {spec.wheelhouse.requirement} offline into {spec.venv}")
    q = shlex.quote
    staging = f"{PREFIX}/wheelhouse/unpacked-{spec.wheelhouse.tag}"
    # Built in place (scripts carry the venv's absolute path in their shebang), the
    # marker written last: an interrupted install has no marker and is redone from
    # scratch by the next run, never taken as done.
    yield StringCommand(
        f"set -e; rm -rf {q(staging)} {q(spec.venv)}; mkdir -p {q(staging)}; "
        f"tar -xf {q(spec.remote_tarball)} -C {q(staging)}; "
        f"python3 -m venv {q(spec.venv)}; "
        f"{q(spec.venv)}/bin/pip install --quiet --no-index --no-cache-dir "
        f"--disable-pip-version-check --find-links {q(staging)} "
        f"--constraint {q(staging + '/' + LOCK_NAME)} {q(spec.wheelhouse.requirement)}; "
        f"echo {q(spec.wheelhouse.sha256)} > {q(spec.venv + '/' + MARKER)}; "
        f"rm -rf {q(staging)}"
    )


@deploy("Airflow installed offline")
def airflow_installed(spec: AirflowInstall) -> None:
    apt.packages(name="python3-venv for Airflow's virtualenv", packages=["python3-venv"])
    server.group(name="airflow group", group=USER, system=True)
    server.user(
        name="airflow user",
        user=USER,
        group=USER,
        home=HOME,
        shell="/usr/sbin/nologin",
        system=True,
        ensure_home=True,
    )
    files.directory(name="Airflow wheelhouse directory", path=f"{PREFIX}/wheelhouse", mode="755")
    files.put(
        name=f"Airflow wheelhouse {spec.wheelhouse.tarball.name}",
        src=str(spec.wheelhouse.tarball),
        dest=spec.remote_tarball,
        mode="644",
    )
    venv_from_wheelhouse(name="Airflow virtualenv (pip --no-index)", spec=spec)
    files.link(
        name="Airflow venv in use",
        path=f"{PREFIX}/current",
        target=spec.venv,
    )
