"""Only the Redis + Sentinel cell, for timing its no-op run (``bench/redis.py``).

    pyinfra inventory/lab-dc1.py bench/redis_cell.py -y

The same calls as deploy.py makes for the cell; the base host, the PKI and the
PostgreSQL cell are assumed deployed.
"""

from pyinfra import host

from operations.redis import read_passwords, redis_node
from plinth.certificates import host_certificates
from plinth.context import host_context
from plinth.model import Role
from plinth.topology.redis import redis_input

context = host_context(host.data, host.name)
certificates = {s.service: s for s in host_certificates(context.environment, context.host)}
if Role.REDIS in context.host.roles or Role.SENTINEL in context.host.roles:
    redis_node(
        redis_input(context, certificates.get("redis"), certificates.get("redis-sentinel")),
        read_passwords(context),
    )
