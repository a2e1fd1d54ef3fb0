"""The model's slice one RabbitMQ node reads, its paths and its secrets (pure but for
:func:`read_secrets`, which decrypts them on the controller)."""

from __future__ import annotations

from dataclasses import dataclass, field

from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.context import read_secrets as read_environment_secrets
from plinth.model import RabbitmqSettings, Role
from plinth.render import render_template

SERVICE = "rabbitmq-server.service"
CONFIG_DIR = "/etc/rabbitmq"
DATA_DIR = "/var/lib/rabbitmq"
COOKIE = f"{DATA_DIR}/.erlang.cookie"
DEFINITIONS = f"{CONFIG_DIR}/plinth-definitions.json"
INTER_NODE_TLS = f"{CONFIG_DIR}/inter_node_tls.config"
ADVANCED_CONFIG = f"{CONFIG_DIR}/advanced.config"
CRL_HASH_DIR = f"{CONFIG_DIR}/crl"
"""The CRLs of the root and every DC as Erlang's ``ssl_crl_hash_dir`` reads them
(``<issuer name hash>.r0``, made by ``openssl rehash``), linked to the live files."""
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
            advanced_config=ADVANCED_CONFIG,
        )

    def render_advanced_config(self) -> str:
        return render_template(
            "rabbitmq/etc/rabbitmq/advanced.config.j2",
            settings=self.settings,
            tls=self.tls,
            ca_bundle=CA_BUNDLE,
            crl_dir=CRL_HASH_DIR,
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
