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
changes nothing (:mod:`.decide` decides, :mod:`.roll` performs). After the last restart,
quorum queue leaders are rebalanced.

Secrets (cookie, the admin password's hash) reach the host only inside uploaded files
compared by checksum, never as an operation argument, a log line or a plan.

The package, by concern (deploy order in :func:`rabbitmq_node`):

* :mod:`.settings`: the model's slice, paths, rendered configuration, the secrets;
* :mod:`.definitions`: the definitions file (users, vhosts, permissions, policies; pure);
* :mod:`.converge`: cookie, start, restart marker, cluster joined, definitions imported;
* :mod:`.decide`: the gated restart's next step from one reading of the cluster (pure);
* :mod:`.roll`: its executor, which only performs those steps, and the rebalance;
* :mod:`.node`: the composition.
"""

from operations.rabbitmq.decide import restart_refusal
from operations.rabbitmq.definitions import password_hash, render_definitions
from operations.rabbitmq.node import rabbitmq_node
from operations.rabbitmq.settings import (
    CA_BUNDLE,
    RabbitmqInput,
    RabbitmqSecrets,
    rabbitmq_input,
    read_secrets,
)

# What deploy.py, bench/ and the tests imported from operations.rabbitmq before it became
# a package.
__all__ = [
    "CA_BUNDLE",
    "RabbitmqInput",
    "RabbitmqSecrets",
    "password_hash",
    "rabbitmq_input",
    "rabbitmq_node",
    "read_secrets",
    "render_definitions",
    "restart_refusal",
]
