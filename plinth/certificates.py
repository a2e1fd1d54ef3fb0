"""Which certificates each host carries, derived from the model.

One place answers "what should be on this host": the deploy issues exactly
these, and ``plinth pki status`` checks exactly these. Components add their
certificates here as they land (etcd peer/server, Patroni, nginx...).

SANs come from the model: the host's FQDN and address, plus the FQDN and
address of every VIP in the host's datacenter that serves the service. Short
names are left out on purpose: the DC intermediate is name-constrained to the
DC's domain and subnet, and a bare ``dc1-db1`` would fall outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from plinth.model import (
    AIRFLOW_ROLES,
    PATRONI_ROLES,
    REPLICATION_ROLE,
    REWIND_ROLE,
    Environment,
    Host,
    Role,
)
from plinth.pki import Profile
from plinth.pki.crl import ROOT

TLS_ROOT = "/etc/plinth/tls"


@dataclass(frozen=True)
class CertificateSpec:
    service: str
    profile: Profile
    common_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    owner: str = "root"
    group: str = "root"

    @property
    def directory(self) -> str:
        return f"{TLS_ROOT}/{self.service}"

    @property
    def key_path(self) -> str:
        return f"{self.directory}/{self.service}.key"

    @property
    def cert_path(self) -> str:
        return f"{self.directory}/{self.service}.crt"

    @property
    def chain_path(self) -> str:
        return f"{self.directory}/{self.service}-chain.crt"

    @property
    def ca_path(self) -> str:
        return f"{self.directory}/ca.crt"


def service_names(
    env: Environment, host: Host, service: str, *more_services: str
) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) a client may dial to reach ``service`` (or ``more_services``)
    on ``host``."""
    wanted = {service, *more_services}
    dns = [env.fqdn(host)]
    ips = [str(host.address)]
    for vip in env.vips_in(host.datacenter):
        if wanted & set(vip.services):
            dns.append(env.vip_fqdn(vip))
            ips.append(str(vip.address))
    return dns, ips


def host_certificates(env: Environment, host: Host) -> list[CertificateSpec]:
    """Every certificate ``host`` should carry, in deploy order."""
    dns, ips = service_names(env, host, "host")
    specs = [
        # The host's own identity: a peer certificate (server + client) that
        # platform tooling uses to authenticate the node, e.g. health probes.
        CertificateSpec(
            service="host",
            profile=Profile.PEER,
            common_name=env.fqdn(host),
            dns_names=tuple(dns),
            ip_addresses=tuple(ips),
        )
    ]
    if Role.ETCD in host.roles:
        # One peer certificate for both raft peers and clients: etcd checks that a
        # peer's certificate names its source address, so the node IP is a SAN.
        dns, ips = service_names(env, host, "etcd")
        specs.append(
            CertificateSpec(
                "etcd", Profile.PEER, env.fqdn(host), tuple(dns), tuple(ips), "etcd", "etcd"
            )
        )
    if Role.POSTGRESQL in host.roles:
        # PostgreSQL's server certificate (the pg VIP's names too: clients dial the VIP
        # with verify-full) and Patroni's: REST API server, client of the other
        # members' APIs and of etcd.
        dns, ips = service_names(env, host, "postgresql")
        specs.append(
            CertificateSpec(
                "patroni",
                Profile.PEER,
                env.fqdn(host),
                tuple(dns),
                tuple(ips),
                "postgres",
                "postgres",
            )
        )
        # Patroni's own PostgreSQL roles log in with these (pg_hba ``clientcert=verify-full``
        # maps CN to role).
        for service, role in (("pg-replicator", REPLICATION_ROLE), ("pg-rewind", REWIND_ROLE)):
            specs.append(
                CertificateSpec(service, Profile.CLIENT, role, (), (), "postgres", "postgres")
            )
    for role, service in ((Role.REDIS, "redis"), (Role.SENTINEL, "redis-sentinel")):
        if role in host.roles:
            # Peer: the server certificate of the TLS port, and the client certificate the
            # node presents to the others (replication, Sentinel to Redis and to Sentinel).
            # Owned by the release's service user (redis on Debian 12, valkey on 13).
            store = env.debian.key_value_store
            dns, ips = service_names(env, host, service)
            specs.append(
                CertificateSpec(
                    service,
                    Profile.PEER,
                    env.fqdn(host),
                    tuple(dns),
                    tuple(ips),
                    store.user,
                    store.group,
                )
            )
    if Role.RABBITMQ in host.roles:
        # Erlang/OTP 25 (Debian 12) crashes (function_clause in pubkey_cert:match_name)
        # validating a leaf with an IP SAN under an intermediate with an IP name
        # constraint, so RabbitMQ's certificates carry DNS names only: a server
        # certificate for AMQPS, the management API and incoming Erlang distribution, and
        # a client one (CN = FQDN) for the node and its CLI dialling peers. Nodes are named
        # rabbit@<FQDN> (long names), so peers verify the FQDN in the server certificate.
        dns, _ = service_names(env, host, "rabbitmq")
        owner = ("rabbitmq", "rabbitmq")
        fqdn = env.fqdn(host)
        specs.append(CertificateSpec("rabbitmq", Profile.SERVER, fqdn, tuple(dns), (), *owner))
        specs.append(CertificateSpec("rabbitmq-client", Profile.CLIENT, fqdn, (), (), *owner))
    if Role.HAPROXY in host.roles:
        # haproxy's health checks are clients of Patroni's REST API (verify_client: required).
        specs.append(CertificateSpec("haproxy", Profile.CLIENT, env.fqdn(host), (), ()))
    if Role.NGINX in host.roles:
        # nginx terminates TLS for every virtual host on the VIPs that route them, and is a
        # client of its upstreams (they require a platform client certificate).
        vhosts = [v.name for v in env.components.nginx.virtual_hosts]
        dns, ips = service_names(env, host, "nginx", *vhosts)
        specs.append(
            CertificateSpec("nginx", Profile.SERVER, env.fqdn(host), tuple(dns), tuple(ips))
        )
        specs.append(CertificateSpec("nginx-upstream", Profile.CLIENT, env.fqdn(host), (), ()))
    if Role.REGISTRY in host.roles:
        # nginx dials every instance under the registry VIP's name (one ``proxy_ssl_name``
        # for the whole upstream group), so the instances carry it too.
        dns, ips = service_names(env, host, "registry")
        specs.append(
            CertificateSpec(
                "registry",
                Profile.SERVER,
                env.fqdn(host),
                tuple(dns),
                tuple(ips),
                "docker-registry",
                "docker-registry",
            )
        )
    airflow = env.components.airflow
    if airflow.services and any(role in host.roles for role in AIRFLOW_ROLES):
        # Every Airflow process is a client of PostgreSQL (``cert`` rule: CN = role) and of
        # RabbitMQ (SASL EXTERNAL: CN = user) under one identity. Only with the services
        # on: the install alone needs no certificate.
        owner = ("airflow", "airflow")
        specs.append(
            CertificateSpec("airflow-client", Profile.CLIENT, airflow.identity, (), (), *owner)
        )
        if Role.AIRFLOW_API in host.roles:
            # nginx dials the api-servers under the names of the VIP routing ``airflow``;
            # the workers' Task SDK dials the host's own name.
            dns, ips = service_names(env, host, "airflow")
            specs.append(
                CertificateSpec(
                    "airflow-api", Profile.SERVER, env.fqdn(host), tuple(dns), tuple(ips), *owner
                )
            )
    return specs


