"""One node converged: the Erlang cookie, started one at a time, its restart marked, the
cluster complete, the definitions imported (pyinfra operations, decided at preview time
from facts)."""

from __future__ import annotations

import shlex
from collections.abc import Generator
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.facts.files import Sha1File
from pyinfra.facts.systemd import SystemdStatus

from facts.rabbitmq import RabbitmqCluster, RabbitmqClusterState
from operations.rabbitmq.settings import (
    COOKIE,
    DEFINITIONS,
    JOIN_WAIT_SECONDS,
    RESTART_MARKER,
    SERVICE,
    RabbitmqInput,
)
from plinth.reasons import explain_change
from plinth.render import sha1_text


def service_running() -> bool:
    return bool(host.get_fact(SystemdStatus).get(SERVICE))


def cluster_fact() -> RabbitmqClusterState | None:
    state: RabbitmqClusterState | None = host.get_fact(RabbitmqCluster)
    return state


@operation()
def erlang_cookie(src: StringIO) -> Generator[StringCommand | FileUploadCommand, None, None]:
    """The Erlang cookie from the secrets, written only while the node is stopped.

    + src: the cookie (a secret: compared by checksum, never logged)
    """
    wanted = src.getvalue()
    if host.get_fact(Sha1File, path=COOKIE) == sha1_text(wanted):
        host.noop("Erlang cookie matches the secret")
        return
    if service_running():
        raise OperationError(
            f"{COOKIE} on {host.name} differs from the secret rabbitmq-erlang-cookie while "
            "RabbitMQ runs: a cookie cannot change one node at a time. Follow 'Rotate the "
            "Erlang cookie' in docs/components/rabbitmq.md; nothing was changed"
        )
    explain_change("Erlang cookie missing or differs from the secret (node stopped)")
    yield FileUploadCommand(StringIO(wanted), COOKIE)
    yield StringCommand("chown", "rabbitmq:rabbitmq", COOKIE)
    yield StringCommand("chmod", "400", COOKIE)


@operation()
def node_started() -> Generator[StringCommand, None, None]:
    """Start a node that is not running (run it serial: the first forms the cluster,
    the next ones find it through classic_config and join)."""
    if service_running():
        host.noop("rabbitmq-server is running")
        return
    # A node started now runs the configuration on disk: no restart is pending any more.
    yield StringCommand(f"systemctl start {SERVICE} && rm -f {RESTART_MARKER}")


@operation()
def restart_marked() -> Generator[StringCommand, None, None]:
    """Record that this running node must restart for its new configuration."""
    if not service_running():
        host.noop("rabbitmq-server is not running: it starts with the new configuration")
        return
    yield StringCommand("touch", RESTART_MARKER)


@operation()
def cluster_joined(spec: RabbitmqInput) -> Generator[StringCommand, None, None]:
    """Wait until every node of the DC's cluster runs in the same cluster."""
    state = cluster_fact()
    if state is not None and not state.missing(spec.nodes):
        host.noop(f"all {len(spec.nodes)} nodes running in {state.cluster_name}")
        return
    yield StringCommand(
        f"rabbitmqctl -q await_online_nodes {len(spec.nodes)} "
        f"--timeout {JOIN_WAIT_SECONDS * 1000} || {{ "
        f'echo "error: {spec.name}: not all of {len(spec.nodes)} RabbitMQ nodes joined the '
        f'cluster within {JOIN_WAIT_SECONDS} s:" >&2; rabbitmqctl cluster_status >&2; exit 1; }}'
    )


@operation()
def definitions_imported(
    spec: RabbitmqInput, file_changed: bool
) -> Generator[StringCommand, None, None]:
    """Import the definitions file where it changed or the live cluster lacks what it
    names; remove the package's ``guest`` user.

    + file_changed: the definitions file differs from the model (read at preview time)
    """
    if not spec.is_seed:
        host.noop(f"definitions are imported from {spec.nodes[0]}")
        return
    state = cluster_fact()
    reasons = ["definitions file changed"] if file_changed else []
    if state is None:
        reasons.append("node not running at preview time")
    else:
        wanted_users = {spec.settings.admin_user, *(u.name for u in spec.settings.users)}
        missing_users = sorted(wanted_users - set(state.users or ()))
        missing_vhosts = sorted({v.name for v in spec.settings.vhosts} - set(state.vhosts or ()))
        if missing_users:
            reasons.append(f"user(s) missing: {', '.join(missing_users)}")
        if missing_vhosts:
            reasons.append(f"vhost(s) missing: {', '.join(missing_vhosts)}")
        if "guest" in (state.users or ()):
            reasons.append("default user guest present")
    if not reasons:
        host.noop("definitions match the model")
        return
    explain_change("; ".join(reasons))
    yield StringCommand(
        f"rabbitmqctl -q import_definitions {shlex.quote(DEFINITIONS)} && "
        'if rabbitmqctl -q list_users --formatter json | grep -q \'"user":"guest"\'; then '
        "rabbitmqctl -q delete_user guest; fi"
    )
