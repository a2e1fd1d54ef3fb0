"""Facts of ``plinth versions``: the release of each daemon plinth installs from its own
wheelhouse, read from the venv the host's ``current`` symlink points at (the one its unit
runs from, :mod:`operations.wheelhouse`).

The release is the ``Version:`` of the distribution's ``*.dist-info/METADATA`` in that
venv: no interpreter is started (``airflow version`` would import all of Airflow).
Debian's packages are read with pyinfra's ``DebPackages``.
"""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MISSING = "__PLINTH_VERSIONS_MISSING__"

PATRONI_PREFIX = "/opt/patroni"
"""``operations.patroni.settings.PREFIX`` (a fact cannot import operations)."""
AIRFLOW_PREFIX = "/opt/airflow"
"""``operations.airflow.install.PREFIX``."""

WHEELHOUSE_VENVS: dict[str, tuple[str, str]] = {
    "patroni": (PATRONI_PREFIX, "patroni"),
    "airflow": (AIRFLOW_PREFIX, "apache-airflow"),
}
"""Wheelhouse daemon -> (install prefix, the distribution whose release it is)."""


def dist_info_name(distribution: str) -> str:
    """The distribution's name as wheels spell their ``.dist-info`` directory:
    ``apache-airflow`` -> ``apache_airflow`` (matched case-insensitively)."""
    return re.sub(r"[-_.]+", "_", distribution).lower()


def _one_venv(daemon: str, prefix: str, distribution: str) -> str:
    q = shlex.quote
    pattern = f"*/site-packages/{dist_info_name(distribution)}-*.dist-info/METADATA"
    return (
        f'if d=$(readlink -e {q(prefix + "/current")}) && [ -d "$d" ]; then '
        f'v=$(find "$d/lib" -mindepth 4 -maxdepth 4 -ipath {q(pattern)} 2>/dev/null '
        "| head -n 1 | xargs -r sed -n 's/^Version: *//p' | head -n 1); "
        f'printf \'%s\\t%s\\t%s\\n\' {q(daemon)} "$d" "${{v:-{MISSING}}}"; '
        f"else printf '%s\\t\\t%s\\n' {q(daemon)} {MISSING}; fi"
    )


class WheelhouseReleases(FactBase[dict[str, str | None]]):
    """Wheelhouse daemon -> the release installed in its ``current`` venv; None when the
    host has no ``current`` venv or no such distribution in it.

    ``venvs``: ``(daemon, prefix, distribution)`` triples, e.g. from
    :data:`WHEELHOUSE_VENVS`.
    """

    def command(self, venvs: tuple[tuple[str, str, str], ...]) -> str:
        return "; ".join([*(_one_venv(*venv) for venv in venvs), "true"])

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        return parse_wheelhouse_releases(output)


def parse_wheelhouse_releases(output: list[str]) -> dict[str, str | None]:
    releases: dict[str, str | None] = {}
    for line in output:
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 3 or not fields[0]:
            raise FactProcessError(f"unexpected wheelhouse release line: {line!r}")
        daemon, _, release = fields
        release = release.strip()
        releases[daemon] = None if release in ("", MISSING) else release
    return releases
