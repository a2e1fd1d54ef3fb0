"""Patroni from plinth's hash-checked wheelhouse: the venv, ``current``, plinth's unit and
``patronictl`` on ``PATH``. Installing restarts nothing (see :mod:`.roll`)."""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from operations.patroni.settings import CONFIG, PATRONICTL, PREFIX, STOP_TIMEOUT_SECONDS, UNIT
from operations.wheelhouse import VenvInstall, venv_from_wheelhouse
from plinth.render import render_template


@dataclass(frozen=True)
class PatroniInstall(VenvInstall):
    """Patroni's wheelhouse on a host: ``/opt/patroni/venv-<tag>``, ``current`` → in use."""

    prefix: str = PREFIX

    @property
    def patroni(self) -> str:
        return f"{self.current}/bin/patroni"

    @property
    def patronictl(self) -> str:
        return f"{self.current}/bin/patronictl"


def render_unit(install: PatroniInstall, version: str) -> str:
    """plinth's ``patroni.service`` (it shadows Debian's unit of the same name)."""
    return render_template(
        "patroni/etc/systemd/system/patroni.service.j2",
        version=version,
        venv_current=install.current,
        config=CONFIG,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )


def config_check(install: PatroniInstall) -> str:
    """``checked_file`` check of config.yml: Patroni's own validator, from the venv. The
    listen ports are ignored (the running member holds them)."""
    return f"{install.patroni} --validate-config --ignore-listen-port {{path}}"


@deploy("Patroni installed offline")
def patroni_installed(install: PatroniInstall, version: str) -> None:
    """The venv, ``current``, the unit and ``patronictl`` on ``PATH``; restarts nothing.

    A running Patroni (Debian's, or an older venv's) keeps running: the unit's new
    definition is loaded by ``daemon-reload`` and used at the next start, which is
    :func:`release_rolled`'s business.
    """
    files.directory(name="Patroni wheelhouse directory", path=f"{PREFIX}/wheelhouse", mode="755")
    files.put(
        name=f"Patroni wheelhouse {install.wheelhouse.tarball.name}",
        src=str(install.wheelhouse.tarball),
        dest=install.remote_tarball,
        mode="644",
    )
    venv_from_wheelhouse(name="Patroni virtualenv (pip --no-index --require-hashes)", spec=install)
    files.link(name="Patroni venv in use", path=install.current, target=install.venv)
    files.link(name="patronictl on PATH", path=PATRONICTL, target=install.patronictl)
    unit = files.put(
        name="Patroni systemd unit",
        src=StringIO(render_unit(install, version)),
        dest=UNIT,
        mode="644",
    )
    systemd.daemon_reload(name="systemd reloaded for the Patroni unit", _if=unit.did_change)
