"""RabbitMQ 3.10: one 3-node cluster per datacenter, quorum queues, TLS everywhere.

* AMQP only over TLS (``listeners.tcp = none``), client certificates required
  (``verify_peer`` + ``fail_if_no_peer_cert``); users log in with the certificate alone
  (SASL EXTERNAL, user = CN). The management UI/API is TLS-only with client certificates.
* Erlang distribution (inter-node traffic and the CLI tools) runs over TLS with the node
  certificates. The CLI gets the same arguments (``RABBITMQ_CTL_ERL_ARGS``) or every
  health check and fact would fail. Nodes are named ``rabbit@<FQDN>`` (long names) so a
  peer verifies the name that is in the certificate's SANs.
* Definitions (vhosts with quorum as the default queue type, users, permissions,
  policies) are one JSON file imported with ``rabbitmqctl import_definitions``. Import
  adds and updates; it never deletes what the model no longer names.
* The Erlang cookie comes from the encrypted secrets and is written only while the node
  is stopped: a running cluster cannot change its cookie one node at a time (see the
  runbook in docs/components/rabbitmq.md). A differing cookie on a running node stops
  the deploy of that host with the reason; nothing is changed.

Nodes start one at a time (serial), so the first forms the cluster and the others join
it through ``classic_config`` peer discovery. A node whose configuration changed is
restarted from a serial operation whose callback checks, right then, that every node
runs, nothing is partitioned or alarmed, and that the node is not quorum-critical
(``rabbitmq-diagnostics check_if_node_is_quorum_critical``); otherwise it refuses and
changes nothing. After the last restart, quorum queue leaders are rebalanced.

Secrets (cookie, the admin password's hash) reach the host only inside uploaded files
compared by checksum, never as an operation argument, a log line or a plan.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shlex
from collections.abc import Generator
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import (
    FileUploadCommand,
    FunctionCommand,
    OperationError,
    StringCommand,
    deploy,
    operation,
)
from pyinfra.api.exceptions import FactProcessError
from pyinfra.facts.files import File, Sha1File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

from facts.rabbitmq import (
    CLUSTER_COMMAND,
    RabbitmqCluster,
    RabbitmqClusterState,
    parse_rabbitmq_cluster,
)
from operations.checked import checked_file
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.context import read_secrets as read_environment_secrets
from plinth.model import RabbitmqSettings, Role
from plinth.reasons import explain_change
from plinth.render import render_template, sha1_text
from plinth.rolling import note, refuse, run, wait_for

SERVICE = "rabbitmq-server.service"
CONFIG_DIR = "/etc/rabbitmq"
DATA_DIR = "/var/lib/rabbitmq"
COOKIE = f"{DATA_DIR}/.erlang.cookie"
DEFINITIONS = f"{CONFIG_DIR}/plinth-definitions.json"
INTER_NODE_TLS = f"{CONFIG_DIR}/inter_node_tls.config"
# Erlang sends only the first certificate of ``certfile``; the chain it presents comes
# from ``cacertfile``. So the CA file is the root *and* the DC intermediates, or peers
# and clients that trust only the root would fail with "unknown ca".
CA_BUNDLE = f"{CONFIG_DIR}/ca-bundle.pem"
PLUGINS = ("rabbitmq_auth_mechanism_ssl", "rabbitmq_management")
SECRET_NAMES = {"cookie": "rabbitmq-erlang-cookie", "admin": "rabbitmq-admin-password"}
# Set when a node's configuration changed while it ran; removed once it restarted. A roll
# refused (or cut short) today is therefore still pending on the next run, although the
# files on disk no longer differ from the model.
RESTART_MARKER = f"{DATA_DIR}/plinth-restart-pending"
JOIN_WAIT_SECONDS = 120
HEALTHY_WAIT_SECONDS = 180
QUORUM_WAIT_SECONDS = 60
# An Erlang term file: the daemon would refuse to boot on a syntax error.
ERLANG_TERMS_CHECK = (
    'erl -noshell -eval \'case file:consult("{path}") of {ok, _} -> halt(0); '
    'Error -> io:format("~p~n", [Error]), halt(1) end.\''
)


@dataclass(frozen=True)
class RabbitmqInput:
    """The slice of the model one RabbitMQ node reads (no secrets: see :func:`read_secrets`)."""

    name: str
    fqdn: str
    cluster_name: str
    nodes: tuple[str, ...]
    """``rabbit@<fqdn>`` of every node of the DC's cluster, in model order."""
    settings: RabbitmqSettings
    tls: CertificateSpec
    """Server certificate: AMQPS, management, incoming distribution."""
    client_tls: CertificateSpec
    """Client certificate of the node and its CLI towards the peers."""

    @property
    def node(self) -> str:
        return f"rabbit@{self.fqdn}"

    @property
    def is_seed(self) -> bool:
        """The first node applies cluster-wide definitions (any node could: one is enough)."""
        return self.nodes[0] == self.node

    def render_config(self) -> str:
        return render_template(
            "rabbitmq/etc/rabbitmq/rabbitmq.conf.j2",
            cluster_name=self.cluster_name,
            nodes=self.nodes,
            settings=self.settings,
            tls=self.tls,
            ca_bundle=CA_BUNDLE,
        )

    def render_env(self) -> str:
        return render_template(
            "rabbitmq/etc/rabbitmq/rabbitmq-env.conf.j2",
            node=self.node,
            settings=self.settings,
            inter_node_tls=INTER_NODE_TLS,
        )

    def render_inter_node_tls(self) -> str:
        return render_template(
            "rabbitmq/etc/rabbitmq/inter_node_tls.config.j2",
            tls=self.tls,
            client_tls=self.client_tls,
            ca_bundle=CA_BUNDLE,
        )


