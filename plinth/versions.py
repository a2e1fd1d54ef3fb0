"""``plinth versions``: what each host runs against what its environment's Debian release
and model say it should run (pure: the readings come in, rows, verdicts and a summary go
out; the SSH reading is the CLI's, with :mod:`facts.versions`).

Two kinds of daemon are checked:

* Debian's packages a host's roles install that carry a daemon
  (``DebianRelease.daemon_lines``): the installed Debian version's upstream part must be
  on the release table's line (``3.4.23-4+b6`` is on ``3.4``).
* the daemons plinth installs from its own wheelhouses (Patroni on ``postgresql`` hosts,
  Airflow on Airflow hosts): the release in the venv ``current`` points at must be the
  model's exact version.

A verdict is ``ok``, ``DIFFERS`` (installed, not what is expected) or ``MISSING`` (the
host should have it and does not).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plinth.model import AIRFLOW_ROLES, Environment, Role
from plinth.releases import DebianRelease, on_line, upstream_version

OK = "ok"
DIFFERS = "DIFFERS"
MISSING = "MISSING"

DEBIAN = "debian"
WHEELHOUSE = "wheelhouse"

PATRONI = "patroni"
AIRFLOW = "airflow"
"""The wheelhouse daemons, by the names the table and :mod:`facts.versions` use."""

_AIRFLOW_ROLES = frozenset(role.value for role in AIRFLOW_ROLES)


@dataclass(frozen=True)
class Expected:
    """One daemon a host should run."""

    daemon: str
    """A Debian package (``etcd-server``) or a wheelhouse daemon (``patroni``)."""
    source: str
    """``debian`` or ``wheelhouse``."""
    expected: str
    """The upstream line of a Debian package (``3.4``); a wheelhouse daemon's exact
    release (``4.1.5``)."""


@dataclass(frozen=True)
class HostReading:
    """What was read on one host."""

    packages: Mapping[str, Collection[str]]
    """Installed Debian packages: name -> Debian versions (pyinfra's ``DebPackages``)."""
    wheelhouse: Mapping[str, str | None] = field(default_factory=dict)
    """Wheelhouse daemon -> release installed in its ``current`` venv (None: none)."""


@dataclass(frozen=True)
class Row:
    """One daemon of one host, judged."""

    daemon: str
    source: str
    installed: str | None
    """The Debian version(s) (``3.4.23-4+b6``) or the wheelhouse release; None if absent."""
    upstream: str | None
    """The upstream part of ``installed`` (``3.4.23``)."""
    expected: str
    verdict: str

    def as_json(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon,
            "source": self.source,
            "installed": self.installed,
            "upstream": self.upstream,
            "expected": self.expected,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class HostVersions:
    datacenter: str
    host: str
    rows: tuple[Row, ...]

    @property
    def problems(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.verdict != OK)

    @property
    def ok(self) -> bool:
        return not self.problems


def expected_daemons(
    release: DebianRelease, roles: Iterable[str], *, patroni: str, airflow: str
) -> tuple[Expected, ...]:
    """The daemons a host of ``roles`` should run on ``release``: the release table's
    packages its roles install (in the table's order), then the wheelhouse daemons
    (``patroni``, ``airflow``: the model's releases of each)."""
    names = {str(role) for role in roles}
    installs = {package for role in names for package in release.role_packages.get(role, ())}
    wanted = [
        Expected(package, DEBIAN, line)
        for package, line in release.daemon_lines.items()
        if package in installs
    ]
    if Role.POSTGRESQL.value in names:
        wanted.append(Expected(PATRONI, WHEELHOUSE, patroni))
    if names & _AIRFLOW_ROLES:
        wanted.append(Expected(AIRFLOW, WHEELHOUSE, airflow))
    return tuple(wanted)


def expected_on(env: Environment, roles: Iterable[str]) -> tuple[Expected, ...]:
    """:func:`expected_daemons` for a host of ``env``."""
    return expected_daemons(
        env.debian,
        roles,
        patroni=env.components.patroni.version,
        airflow=env.components.airflow.version,
    )


def judge(expected: Expected, reading: HostReading) -> Row:
    """One daemon's row: what is installed against what is expected."""
    if expected.source == WHEELHOUSE:
        release = reading.wheelhouse.get(expected.daemon)
        if release is None:
            return Row(expected.daemon, WHEELHOUSE, None, None, expected.expected, MISSING)
        verdict = OK if release == expected.expected else DIFFERS
        return Row(expected.daemon, WHEELHOUSE, release, release, expected.expected, verdict)
    versions = sorted(reading.packages.get(expected.daemon, ()))
    if not versions:
        return Row(expected.daemon, DEBIAN, None, None, expected.expected, MISSING)
    # Several versions only with multiarch: every one must be on the line.
    upstreams = [upstream_version(v) for v in versions]
    verdict = OK if all(on_line(u, expected.expected) for u in upstreams) else DIFFERS
    return Row(
        expected.daemon,
        DEBIAN,
        ", ".join(versions),
        ", ".join(dict.fromkeys(upstreams)),
        expected.expected,
        verdict,
    )


def check_host(
    datacenter: str, host: str, expected: Iterable[Expected], reading: HostReading
) -> HostVersions:
    return HostVersions(datacenter, host, tuple(judge(e, reading) for e in expected))


@dataclass(frozen=True)
class VersionsReport:
    """Every host checked, per datacenter, in the environment's order."""

    environment: str
    release: DebianRelease
    hosts: tuple[HostVersions, ...]

    @property
    def differing(self) -> tuple[HostVersions, ...]:
        return tuple(h for h in self.hosts if not h.ok)

    @property
    def exit_code(self) -> int:
        """0 when every daemon of every host is ok, 1 when anything DIFFERS or is MISSING."""
        return 1 if self.differing else 0

    @property
    def datacenters(self) -> list[str]:
        return list(dict.fromkeys(h.datacenter for h in self.hosts))

    def summary(self) -> str:
        differing = self.differing
        if not differing:
            return f"all {len(self.hosts)} hosts run the release table's lines"
        parts = [
            f"{h.host} ({', '.join(f'{r.daemon} {r.verdict}' for r in h.problems)})"
            for h in differing
        ]
        return f"{len(differing)} host(s) differ: {'; '.join(parts)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "release": {"codename": self.release.codename, "number": self.release.number},
            "datacenters": [
                {
                    "name": dc,
                    "hosts": [
                        {"name": h.host, "ok": h.ok, "daemons": [r.as_json() for r in h.rows]}
                        for h in self.hosts
                        if h.datacenter == dc
                    ],
                }
                for dc in self.datacenters
            ],
            "ok": not self.differing,
            "differing_hosts": [h.host for h in self.differing],
            "summary": self.summary(),
        }

    def render(self) -> str:
        """A table per datacenter, then the summary line."""
        release = f"Debian {self.release.number} ({self.release.codename})"
        header = ("host", "daemon", "installed", "upstream", "expected", "verdict")
        lines: list[str] = []
        for dc in self.datacenters:
            table: list[tuple[str, ...]] = [header]
            for h in self.hosts:
                if h.datacenter != dc:
                    continue
                if not h.rows:
                    table.append((h.host, "(no daemon to check)", "", "", "", ""))
                for r in h.rows:
                    installed, upstream = r.installed or "-", r.upstream or "-"
                    table.append((h.host, r.daemon, installed, upstream, r.expected, r.verdict))
            widths = [max(len(row[i]) for row in table) for i in range(len(header))]
            lines.append(f"{self.environment}-{dc} on {release}:")
            for row in table:
                cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                lines.append(("  " + "  ".join(cells)).rstrip())
            lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)


class UnreadHost(ValueError):
    """A host of the environment with no reading: never a silently shorter table."""


def build_report(
    env: Environment,
    readings: Mapping[str, HostReading],
    datacenters: Sequence[str] | None = None,
) -> VersionsReport:
    """The report of ``env``'s hosts in ``datacenters`` (default: all), from ``readings``
    (host name -> reading). A host without a reading raises :class:`UnreadHost`."""
    names = list(datacenters) if datacenters is not None else [dc.name for dc in env.datacenters]
    hosts = [h for dc in names for h in env.hosts_in(dc)]
    unread = [h.name for h in hosts if h.name not in readings]
    if unread:
        raise UnreadHost(f"no reading of {', '.join(unread)}")
    return VersionsReport(
        env.name,
        env.debian,
        tuple(
            check_host(h.datacenter, h.name, expected_on(env, h.roles), readings[h.name])
            for h in hosts
        ),
    )
