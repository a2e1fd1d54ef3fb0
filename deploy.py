"""The whole platform for one stack: ``pyinfra inventory/<env>-<dc>.py deploy.py``.

Components are composed in dependency order; each reads only its slice of the
typed model. The order, and why:

1. base host: names, package sources, trust anchors, time. Everything after
   installs packages and resolves platform names.
2. (next) squid before anything that downloads; etcd before Patroni (its DCS);
   Patroni before haproxy/keepalived (they route to its primary); Redis,
   RabbitMQ and MinIO before the stateless tier; nginx before Airflow.
"""

from pyinfra import host

from operations.base import BaseHostInput, base_host, read_extra_ca
from plinth.context import host_context
from plinth.trust import platform_trust_anchors

context = host_context(host.data, host.name)
environment = context.environment

base_host(
    BaseHostInput(
        hostname=context.host.name,
        fqdn=context.fqdn,
        hosts_entries=context.hosts_entries(),
        package_sources=environment.package_sources_for(context.datacenter.name),
        settings=environment.base,
        extra_ca_pem=read_extra_ca(
            environment.package_sources_for(context.datacenter.name).extra_ca_bundle,
            context.environment_file,
        ),
        trust_anchors=platform_trust_anchors(environment.name, context.environment_file),
    )
)
