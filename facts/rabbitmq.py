"""Facts of RabbitMQ: the DC's cluster as the local node sees it, read with its own CLI.

The CLI tools talk to the node over Erlang distribution, which is TLS once the node is
configured (``rabbitmq-env.conf`` gives the CLI the same TLS arguments as the server), so
a working fact is itself proof that the CLI's TLS settings are right.

One ``rabbitmqctl eval`` prints one JSON document between markers: the cluster's
members, partitions, alarms and drained nodes, this node's quorum-critical verdict, and
the names of users and vhosts (never password hashes). A node that is not installed or
not running gives ``None``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from plinth.rabbitmq_sync import first_json

NOT_RUNNING = "__PLINTH_RABBITMQ_NOT_RUNNING__"
_STATUS = "--plinth-rabbitmq-status--"
_END = "--plinth-rabbitmq-end--"

# Everything the fact needs in one ``rabbitmqctl eval``, printed as one JSON document.
# Each CLI call boots an Erlang VM and joins the cluster over TLS distribution (about
# 0.8 s on an idle node, several seconds with three nodes on two cores): the four
# separate calls this replaces (cluster_status, check_if_node_is_quorum_critical,
# list_users, list_vhosts) made the fact the slowest part of a no-op run. The functions
# are the ones those commands call in RabbitMQ 3.10 (Debian 12); the quorum check is
# the CLI's own (the local node's loss would leave a quorum queue below its majority)
# and reports its error instead of failing the whole document.
CLUSTER_EVAL = """
Bin = fun(A) -> rabbit_data_coercion:to_binary(A) end,
Running = rabbit_nodes:all_running(),
Critical = try rabbit_quorum_queue:list_with_minimum_quorum_for_cli() of
    Qs -> [maps:get(<<"readable_name">>, Q, <<"?">>) || Q <- Qs]
  catch C:E -> #{error => Bin(io_lib:format("~p:~p", [C, E]))} end,
Drained = try [Bin(N) || N <- rabbit_nodes:all(),
                         rabbit_maintenance:is_being_drained_consistent_read(N)]
  catch _:_ -> [] end,
Doc = #{
  cluster_name => rabbit_nodes:cluster_name(),
  running_nodes => [Bin(N) || N <- Running],
  disk_nodes => [Bin(N) || N <- rabbit_mnesia:cluster_nodes(disc)],
  partitions => maps:from_list([{Bin(N), [Bin(P) || P <- Ps]}
                                || {N, Ps} <- rabbit_node_monitor:partitions(Running)]),
  alarms => [case A of
               {resource_limit, R, N} -> <<(Bin(N))/binary, ": ", (Bin(R))/binary>>;
               _ -> Bin(io_lib:format("~p", [A]))
             end || {A, _} <- rabbit_alarm:get_alarms()],
  under_maintenance => Drained,
  users => [Bin(proplists:get_value(user, U))
            || U <- rabbit_auth_backend_internal:list_users()],
  vhosts => rabbit_vhost:list_names(),
  quorum_critical => Critical
},
io:format("~ts~n", [rabbit_json:encode(Doc)]),
ok.
"""

CLUSTER_COMMAND = (
    "if ! command -v rabbitmqctl >/dev/null 2>&1 "
    "|| ! systemctl is-active -q rabbitmq-server.service; then "
    f"echo {NOT_RUNNING}; exit 0; fi; "
    f"echo {_STATUS}; rabbitmqctl -q eval {shlex.quote(' '.join(CLUSTER_EVAL.split()))} 2>&1; "
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


def _status_lines(output: list[str]) -> list[str] | None:
    """The lines between the markers; None when the end marker never came."""
    lines: list[str] | None = None
    for line in output:
        if line == _STATUS:
            lines = []
        elif line == _END:
            return lines if lines is not None else []
        elif lines is not None:
            lines.append(line)
    return None


def _names(values: Any) -> tuple[str, ...] | None:
    if not isinstance(values, list):
        return None
    return tuple(str(v) for v in values)


def _unreadable(error: str) -> RabbitmqClusterState:
    return RabbitmqClusterState(
        cluster_name="", running_nodes=(), disk_nodes=(), partitions=(), alarms=(),
        under_maintenance=(), quorum_critical=None, quorum_critical_detail="",
        users=None, vhosts=None, error=error[:300] or "no output",
    )  # fmt: skip


def parse_rabbitmq_cluster(output: list[str]) -> RabbitmqClusterState | None:
    """Parse :data:`CLUSTER_COMMAND`'s output; None when the node is not running."""
    if any(line.strip() == NOT_RUNNING for line in output):
        return None
    lines = _status_lines(output)
    if lines is None:
        raise FactProcessError(f"RabbitmqCluster: output was cut short: {output[-5:]}")
    status = first_json(lines)
    if not isinstance(status, dict) or "running_nodes" not in status:
        # The service runs but its CLI cannot reach it (booting, stuck, TLS or cookie
        # mismatch): a state to report and refuse on, not a parse failure.
        said = [line.strip() for line in lines if line.strip()]
        error = next((line for line in said if line.startswith("Error")), None)
        return _unreadable(error or " ".join(said))
    partitions = tuple(
        (str(node), tuple(str(p) for p in peers))
        for node, peers in sorted((status.get("partitions") or {}).items())
        if peers
    )
    critical = status.get("quorum_critical")
    quorum_critical: bool | None
    if isinstance(critical, list):
        quorum_critical = bool(critical)
        detail = "; ".join(str(q) for q in critical)
    else:
        quorum_critical = None
        detail = str((critical or {}).get("error", critical)) if critical else "no answer"
    return RabbitmqClusterState(
        cluster_name=str(status.get("cluster_name", "")),
        running_nodes=tuple(str(n) for n in status.get("running_nodes") or ()),
        disk_nodes=tuple(str(n) for n in status.get("disk_nodes") or ()),
        partitions=partitions,
        alarms=tuple(str(a) for a in status.get("alarms") or ()),
        under_maintenance=tuple(sorted(str(n) for n in status.get("under_maintenance") or ())),
        quorum_critical=quorum_critical,
        quorum_critical_detail=detail,
        users=_names(status.get("users")),
        vhosts=_names(status.get("vhosts")),
    )


def describe(
    states: dict[str, RabbitmqClusterState | None], nodes: tuple[str, ...]
) -> dict[str, Any]:
    """JSON-ready form for ``plinth status``: every node's view, the first answer's cluster."""
    first = next((s for s in states.values() if s is not None), None)
    return {
        "cluster_name": first.cluster_name if first else None,
        "running_nodes": list(first.running_nodes) if first else [],
        "disk_nodes": list(first.disk_nodes) if first else [],
        "partitions": {n: list(p) for n, p in first.partitions} if first else {},
        "alarms": list(first.alarms) if first else [],
        "problems": first.problems(nodes) if first else ["no node answers"],
        "nodes": {
            host_name: None
            if state is None
            else {
                "quorum_critical": state.quorum_critical,
                "detail": state.quorum_critical_detail if state.quorum_critical else "",
            }
            for host_name, state in states.items()
        },
    }


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
    "describe",
    "parse_rabbitmq_cluster",
]
