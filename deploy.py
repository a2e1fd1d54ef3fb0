"""The whole platform for one stack: ``pyinfra inventory/<env>-<dc>.py deploy.py``.

Components are composed in dependency order; each reads only its slice of the
typed model. The order, and why:

1. base host: names, package sources, trust anchors, time. Everything after
   installs packages, resolves platform names and trusts the platform root. Then the
   host firewall (``network.firewall``), before any daemon of a later step listens:
   its rules come from the model's flows, not from what runs, so every port a later
   step opens is already admitted from its sources and from nobody else; it needs the
   package sources for nftables (squid hosts get theirs before squid, like the rest
   of their base).
2. the PostgreSQL cell's packages (etcd, Patroni/PostgreSQL, haproxy, keepalived by
   role), installed but not started: their service users must exist before host TLS
   makes the keys those users own.
3. host TLS: keys made on the host, certificates signed from CSRs, CRLs. Every
   TLS-speaking component after this finds its certificate in place; what host TLS
   changed (``TlsChanges``) makes nginx, haproxy and Patroni/PostgreSQL reload (etcd reads
   its certificate and CRL at every handshake).
4. etcd (Patroni's DCS), one member at a time when it restarts.
5. Patroni/PostgreSQL (needs etcd), then haproxy (routes to its primary).
6. the edge: the registry before nginx (its upstream); every host trusts the DC's
   registry.
7. keepalived after haproxy and nginx: a VIP moves only to a node whose service (the
   PostgreSQL route, the edge) is already configured.
8. Redis + Sentinel (their packages come with the cell's, before host TLS: the keys
   belong to its service user, ``redis`` or ``valkey`` by release).
9. RabbitMQ (needs only host TLS): Airflow's broker, before the stateless tier.
10. Airflow last (offline install from the controller's wheelhouse; needs PostgreSQL
   and RabbitMQ, and nginx before its api-server); MinIO, when it lands, before the
   stateless tier too. With ``components.airflow.services`` (off by default) the
   ``airflow`` user comes before host TLS (it owns the Airflow certificates' keys), the
   role and database with Patroni's, and the configuration and units after the install.

squid comes first: the squid hosts run the base deploy, their packages and squid
before any other host starts its base deploy (an ordering point every host passes,
see below), because the other hosts may install everything through it
(``package_sources.http_proxy``). squid needs no certificate; the squid hosts
themselves go direct.
"""

from pyinfra import host, state

from operations.airflow import (
    AirflowInstall,
    airflow_config,
    airflow_installed,
    airflow_services,
    airflow_user,
)
from operations.airflow import read_secrets as read_airflow_secrets
from operations.base import BaseHostInput, applied_active_datacenter, base_host, read_extra_ca
from operations.etcd import etcd_input, etcd_member
from operations.firewall import firewall_input, host_firewall
from operations.haproxy import haproxy_input, haproxy_node
from operations.keepalived import keepalived_input, keepalived_node
from operations.nginx import nginx_input, nginx_node
from operations.patroni.install import PatroniInstall
from operations.patroni.member import patroni_member
from operations.patroni.packages import cell_packages_installed
from operations.patroni.settings import patroni_input, read_passwords, render, render_curlrc
from operations.pki import host_tls
from operations.rabbitmq import rabbitmq_input, rabbitmq_node
from operations.rabbitmq import read_secrets as read_rabbitmq_secrets
from operations.redis import read_passwords as read_redis_passwords
from operations.redis import redis_node
from operations.registry import (
    docker_trust_directory,
    registry_input,
    registry_instance,
    registry_trust,
)
from operations.registry import read_secrets as read_registry_secrets
from operations.registry import render as render_registry
from operations.squid import client_proxies, egress_ordering_point, squid, squid_input
from plinth import progress
from plinth.certificates import host_certificates
from plinth.context import host_context, tls_signer
from plinth.model import Role
from plinth.topology.airflow import has_airflow
from plinth.topology.redis import redis_input
from plinth.trust import platform_trust_anchors
from plinth.wheelhouse import airflow_wheelhouse, patroni_wheelhouse

