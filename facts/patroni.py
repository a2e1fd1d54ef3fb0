"""Facts of Patroni: the live cluster (``/cluster``), this member (``/patroni``) and the
dynamic configuration (``/config``), read from the local REST API over mutual TLS.

Patroni 3.x calls the primary ``master`` in ``/patroni``; 4.x calls it ``primary``. Both
are normalised to ``primary``; in ``/cluster`` the lock holder is ``leader`` on both.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MISSING = "__PLINTH_PATRONI_MISSING__"
UNREACHABLE = "__PLINTH_PATRONI_UNREACHABLE__"
_CLUSTER = "--plinth-patroni-cluster--"
_SELF = "--plinth-patroni-self--"

LEADER_ROLES = ("leader", "standby_leader", "master", "primary")
HEALTHY_REPLICA_STATES = ("streaming", "running")


def normalise_role(role: str) -> str:
    """Patroni 3.x ``master`` and 4.x ``primary`` are the same role."""
    return "primary" if role in ("master", "primary") else role


@dataclass(frozen=True)
class PatroniMember:
    name: str
    host: str
    role: str
    """``leader``, ``standby_leader``, ``sync_standby`` or ``replica``."""
    state: str
    """``running``, ``streaming``, ``stopped``, ``starting``, ``creating replica``..."""
    timeline: int | None
    lag: int | None
    """Bytes behind the leader; None when Patroni does not know (``unknown``)."""
    pending_restart: bool

    @property
    def is_leader(self) -> bool:
        return self.role in LEADER_ROLES


@dataclass(frozen=True)
class PatroniClusterState:
    """A Patroni cluster as one member's REST API sees it."""

    scope: str | None
    members: tuple[PatroniMember, ...]
    local_role: str | None
    """This member's role from ``/patroni`` (``primary``, ``replica``, ``standby_leader``)."""
    local_state: str | None
    paused: bool = False
    local_wal: int | None = None
    """This member's WAL position in bytes: written (primary) or replayed (replica,
    standby leader); comparing a standby leader's with the active primary's gives the
    standby site's lag."""
    local_version: str | None = None
    """The Patroni release this member runs (``/patroni``: ``patroni.version``)."""

    @property
    def leader(self) -> PatroniMember | None:
        leaders = [m for m in self.members if m.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def replicas(self) -> list[PatroniMember]:
        return [m for m in self.members if not m.is_leader]

    def member(self, name: str) -> PatroniMember | None:
        return next((m for m in self.members if m.name == name), None)

    def problems(self, expected: tuple[str, ...] = (), max_lag: int | None = None) -> list[str]:
        """Why the cluster is not ready for a rolling step (empty when it is).

        + expected: member names that must all be present
        + max_lag: bytes a replica may lag (None: not checked)
        """
        out = []
        if self.leader is None:
            out.append("no leader")
        elif self.leader.state != "running":
            out.append(f"leader {self.leader.name} is {self.leader.state}")
        if self.paused:
            out.append("cluster is paused (maintenance mode)")
        present = {m.name for m in self.members}
        out += [f"member {name} is missing (stopped?)" for name in expected if name not in present]
        for m in self.replicas:
            if m.state not in HEALTHY_REPLICA_STATES:
                out.append(f"replica {m.name} is {m.state}")
            elif max_lag is not None and (m.lag is None or m.lag > max_lag):
                lag = "unknown" if m.lag is None else f"{m.lag} bytes"
                out.append(f"replica {m.name} lags {lag}")
        return out


def _curl(ca: str, cert: str, key: str, url: str) -> str:
    q = shlex.quote
    return f"curl -s -m 4 --cacert {q(ca)} --cert {q(cert)} --key {q(key)} {q(url)}"


def patroni_cluster_command(ca: str, cert: str, key: str, api: str) -> str:
    """Shell command printing ``/cluster`` and ``/patroni`` of the member at ``api``."""
    return (
        f"command -v curl >/dev/null 2>&1 && [ -f {shlex.quote(cert)} ] || "
        f"{{ echo {MISSING}; exit 0; }}; "
        f"echo {_CLUSTER}; {_curl(ca, cert, key, api + '/cluster')} || echo {UNREACHABLE}; echo; "
        f"echo {_SELF}; {_curl(ca, cert, key, api + '/patroni')} || echo {UNREACHABLE}; echo"
    )


def _document(lines: list[str], what: str) -> dict[str, Any] | None:
    text = "\n".join(lines).strip()
    if not text or UNREACHABLE in text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise FactProcessError(f"Patroni {what}: not JSON: {text[:120]!r}") from None
    if not isinstance(data, dict):
        raise FactProcessError(f"Patroni {what}: not a JSON object")
    return data


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_cluster_document(
    cluster: dict[str, Any], local: dict[str, Any] | None
) -> PatroniClusterState:
    members = []
    for raw in cluster.get("members") or []:
        members.append(
            PatroniMember(
                name=str(raw.get("name")),
                host=str(raw.get("host", "")),
                role=normalise_role(str(raw.get("role", ""))),
                state=str(raw.get("state", "unknown")),
                timeline=_int(raw.get("timeline")),
                lag=0 if raw.get("role") in LEADER_ROLES else _int(raw.get("lag")),
                pending_restart=bool(raw.get("pending_restart")),
            )
        )
    return PatroniClusterState(
        scope=cluster.get("scope") or ((local or {}).get("patroni") or {}).get("scope"),
        members=tuple(sorted(members, key=lambda m: m.name)),
        local_role=normalise_role(str(local["role"])) if local and "role" in local else None,
        local_state=str(local["state"]) if local and "state" in local else None,
        paused=bool(cluster.get("pause") or (local or {}).get("pause")),
        local_wal=_wal_position(local),
        local_version=_patroni_version(local),
    )


def _patroni_version(local: dict[str, Any] | None) -> str | None:
    version = ((local or {}).get("patroni") or {}).get("version")
    return str(version) if version else None


def _wal_position(local: dict[str, Any] | None) -> int | None:
    xlog = (local or {}).get("xlog")
    if not isinstance(xlog, dict):
        return None
    return _int(xlog.get("location", xlog.get("replayed_location")))


def parse_patroni_cluster(output: list[str]) -> PatroniClusterState | None:
    """Parse :func:`patroni_cluster_command`'s output; None when Patroni is not answering."""
    if output and output[0].strip() == MISSING:
        return None
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.strip() in (_CLUSTER, _SELF):
            current = sections.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line)
    if set(sections) != {_CLUSTER, _SELF}:
        raise FactProcessError("Patroni fact output is missing a section")
    cluster = _document(sections[_CLUSTER], "/cluster")
    if cluster is None:
        return None
    return parse_cluster_document(cluster, _document(sections[_SELF], "/patroni"))