def reserved_client_identities(env: Environment) -> dict[str, str]:
    """Client CNs ``plinth pki client-cert`` refuses, lower-cased, each with the reason.

    Derived, not listed by hand: every CN :func:`host_certificates` gives any host (host and
    member FQDNs, Patroni's replication and rewind roles, Airflow's identity...), every
    host's short name and FQDN, Patroni's own PostgreSQL roles, Airflow's identity even with
    its services off, and every identity a virtual host grants writes to. A certificate for
    one of them would let its holder act as a platform component or with its privileges.
    """
    reserved: dict[str, str] = {}

    def add(identity: str, why: str) -> None:
        reserved.setdefault(identity.lower().removesuffix("."), why)

    for host in env.hosts:
        for spec in host_certificates(env, host):
            add(
                spec.common_name,
                f"the platform issues it to {host.name} (its {spec.service} certificate)",
            )
        add(env.fqdn(host), f"it is the name of host {host.name}")
        add(host.name, f"it is the name of host {host.name}")
    for role in PATRONI_ROLES:
        add(role, "it is a PostgreSQL role Patroni itself logs in as")
    airflow = env.components.airflow
    add(
        airflow.identity,
        "it is Airflow's identity (components.airflow.identity): the PostgreSQL role and "
        "RabbitMQ user of the Airflow hosts",
    )
    for index, vhost in enumerate(env.components.nginx.virtual_hosts):
        for identity in vhost.write_identities:
            add(
                identity,
                f"it may write through the {vhost.name} virtual host "
                f"(components.nginx.virtual_hosts[{index}].write_identities)",
            )
    return reserved


CRL_DIR = f"{TLS_ROOT}/crl"
ALL_CRLS = f"{CRL_DIR}/all.crl.pem"
"""The root's CRL and every datacenter's in one file: for OpenSSL verifiers (PostgreSQL
``ssl_crl_file``, nginx ``ssl_crl``, haproxy ``crl-file``), which check every certificate of
the chain (``X509_V_FLAG_CRL_CHECK_ALL``) and refuse a chain whose issuer has no CRL."""


def crl_path(issuer: str) -> str:
    """Where the hosts keep one issuer's CRL: a datacenter's (``dc1``) or the root's
    (:data:`plinth.pki.crl.ROOT`). etcd reads its datacenter's: it checks serials against
    the first CRL of its file only."""
    return f"{CRL_DIR}/{issuer}.crl.pem"


def all_crls_pem(crls: dict[str, bytes]) -> bytes:
    """:data:`ALL_CRLS`' content: the root's CRL first, then the datacenters' by name."""
    ordered = sorted(crls.items(), key=lambda item: (item[0] != ROOT, item[0]))
    return b"".join(pem for _, pem in ordered)