def enabled_plugins() -> str:
    return f"[{','.join(PLUGINS)}].\n"


def rabbitmq_input(
    context: HostContext, tls: CertificateSpec, client_tls: CertificateSpec
) -> RabbitmqInput:
    env = context.environment
    dc = context.datacenter.name
    return RabbitmqInput(
        name=context.host.name,
        fqdn=context.fqdn,
        cluster_name=f"{env.name}-{dc}-rabbitmq",
        nodes=tuple(f"rabbit@{env.fqdn(h)}" for h in env.hosts_with(Role.RABBITMQ, dc)),
        settings=env.components.rabbitmq,
        tls=tls,
        client_tls=client_tls,
    )


@dataclass(frozen=True)
class RabbitmqSecrets:
    cookie: str = field(repr=False)
    admin_password: str = field(repr=False)


def read_secrets(context: HostContext) -> RabbitmqSecrets:
    """The Erlang cookie and the admin password from the environment's encrypted secrets."""
    values = read_environment_secrets(context, SECRET_NAMES)
    return RabbitmqSecrets(cookie=values["cookie"], admin_password=values["admin"])


def password_hash(user: str, password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password)).

    The 4-byte salt is derived from the password and the user (not random), so the same
    secret always renders the same definitions file and a second run changes nothing.
    """
    salt = hmac.new(password.encode(), f"plinth-rabbitmq:{user}".encode(), "sha256").digest()[:4]
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def render_definitions(settings: RabbitmqSettings, admin_password: str) -> str:
    """The definitions file (``import_definitions`` format) for the model's settings.

    Certificate users get an empty password hash: they cannot log in with a password.
    The admin gets every vhost and the ``administrator`` tag.
    """
    algorithm = "rabbit_password_hashing_sha256"
    users = [
        {
            "name": settings.admin_user,
            "password_hash": password_hash(settings.admin_user, admin_password),
            "hashing_algorithm": algorithm,
            "tags": ["administrator"],
            "limits": {},
        }
    ]
    users += [
        {
            "name": u.name,
            "password_hash": "",
            "hashing_algorithm": algorithm,
            "tags": list(u.tags),
            "limits": {},
        }
        for u in settings.users
    ]
    permissions = [
        {
            "user": settings.admin_user,
            "vhost": v.name,
            "configure": ".*",
            "write": ".*",
            "read": ".*",
        }
        for v in settings.vhosts
    ]
    permissions += [
        {
            "user": u.name,
            "vhost": p.vhost,
            "configure": p.configure,
            "write": p.write,
            "read": p.read,
        }
        for u in settings.users
        for p in u.permissions
    ]
    document = {
        "users": users,
        "vhosts": [
            {
                "name": v.name,
                "limits": [],
                "metadata": {
                    "description": v.description,
                    "tags": [],
                    "default_queue_type": v.default_queue_type,
                },
            }
            for v in settings.vhosts
        ],
        "permissions": permissions,
        "policies": [
            {
                "vhost": p.vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": dict(p.definition),
                "priority": p.priority,
            }
            for p in settings.policies
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _running() -> bool:
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
    if _running():
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
    if _running():
        host.noop("rabbitmq-server is running")
        return
    # A node started now runs the configuration on disk: no restart is pending any more.
    yield StringCommand(f"systemctl start {SERVICE} && rm -f {RESTART_MARKER}")


@operation()
def restart_marked() -> Generator[StringCommand, None, None]:
    """Record that this running node must restart for its new configuration."""
    if not _running():
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


def _read(target: Any) -> RabbitmqClusterState | None:
    ok, out, _ = run(target, CLUSTER_COMMAND, timeout=120)
    if not ok:
        return None
    try:
        return parse_rabbitmq_cluster(out)
    except FactProcessError:
        return None


# Clusters a rolling restart touched in this run, and those already rebalanced after it.
# Operations run host by host inside one process, so the last step of the roll (a
# rebalance, once) can see what the serial restarts did.
_RESTARTED: set[str] = set()
_REBALANCED: set[str] = set()


def restart_refusal(state: RabbitmqClusterState | None, spec: RabbitmqInput) -> str | None:
    """Why restarting ``spec``'s node now would be unsafe (None: it is safe)."""
    if state is None:
        return f"cannot read the cluster from {spec.node} (is it running?)"
    problems = state.problems(spec.nodes)
    if problems:
        return "; ".join(problems)
    if state.quorum_critical is None:
        return f"quorum check failed: {state.quorum_critical_detail[-300:] or 'no output'}"
    if state.quorum_critical:
        return (
            f"{spec.node} is quorum-critical (stopping it would take quorum queues below "
            f"their majority): {state.quorum_critical_detail[-300:]}"
        )
    return None