# `plinth up` follows the run through these events (nothing without PLINTH_PROGRESS_FILE)
progress.register(state, host.name)
context = host_context(host.data, host.name)
environment = context.environment
sources = environment.package_sources_for(context.datacenter.name)

is_squid_host = Role.SQUID in context.host.roles


def base_and_packages() -> None:
    """The base host and its firewall, then the packages of every role (installed, not
    started)."""
    base_host(
        BaseHostInput(
            hostname=context.host.name,
            fqdn=context.fqdn,
            hosts_entries=context.hosts_entries(),
            package_sources=sources,
            settings=environment.base,
            suite=environment.release,
            extra_ca_pem=read_extra_ca(sources.extra_ca_bundle, context.environment_file),
            trust_anchors=platform_trust_anchors(environment.name, context.environment_file),
            routes=context.inter_dc_routes(),
            proxies=client_proxies(environment, context.host),
        )
    )
    host_firewall(firewall_input(environment, context.host))
    cell_packages_installed(context.host.roles, context.environment.debian)


# The way out first. pyinfra runs one operation on every host before the next, in the
# order of a graph merged from each host's sequence (operations are identified by the
# lines they are called from). The squid hosts' base, packages and squid are called
# here, the other hosts' base and packages below, and every host passes the ordering
# point in between: so nothing installs through squid before squid runs.
if is_squid_host:
    base_and_packages()
    squid(squid_input(environment, context.host))

egress_ordering_point(name="Egress before the hosts that use it", is_squid_host=is_squid_host)

if not is_squid_host:
    base_and_packages()

airflow_services_on = has_airflow(context.host.roles) and environment.components.airflow.services
if airflow_services_on:
    airflow_user()

certificates = {spec.service: spec for spec in host_certificates(environment, context.host)}
signer, crls = tls_signer(context)
tls = host_tls(
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
    patroni_passwords = read_passwords(context)
    patroni_member(
        patroni,
        render(patroni, patroni_passwords),
        render_curlrc(patroni_passwords),
        PatroniInstall(patroni_wheelhouse(environment)),
        # PostgreSQL serves the patroni certificate and checks clients against the CRLs.
        tls_changed=lambda: tls.changed("patroni"),
    )

if Role.HAPROXY in context.host.roles:
    haproxy_node(haproxy_input(context, certificates["haproxy"]), tls_changed=tls.crl_changed)

if Role.REGISTRY in context.host.roles:
    registry = registry_input(context, certificates["registry"])
    registry_instance(registry, render_registry(registry, read_registry_secrets(context)))

if Role.NGINX in context.host.roles:
    nginx_node(
        nginx_input(context, certificates["nginx"], certificates["nginx-upstream"]),
        tls_changed=lambda: tls.changed("nginx", "nginx-upstream"),
    )

registry_trust_directory = docker_trust_directory(environment, context.datacenter.name)
if registry_trust_directory is not None:
    registry_trust(registry_trust_directory, certificates["host"])

if Role.KEEPALIVED in context.host.roles:
    keepalived_node(keepalived_input(context))

if Role.REDIS in context.host.roles or Role.SENTINEL in context.host.roles:
    redis_node(
        redis_input(context, certificates.get("redis"), certificates.get("redis-sentinel")),
        read_redis_passwords(context),
    )

if Role.RABBITMQ in context.host.roles:
    rabbitmq_node(
        rabbitmq_input(context, certificates["rabbitmq"], certificates["rabbitmq-client"]),
        read_rabbitmq_secrets(context),
        signer.store.ca_bundle_pem(intermediates=True).decode(),
        crl_issuers=sorted(crls),
        certificates_changed=lambda: tls.certificate_changed("rabbitmq", "rabbitmq-client"),
    )

if has_airflow(context.host.roles):
    airflow_install = AirflowInstall(airflow_wheelhouse(environment))
    airflow_installed(airflow_install)
    if airflow_services_on:
        airflow_services(
            airflow_config(context, certificates),
            read_airflow_secrets(context),
            airflow_install.venv,
        )

# Last: a host records the active datacenter it applied only once everything above did
# (pyinfra stops a host at its first failed operation); the DC commands read it.
applied_active_datacenter(environment.active_site)
