"""The composition: one node of the DC's RabbitMQ cluster, its operations in deploy order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import files, systemd

from operations.checked import checked_file
from operations.pki import crl_hash_directory
from operations.rabbitmq.converge import (
    cluster_joined,
    definitions_imported,
    erlang_cookie,
    node_started,
    restart_marked,
)
from operations.rabbitmq.definitions import render_definitions
from operations.rabbitmq.roll import queues_rebalanced, restarted_in_this_run, rolling_restart
from operations.rabbitmq.settings import (
    ADVANCED_CONFIG,
    CA_BUNDLE,
    CONFIG_DIR,
    CRL_HASH_DIR,
    DATA_DIR,
    DEFINITIONS,
    ERLANG_TERMS_CHECK,
    INTER_NODE_TLS,
    RESTART_MARKER,
    SERVICE,
    RabbitmqInput,
    RabbitmqSecrets,
    enabled_plugins,
)
from plinth.render import sha1_text


@deploy("RabbitMQ")
def rabbitmq_node(
    spec: RabbitmqInput,
    secrets: RabbitmqSecrets,
    ca_bundle: str,
    crl_issuers: Sequence[str],
    certificates_changed: Callable[[], bool] = lambda: False,
) -> None:
    """One node of the DC's RabbitMQ cluster (see the module docstring).

    + ca_bundle: PEM of the platform root and every DC intermediate (see ``CA_BUNDLE``)
    + crl_issuers: ``root`` and every datacenter: their CRLs (written by host TLS) are
      hashed into ``CRL_HASH_DIR`` for the listeners' ``crl_check``
    + certificates_changed: true at execute time when host TLS renewed the node's server or
      client certificate. Erlang loads a listener's certificate when the listener opens
      (``ssl:clear_pem_cache()`` does not change what it serves: checked on OTP 25), so a
      renewal is a restart: marked like a configuration change and rolled, gated
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
    # Before the configuration that names it: a listener checking CRLs without them would
    # refuse every client. Re-signed CRLs need nothing here (links to the live files).
    crl_hash_directory(
        name="RabbitMQ CRL directory (hashed: the root's and every DC's CRL)",
        directory=CRL_HASH_DIR,
        issuers=list(crl_issuers),
        group="rabbitmq",
    )
    advanced = checked_file(
        name="RabbitMQ listeners' TLS options with CRL checking (advanced.config)",
        path=ADVANCED_CONFIG,
        src=StringIO(spec.render_advanced_config()),
        check=ERLANG_TERMS_CHECK,
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
    changed = (env, bundle, advanced, inter_node, plugins, config)
    marked = restart_marked(
        name="RabbitMQ restart pending (configuration or certificate changed on a running node)",
        _if=lambda: any(op.did_change() for op in changed) or certificates_changed(),
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
        _if=lambda: restarted_in_this_run(spec.cluster_name),
    )
    cluster_joined(name="RabbitMQ cluster complete", spec=spec)
    definitions_imported(
        name="RabbitMQ definitions imported", spec=spec, file_changed=definitions_changed
    )