def _gated_restart(state: Any, host: Any, spec: RabbitmqInput) -> bool:
    """Execute-time: restart this node only while the whole cluster can spare it."""
    what = f"RabbitMQ restart of {spec.node}"
    current = _read(host)
    if current is None or current.problems(spec.nodes):
        # Something is already down: refuse at once rather than wait it out.
        return refuse(
            host, f"{what} refused: {restart_refusal(current, spec)}; nothing was changed"
        )

    # Members of quorum queues on a node restarted just before may still be catching up.
    def spareable() -> RabbitmqClusterState | None:
        found = _read(host)
        return found if found is not None and restart_refusal(found, spec) is None else None

    ready, waited = wait_for(spareable, QUORUM_WAIT_SECONDS, interval=2)
    if ready is None:
        reason = restart_refusal(_read(host), spec) or "the cluster changed while waiting"
        return refuse(host, f"{what} refused after {waited:.0f} s: {reason}; nothing was changed")
    note(host, f"{what}: cluster healthy and {spec.node} not quorum-critical; restarting")
    ok, _, err = run(host, f"systemctl restart {SERVICE}", timeout=600)
    _RESTARTED.add(spec.cluster_name)
    if not ok:
        return refuse(host, f"{what} failed: {' '.join(err)[-300:]}; see journalctl -u {SERVICE}")

    def healthy_again() -> RabbitmqClusterState | None:
        found = _read(host)
        return found if found is not None and not found.problems(spec.nodes) else None

    after, waited = wait_for(healthy_again, HEALTHY_WAIT_SECONDS, interval=2)
    if after is None:
        return refuse(
            host,
            f"{spec.node} restarted but the cluster is not healthy after "
            f"{HEALTHY_WAIT_SECONDS} s; stopping here",
        )
    run(host, f"rm -f {RESTART_MARKER}")
    note(host, f"{spec.node} restarted, all nodes running again in {waited:.1f} s")
    return True


@operation(is_idempotent=False)
def rolling_restart(spec: RabbitmqInput) -> Generator[FunctionCommand, None, None]:
    """Restart this node behind a live gate (run it ``_serial=True``); a stopped node is
    started by :func:`node_started` instead."""
    if not _running():
        host.noop("rabbitmq-server is not running yet: nothing to restart")
        return
    yield FunctionCommand(_gated_restart, (spec,), {})


def _rebalance(state: Any, host: Any, spec: RabbitmqInput) -> bool:
    if spec.cluster_name in _REBALANCED:
        return True
    _REBALANCED.add(spec.cluster_name)
    ok, out, err = run(host, "rabbitmq-queues -q rebalance all", timeout=300)
    if not ok:
        return refuse(host, f"rabbitmq-queues rebalance all failed: {' '.join(out + err)[-300:]}")
    note(host, f"quorum queue leaders rebalanced across {spec.cluster_name}")
    return True


