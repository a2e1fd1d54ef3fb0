"""Airflow's offline install: the ``airflow`` user and the wheelhouse venv.

The controller builds the wheelhouse (:mod:`plinth.wheelhouse`); each Airflow host
receives it as one tar and installs it into a virtualenv named after the wheelhouse's
content hash, ``/opt/airflow/venv-<tag>``, with ``pip install --no-index``. ``current``
points at the venv in use. A new version or extra builds a new venv beside the old one,
so what runs keeps running until the units are switched; the same wheelhouse on a second
run installs nothing (the venv's marker holds the hash it was built from).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from operations.wheelhouse import VenvInstall, venv_from_wheelhouse

USER = "airflow"
HOME = "/var/lib/airflow"
PREFIX = "/opt/airflow"


@dataclass(frozen=True)
class AirflowInstall(VenvInstall):
    """Airflow's wheelhouse on a host: ``/opt/airflow/venv-<tag>``, ``current`` → in use."""

    prefix: str = PREFIX


@deploy("Airflow user")
def airflow_user() -> None:
    """The ``airflow`` system user and group (before host TLS when the services are on:
    the Airflow certificates' keys belong to it)."""
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


@deploy("Airflow installed offline")
def airflow_installed(spec: AirflowInstall) -> None:
    apt.packages(name="python3-venv for Airflow's virtualenv", packages=["python3-venv"])
    airflow_user()
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