class PatroniCluster(FactBase[PatroniClusterState | None]):
    """The Patroni cluster seen by the member whose REST API is ``api`` (mutual TLS).

    + ca, cert, key: the client certificate files (``verify_client: required``)
    + api: ``https://<address>:<port>``

    None when Patroni is not installed, not configured or not answering.
    """

    def command(self, ca: str, cert: str, key: str, api: str) -> str:
        return patroni_cluster_command(ca, cert, key, api)

    @staticmethod
    def default() -> PatroniClusterState | None:
        return None

    def process(self, output: list[str]) -> PatroniClusterState | None:
        return parse_patroni_cluster(output)


class _PatroniDocument(FactBase[dict[str, Any] | None]):
    """One JSON document of this member's REST API (``path``); None when Patroni does
    not answer or its client certificate is not there yet.

    + ca, cert, key: the client certificate files (``verify_client: required``)
    + api: ``https://<address>:<port>``
    """

    path = ""

    def command(self, ca: str, cert: str, key: str, api: str) -> str:
        return (
            f"command -v curl >/dev/null 2>&1 && [ -f {shlex.quote(cert)} ] || "
            f"{{ echo {MISSING}; exit 0; }}; {_curl(ca, cert, key, api + self.path)} "
            f"|| echo {UNREACHABLE}"
        )

    @staticmethod
    def default() -> dict[str, Any] | None:
        return None

    def process(self, output: list[str]) -> dict[str, Any] | None:
        if output and output[0].strip() == MISSING:
            return None
        return _document(output, self.path)


class PatroniDynamicConfig(_PatroniDocument):
    """Patroni's dynamic configuration (``GET /config``, kept in etcd); None if unreachable."""

    path = "/config"


class PostgresRoles(FactBase[set[str] | None]):
    """Login roles of the local PostgreSQL (over its Unix socket, as ``postgres``);
    None when PostgreSQL does not answer."""

    def command(self, port: int) -> str:
        return (
            f"command -v psql >/dev/null 2>&1 && [ -S /var/run/postgresql/.s.PGSQL.{port} ] || "
            f"{{ echo {MISSING}; exit 0; }}; "
            f"cd / && runuser -u postgres -- psql -p {port} -XAtqc "
            "'select rolname from pg_roles where rolcanlogin' "
            f"2>/dev/null || echo {MISSING}"
        )

    @staticmethod
    def default() -> set[str] | None:
        return None

    def process(self, output: list[str]) -> set[str] | None:
        if MISSING in (line.strip() for line in output):
            return None
        return {line.strip() for line in output if line.strip()}


class PostgresDatabases(FactBase[dict[str, str] | None]):
    """``{database: owner}`` of the local PostgreSQL (over its Unix socket, as
    ``postgres``); None when PostgreSQL does not answer."""

    def command(self, port: int) -> str:
        return (
            f"command -v psql >/dev/null 2>&1 && [ -S /var/run/postgresql/.s.PGSQL.{port} ] || "
            f"{{ echo {MISSING}; exit 0; }}; "
            f"cd / && runuser -u postgres -- psql -p {port} -XAtqc "
            "'select datname, pg_get_userbyid(datdba) from pg_database' -F ' ' "
            f"2>/dev/null || echo {MISSING}"
        )

    @staticmethod
    def default() -> dict[str, str] | None:
        return None

    def process(self, output: list[str]) -> dict[str, str] | None:
        if MISSING in (line.strip() for line in output):
            return None
        found: dict[str, str] = {}
        for line in output:
            name, _, owner = line.strip().partition(" ")
            if name:
                found[name] = owner
        return found


class PatroniSelf(_PatroniDocument):
    """This member's own ``GET /patroni`` document as Patroni sends it (role, state,
    timeline, ``xlog`` positions, ``replication_state``...): what
    :func:`plinth.geo.observe.pg_member` reads. None when Patroni does not answer."""

    path = "/patroni"
