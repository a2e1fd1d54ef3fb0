"""Facts of etcd: the live state of the DC's cluster, read over TLS with ``etcdctl -w json``.

``member list``, ``endpoint status`` and ``endpoint health`` are asked of every member's
client URL (not ``--cluster``: a stopped local member must not hide the others). IDs are
decimal uint64 in etcdctl's JSON; they are shown in hex, as ``etcdctl member list`` and
``member remove`` spell them.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MISSING = "__PLINTH_ETCDCTL_MISSING__"
_MEMBERS = "--plinth-etcd-members--"
_STATUS = "--plinth-etcd-status--"
_HEALTH = "--plinth-etcd-health--"


@dataclass(frozen=True)
class EtcdMember:
    name: str
    """Member name (the host name); empty for a member added but never started."""
    id: str
    """Member id in hex, as ``etcdctl member list`` prints it."""
    client_url: str | None
    healthy: bool
    """The member answered a health check (a quorum read) in time."""
    is_leader: bool
    raft_index: int | None
    raft_term: int | None
    error: str | None = None
    """Why the member is unhealthy or unreachable."""


@dataclass(frozen=True)
class EtcdClusterState:
    """One DC's etcd cluster as its members describe it now."""

    members: tuple[EtcdMember, ...]

    @property
    def leader(self) -> str | None:
        leaders = [m.name for m in self.members if m.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    @property
    def healthy(self) -> bool:
        return bool(self.members) and all(m.healthy for m in self.members)

    def member(self, name: str) -> EtcdMember | None:
        return next((m for m in self.members if m.name == name), None)

    def problems(self) -> list[str]:
        """One line per reason the cluster is not fully healthy (empty when it is)."""
        if not self.members:
            return ["no member answered"]
        out = [
            f"member {m.name or m.id} unhealthy: {m.error or 'no answer'}"
            for m in self.members
            if not m.healthy
        ]
        if self.leader is None:
            out.append("no single leader")
        return out


def etcdctl_environment(cacert: str, cert: str, key: str, endpoints: tuple[str, ...]) -> str:
    """Shell ``export`` of etcdctl's TLS settings (paths only, never key material)."""
    values = {
        "ETCDCTL_API": "3",
        "ETCDCTL_CACERT": cacert,
        "ETCDCTL_CERT": cert,
        "ETCDCTL_KEY": key,
        "ETCDCTL_ENDPOINTS": ",".join(endpoints),
        "ETCDCTL_DIAL_TIMEOUT": "2s",
        "ETCDCTL_COMMAND_TIMEOUT": "4s",
    }
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


def etcd_cluster_command(cacert: str, cert: str, key: str, endpoints: tuple[str, ...]) -> str:
    env = etcdctl_environment(cacert, cert, key, endpoints)
    return (
        f"command -v etcdctl >/dev/null 2>&1 || {{ echo {MISSING}; exit 0; }}; {env}; "
        f"echo {_MEMBERS}; etcdctl member list -w json 2>/dev/null || echo '{{}}'; "
        f"echo {_STATUS}; etcdctl endpoint status -w json 2>/dev/null || echo '[]'; "
        f"echo {_HEALTH}; etcdctl endpoint health -w json 2>/dev/null || echo '[]'"
    )


def _json_section(lines: list[str], what: str) -> Any:
    text = "\n".join(lines).strip()
    # etcdctl prints one document; when it failed we printed our own fallback after
    # whatever partial output it wrote, so the last document wins.
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise FactProcessError(f"etcdctl {what}: not JSON: {text[:120]!r}")


def parse_etcd_cluster(output: list[str]) -> EtcdClusterState | None:
    """Parse :func:`etcd_cluster_command`'s output (shared by the fact and the gates)."""
    if output and output[0].strip() == MISSING:
        return None
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.strip() in (_MEMBERS, _STATUS, _HEALTH):
            current = sections.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line)
    if set(sections) != {_MEMBERS, _STATUS, _HEALTH}:
        raise FactProcessError("etcdctl output is missing a section")
    members_doc = _json_section(sections[_MEMBERS], "member list")
    status_doc = _json_section(sections[_STATUS], "endpoint status")
    health_doc = _json_section(sections[_HEALTH], "endpoint health")
    if not isinstance(members_doc, dict) or not isinstance(status_doc, list):
        raise FactProcessError("etcdctl JSON has an unexpected shape")
    if not isinstance(health_doc, list):
        raise FactProcessError("etcdctl endpoint health JSON is not a list")

    status_by_url: dict[str, dict[str, Any]] = {}
    for entry in status_doc:
        status = entry.get("Status") or {}
        status_by_url[str(entry.get("Endpoint"))] = status
    health_by_url = {str(e.get("endpoint")): e for e in health_doc}

    members = []
    for raw in members_doc.get("members") or []:
        member_id = int(raw.get("ID", 0))
        urls = raw.get("clientURLs") or []
        url = str(urls[0]) if urls else None
        status = status_by_url.get(url or "", {})
        health = health_by_url.get(url or "", {})
        header = status.get("header") or {}
        is_leader = bool(status) and int(status.get("leader", -1)) == int(
            header.get("member_id", -2)
        )
        healthy = bool(health.get("health")) and bool(status)
        error = health.get("error") or (None if status else "no status (unreachable?)")
        members.append(
            EtcdMember(
                name=str(raw.get("name") or ""),
                id=format(member_id, "x"),
                client_url=url,
                healthy=healthy,
                is_leader=is_leader,
                raft_index=int(status["raftIndex"]) if "raftIndex" in status else None,
                raft_term=int(status["raftTerm"]) if "raftTerm" in status else None,
                error=None if healthy else str(error or "unhealthy"),
            )
        )
    if not members and health_by_url:
        # member list failed (no quorum or no reachable member): report the endpoints.
        for url, health in sorted(health_by_url.items()):
            members.append(
                EtcdMember(
                    name="",
                    id="?",
                    client_url=url,
                    healthy=False,
                    is_leader=False,
                    raft_index=None,
                    raft_term=None,
                    error=str(health.get("error") or "member list failed"),
                )
            )
    return EtcdClusterState(tuple(sorted(members, key=lambda m: m.name)))


def describe(state: EtcdClusterState | None) -> dict[str, Any]:
    """JSON-ready form for ``plinth status``."""
    if state is None:
        return {"installed": False, "members": []}
    return {
        "installed": True,
        "healthy": state.healthy,
        "leader": state.leader,
        "members": [
            {
                "name": m.name,
                "id": m.id,
                "healthy": m.healthy,
                "leader": m.is_leader,
                "raft_index": m.raft_index,
                "raft_term": m.raft_term,
                "error": m.error,
            }
            for m in state.members
        ],
    }


class EtcdCluster(FactBase[EtcdClusterState | None]):
    """The DC's etcd cluster (members, leader, health, raft index), over TLS.

    + cacert, cert, key: the TLS files etcdctl presents (client-cert auth is on)
    + endpoints: every member's client URL

    None when etcdctl is not installed yet.
    """

    def command(self, cacert: str, cert: str, key: str, endpoints: tuple[str, ...]) -> str:
        return etcd_cluster_command(cacert, cert, key, tuple(endpoints))

    @staticmethod
    def default() -> EtcdClusterState | None:
        return None

    def process(self, output: list[str]) -> EtcdClusterState | None:
        return parse_etcd_cluster(output)
