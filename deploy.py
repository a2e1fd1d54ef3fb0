"""The whole platform for one stack: ``pyinfra inventory/<env>-<dc>.py deploy.py``.

Components are composed in dependency order; each reads only its slice of the
typed model. The order, and why:

1. base host: names, package sources, trust anchors, time. Everything after
   installs packages, resolves platform names and trusts the platform root.
2. host TLS: keys made on the host, certificates signed from CSRs, CRLs. Every
   TLS-speaking component after this finds its certificate in place.
3. (next) squid before anything that downloads; etcd before Patroni (its DCS);
   Patroni before haproxy/keepalived (they route to its primary); Redis,
   RabbitMQ and MinIO before the stateless tier; nginx before Airflow.
"""

from pyinfra import host

from operations.base import BaseHostInput, base_host, read_extra_ca
from operations.pki import host_tls
from plinth.certificates import host_certificates
from plinth.context import host_context, tls_signer
from plinth.trust import platform_trust_anchors

context = host_context(host.data, host.name)
environment = context.environment
sources = environment.package_sources_for(context.datacenter.name)

base_host(
    BaseHostInput(
        hostname=context.host.name,
        fqdn=context.fqdn,
        hosts_entries=context.hosts_entries(),
        package_sources=sources,
        settings=environment.base,
        extra_ca_pem=read_extra_ca(sources.extra_ca_bundle, context.environment_file),
        trust_anchors=platform_trust_anchors(environment.name, context.environment_file),
        routes=context.inter_dc_routes(),
    )
)

signer, crls = tls_signer(context)
host_tls(
    host_certificates(environment, context.host),
    signer,
    crls,
    rotate_service=host.data.get("plinth_rotate_service"),
    rotate_keys=bool(host.data.get("plinth_rotate_keys")),
)