@operation(is_idempotent=False)
def queues_rebalanced(spec: RabbitmqInput) -> Generator[FunctionCommand, None, None]:
    """After a rolling restart (every node done: operations run host by host, op by op),
    spread queue leaders again: restarts leave them on the nodes restarted first."""
    if not _running():
        host.noop("rabbitmq-server is not running")
        return
    yield FunctionCommand(_rebalance, (spec,), {})


@deploy("RabbitMQ")
def rabbitmq_node(spec: RabbitmqInput, secrets: RabbitmqSecrets, ca_bundle: str) -> None:
    """One node of the DC's RabbitMQ cluster (see the module docstring).

    + ca_bundle: PEM of the platform root and every DC intermediate (see ``CA_BUNDLE``)
    + secrets: passed through as file content only (``StringIO``), never as an operation
      argument that could reach a log or a plan
    """
    files.directory(
        name="RabbitMQ data directory", path=DATA_DIR, user="rabbitmq", group="rabbitmq",
        mode="755",
    )  # fmt: skip
    erlang_cookie(name="Erlang cookie from the secrets", src=StringIO(secrets.cookie))
    env = checked_file(
        name="RabbitMQ environment (node name, TLS distribution for server and CLI)",
        path=f"{CONFIG_DIR}/rabbitmq-env.conf",
        src=StringIO(spec.render_env()),
        check="sh -n {path}",
        mode="644",
    )
    bundle = checked_file(
        name="RabbitMQ CA bundle (root and intermediates: Erlang sends its chain from it)",
        path=CA_BUNDLE,
        src=StringIO(ca_bundle),
        check="openssl crl2pkcs7 -nocrl -certfile {path} >/dev/null",
        mode="644",
    )
    inter_node = checked_file(
        name="RabbitMQ inter-node TLS options",
        path=INTER_NODE_TLS,
        src=StringIO(spec.render_inter_node_tls()),
        check=ERLANG_TERMS_CHECK,
        mode="644",
    )
    plugins = checked_file(
        name="RabbitMQ plugins",
        path=f"{CONFIG_DIR}/enabled_plugins",
        src=StringIO(enabled_plugins()),
        check=ERLANG_TERMS_CHECK,
        mode="644",
        user="rabbitmq",
        group="rabbitmq",
    )
    config = checked_file(
        name="RabbitMQ configuration",
        path=f"{CONFIG_DIR}/rabbitmq.conf",
        src=StringIO(spec.render_config()),
        # rabbitmq.conf has no offline validator: the node checks it when it boots,
        # and a rolling restart stops at the first node that does not come back.
        check="grep -q '^listeners.tcp = none$' {path}",
        mode="644",
    )
    definitions_text = render_definitions(spec.settings, secrets.admin_password)
    definitions_changed = host.get_fact(Sha1File, path=DEFINITIONS) != sha1_text(definitions_text)
    checked_file(
        name="RabbitMQ definitions (users, vhosts, permissions, policies)",
        path=DEFINITIONS,
        src=StringIO(definitions_text),
        check="python3 -m json.tool {path} >/dev/null",
        mode="640",
        group="rabbitmq",
    )
    systemd.service(name="rabbitmq-server enabled at boot", service=SERVICE, running=None,
                    enabled=True)  # fmt: skip
    pending_before = bool(host.get_fact(File, path=RESTART_MARKER))
    changed = (env, bundle, inter_node, plugins, config)
    marked = restart_marked(
        name="RabbitMQ restart pending (configuration changed on a running node)",
        _if=lambda: any(op.did_change() for op in changed),
    )
    started = node_started(name="rabbitmq-server started, one node at a time", _serial=True)
    rolling_restart(
        name="RabbitMQ restarted for its new configuration, one node at a time (gated)",
        spec=spec,
        _if=lambda: (marked.did_change() or pending_before) and not started.did_change(),
        _serial=True,
    )
    queues_rebalanced(
        name="RabbitMQ queue leaders rebalanced after the rolling restart",
        spec=spec,
        _if=lambda: spec.cluster_name in _RESTARTED,
    )
    cluster_joined(name="RabbitMQ cluster complete", spec=spec)
    definitions_imported(
        name="RabbitMQ definitions imported", spec=spec, file_changed=definitions_changed
    )


__all__ = [
    "RabbitmqInput",
    "password_hash",
    "rabbitmq_input",
    "rabbitmq_node",
    "read_secrets",
    "render_definitions",
]
