"""Facts of RabbitMQ: the DC's cluster as the local node sees it, read with its own CLI.

The CLI tools talk to the node over Erlang distribution, which is TLS once the node is
configured (``rabbitmq-env.conf`` gives the CLI the same TLS arguments as the server), so
a working fact is itself proof that the CLI's TLS settings are right.

One shell command prints marked sections: ``cluster_status`` (JSON), this node's
``check_if_node_is_quorum_critical`` verdict, and the names of users and vhosts (never
password hashes). A node that is not installed or not running gives ``None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from plinth.rabbitmq_sync import first_json

NOT_RUNNING = "__PLINTH_RABBITMQ_NOT_RUNNING__"
_STATUS = "--plinth-rabbitmq-status--"
_CRITICAL = "--plinth-rabbitmq-quorum-critical--"
_USERS = "--plinth-rabbitmq-users--"
_VHOSTS = "--plinth-rabbitmq-vhosts--"
_END = "--plinth-rabbitmq-end--"

# Each section is printed even when its command fails, so one broken call does not
# hide the others; the exit code of the quorum check is the verdict.
CLUSTER_COMMAND = (
    "if ! command -v rabbitmq-diagnostics >/dev/null 2>&1 "
    "|| ! systemctl is-active -q rabbitmq-server.service; then "
    f"echo {NOT_RUNNING}; exit 0; fi; "
    f"echo {_STATUS}; rabbitmq-diagnostics -q cluster_status --formatter json 2>&1; "
    f"echo {_CRITICAL}; out=$(rabbitmq-diagnostics -q check_if_node_is_quorum_critical 2>&1); "
    'echo "exit=$?"; printf "%s\\n" "$out" | tail -n 20; '
    f"echo {_USERS}; rabbitmqctl -q list_users --formatter json 2>&1; "
    f"echo {_VHOSTS}; rabbitmqctl -q list_vhosts name --formatter json 2>&1; "
    f"echo {_END}"
)


@dataclass(frozen=True)
class RabbitmqClusterState:
    """One DC's RabbitMQ cluster as one of its running nodes describes it now."""

    cluster_name: str
    running_nodes: tuple[str, ...]
    disk_nodes: tuple[str, ...]
    partitions: tuple[tuple[str, tuple[str, ...]], ...]
    """(node, nodes it cannot see) for every node that reports a partition."""
    alarms: tuple[str, ...]
    """Resource alarms (memory, disk) as ``<node>: <resource>``."""
    under_maintenance: tuple[str, ...]
    """Nodes in maintenance mode (drained)."""
    quorum_critical: bool | None
    """The local node is the one whose loss would take a quorum queue below its majority;
    None when the check could not run."""
    quorum_critical_detail: str
    """What the quorum check printed (the critical queues, or why it failed)."""
    users: tuple[str, ...] | None
    vhosts: tuple[str, ...] | None
    error: str | None = None
    """Why the running node could not describe its cluster (the CLI's last words)."""

    def missing(self, expected: tuple[str, ...]) -> list[str]:
        """Expected nodes that are not running members of this cluster."""
        return [n for n in expected if n not in self.running_nodes]

    def problems(self, expected: tuple[str, ...]) -> list[str]:
        """One line per reason the cluster is not fit for a node to be taken down."""
        if self.error:
            return [f"cluster status unreadable: {self.error}"]
        out = []
        down = self.missing(expected)
        if down:
            out.append(f"node(s) not running in the cluster: {', '.join(down)}")
        stopped = [n for n in self.disk_nodes if n not in self.running_nodes and n not in down]
        if stopped:
            out.append(f"member(s) down: {', '.join(stopped)}")
        out += [
            f"{node} reports a partition from {', '.join(peers)}" for node, peers in self.partitions
        ]
        out += [f"alarm {alarm}" for alarm in self.alarms]
        out += [f"{node} is under maintenance" for node in self.under_maintenance]
        return out


def _sections(output: list[str]) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in output:
        if line in (_STATUS, _CRITICAL, _USERS, _VHOSTS, _END):
            current = line
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def _names(rows: Any, key: str = "name") -> tuple[str, ...] | None:
    if not isinstance(rows, list):
        return None
    return tuple(str(r[key]) for r in rows if isinstance(r, dict) and key in r)


def _alarm(alarm: Any) -> str:
    if isinstance(alarm, dict):
        node = alarm.get("node", "?")
        what = alarm.get("resource") or alarm.get("type") or json.dumps(alarm, sort_keys=True)
        return f"{node}: {what}"
    return str(alarm)


def parse_rabbitmq_cluster(output: list[str]) -> RabbitmqClusterState | None:
    """Parse :data:`CLUSTER_COMMAND`'s output; None when the node is not running."""
    if any(line.strip() == NOT_RUNNING for line in output):
        return None
    sections = _sections(output)
    if _END not in sections:
        raise FactProcessError(f"RabbitmqCluster: output was cut short: {output[-5:]}")
    status = first_json(sections.get(_STATUS, []))
    if not isinstance(status, dict) or "running_nodes" not in status:
        # The service runs but its CLI cannot reach it (booting, stuck, TLS or cookie
        # mismatch): a state to report and refuse on, not a parse failure.
        lines = [line.strip() for line in sections.get(_STATUS, []) if line.strip()]
        error = next((line for line in lines if line.startswith("Error")), None)
        return RabbitmqClusterState(
            cluster_name="", running_nodes=(), disk_nodes=(), partitions=(), alarms=(),
            under_maintenance=(), quorum_critical=None, quorum_critical_detail="",
            users=None, vhosts=None, error=(error or " ".join(lines))[:300] or "no output",
        )  # fmt: skip
    partitions_raw = status.get("partitions") or {}
    partitions = tuple(
        (str(node), tuple(str(p) for p in peers))
        for node, peers in sorted(partitions_raw.items())
        if peers
    )
    maintenance = status.get("maintenance_status") or {}
    critical_lines = sections.get(_CRITICAL, [])
    verdict = critical_lines[0] if critical_lines else ""
    detail = "\n".join(critical_lines[1:]).strip()
    quorum_critical: bool | None = None
    if verdict == "exit=0":
        quorum_critical = False
    elif verdict.startswith("exit=") and "quorum" in detail.lower():
        quorum_critical = True
    return RabbitmqClusterState(
        cluster_name=str(status.get("cluster_name", "")),
        running_nodes=tuple(str(n) for n in status.get("running_nodes") or ()),
        disk_nodes=tuple(str(n) for n in status.get("disk_nodes") or ()),
        partitions=partitions,
        alarms=tuple(_alarm(a) for a in status.get("alarms") or ()),
        under_maintenance=tuple(
            sorted(str(n) for n, s in maintenance.items() if s != "not under maintenance")
        ),
        quorum_critical=quorum_critical,
        quorum_critical_detail=detail,
        users=_names(first_json(sections.get(_USERS, [])), key="user"),
        vhosts=_names(first_json(sections.get(_VHOSTS, []))),
    )


class RabbitmqCluster(FactBase[RabbitmqClusterState | None]):
    """The DC's RabbitMQ cluster as the local node reports it (None: not running)."""

    def command(self) -> str:
        return CLUSTER_COMMAND

    def process(self, output: list[str]) -> RabbitmqClusterState | None:
        return parse_rabbitmq_cluster(output)


__all__ = [
    "CLUSTER_COMMAND",
    "RabbitmqCluster",
    "RabbitmqClusterState",
    "parse_rabbitmq_cluster",
]
