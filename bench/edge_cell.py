"""The edge alone (squid, registry, nginx, the registry trust, keepalived), for timing
its no-op run (issue target: a no-op run of the edge <= 10 s).

    time pyinfra inventory/lab-dc1.py bench/edge_cell.py -y   # under the lab lock

The same calls deploy.py makes for the edge; the base host, the PKI and host TLS are
assumed deployed (run it on a lab after `plinth up lab --yes`).
"""

from pyinfra import host

from operations.keepalived import keepalived_input, keepalived_node
from operations.nginx import nginx_input, nginx_node
from operations.registry import (
    docker_trust_directory,
    registry_input,
    registry_instance,
    registry_trust,
)
from operations.registry import read_secrets as read_registry_secrets
from operations.registry import render as render_registry
from operations.squid import squid, squid_input
from plinth.certificates import host_certificates
from plinth.context import host_context
from plinth.model import Role

context = host_context(host.data, host.name)
environment = context.environment
certificates = {s.service: s for s in host_certificates(environment, context.host)}
if Role.SQUID in context.host.roles:
    squid(squid_input(environment, context.host))
if Role.REGISTRY in context.host.roles:
    registry = registry_input(context, certificates["registry"])
    registry_instance(registry, render_registry(registry, read_registry_secrets(context)))
if Role.NGINX in context.host.roles:
    nginx_node(nginx_input(context, certificates["nginx"], certificates["nginx-upstream"]))
trust_directory = docker_trust_directory(environment, context.datacenter.name)
if trust_directory is not None:
    registry_trust(trust_directory, certificates["host"])
if Role.KEEPALIVED in context.host.roles:
    keepalived_node(keepalived_input(context))
