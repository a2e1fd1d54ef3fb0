"""The whole platform for one stack: ``pyinfra inventory/<env>-<dc>.py deploy.py``.

Components are composed in dependency order; each reads only its slice of the
typed model. The order, and why:

1. base host: names, package sources, trust anchors, time. Everything after
   installs packages, resolves platform names and trusts the platform root.
2. the PostgreSQL cell's packages (etcd, Patroni/PostgreSQL, haproxy, keepalived by
   role), installed but not started: their service users must exist before host TLS
   makes the keys those users own.
3. host TLS: keys made on the host, certificates signed from CSRs, CRLs. Every
   TLS-speaking component after this finds its certificate in place.
4. etcd (Patroni's DCS), one member at a time when it restarts.
5. Patroni/PostgreSQL (needs etcd), then haproxy/keepalived (route to its primary).
6. RabbitMQ (needs only host TLS): Airflow's broker, before the stateless tier.
7. (next) squid before anything that downloads; etcd before Patroni (its DCS);
   Patroni before haproxy/keepalived (they route to its primary); Redis,
   RabbitMQ and MinIO before the stateless tier; nginx before Airflow.
"""

from pyinfra import host

from operations.base import BaseHostInput, base_host, read_extra_ca
from operations.etcd import etcd_input, etcd_member
from operations.haproxy import haproxy_input, haproxy_node
from operations.keepalived import keepalived_input, keepalived_node
from operations.patroni import (
    cell_packages_installed,
    patroni_input,
    patroni_member,
    read_passwords,
    render,
)
from operations.pki import host_tls
from operations.rabbitmq import rabbitmq_input, rabbitmq_node, read_secrets
from plinth.certificates import host_certificates
from plinth.context import host_context, tls_signer
from plinth.model import Role
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

cell_packages_installed(context.host.roles)

certificates = {spec.service: spec for spec in host_certificates(environment, context.host)}
signer, crls = tls_signer(context)
host_tls(
    list(certificates.values()),
    signer,
    crls,
    rotate_service=host.data.get("plinth_rotate_service"),
    rotate_keys=bool(host.data.get("plinth_rotate_keys")),
)

if Role.ETCD in context.host.roles:
    etcd_member(etcd_input(context, certificates["etcd"]))

if Role.POSTGRESQL in context.host.roles:
    patroni = patroni_input(
        context, certificates["patroni"], certificates["pg-replicator"], certificates["pg-rewind"]
    )
    patroni_member(patroni, render(patroni, read_passwords(context)))

if Role.HAPROXY in context.host.roles:
    haproxy_node(haproxy_input(context, certificates["haproxy"]))

if Role.KEEPALIVED in context.host.roles:
    keepalived_node(keepalived_input(context))

if Role.RABBITMQ in context.host.roles:
    rabbitmq_node(
        rabbitmq_input(context, certificates["rabbitmq"], certificates["rabbitmq-client"]),
        read_secrets(context),
        signer.store.ca_bundle_pem(intermediates=True).decode(),
    )
