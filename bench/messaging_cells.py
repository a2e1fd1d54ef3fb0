"""The Redis + Sentinel cell and the RabbitMQ cell alone, for timing their no-op run
together (issue target: a no-op run of both cells <= 15 s).

    time pyinfra inventory/lab-dc1.py bench/messaging_cells.py -y   # under the lab lock

The same calls deploy.py makes for the two cells; the base host, the PKI and host TLS
are assumed deployed (run it on a lab after `plinth up lab --yes`).
"""

from pyinfra import host

from operations.rabbitmq import rabbitmq_input, rabbitmq_node
from operations.rabbitmq import read_secrets as read_rabbitmq_secrets
from operations.redis import read_passwords as read_redis_passwords
from operations.redis import redis_node
from plinth.certificates import host_certificates
from plinth.context import host_context, tls_signer
from plinth.model import Role
from plinth.topology.redis import redis_input

context = host_context(host.data, host.name)
certificates = {s.service: s for s in host_certificates(context.environment, context.host)}
if Role.REDIS in context.host.roles or Role.SENTINEL in context.host.roles:
    redis_node(
        redis_input(context, certificates.get("redis"), certificates.get("redis-sentinel")),
        read_redis_passwords(context),
    )
if Role.RABBITMQ in context.host.roles:
    rabbitmq_node(
        rabbitmq_input(context, certificates["rabbitmq"], certificates["rabbitmq-client"]),
        read_rabbitmq_secrets(context),
        tls_signer(context)[0].store.ca_bundle_pem(intermediates=True).decode(),
        crl_issuers=sorted(tls_signer(context)[1]),
    )
