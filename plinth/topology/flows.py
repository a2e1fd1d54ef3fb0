"""What can talk to what: every listener the deploy creates, who may reach it and why, and
where each host may go, derived from the model alone.

:func:`listeners` lists, per host, every socket the deploy makes a daemon open to the
network (address, protocol, port, the model setting the port comes from, how it is
secured). :func:`flows` gives each listener its allowed inbound flows: the sources (a set
of the platform's hosts, or the networks ``network.controllers`` and ``network.clients``
declare), the kind of flow and a one-line reason. :func:`egress` is the other direction:
what each host reaches inside the platform (exactly the inbound flows it is a source of)
and outside it (the package sources for squid and for hosts without a proxy, time, name
resolution, the registry's object store).

This is the one statement of the platform's network: ``plinth flows`` prints it, the
diagram (:mod:`plinth.diagram`) draws its flows from it, docs/security.md shows it, and
the host firewall and ``plinth audit`` are to be built from it (issue 16). Nothing is
numbered by hand: every port is the model's setting the templates render (the one
exception, epmd's 4369, is Erlang's own default, which plinth does not configure).

What runs is what the model runs now: a standby site's Airflow units and a following
DC's Sentinels are stopped, so they have no listener here; a DC takeover is a deploy,
which recomputes the flows. A flow whose sources are empty (no client network declared,
nobody using a squid) is kept: a listener nobody may reach is shown, not dropped.

Loopback is not a flow: a host reaching its own address goes through ``lo`` (the Airflow
workers beside an api-server, a member reading its own Patroni), which a firewall admits
as a whole; so is traffic of connections already admitted (replies, their ICMP errors).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from plinth.model import (
    AIRFLOW_ROLES,
    ROLE_COMPONENT,
    Environment,
    Host,
    Role,
    Vip,
    VirtualHost,
)
from plinth.topology.airflow import execution_api_server
from plinth.topology.keepalived import front_ports, vip_holders
from plinth.topology.redis import upstream_of
from plinth.topology.squid import allowed_domains, client_proxies, proxy_endpoint


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    VRRP = "vrrp"
    """IP protocol 112 (keepalived's adverts): no port."""
    ICMP = "icmp"
    """Echo requests: no port."""


IP_PROTOCOL_NUMBERS: dict[Protocol, int] = {
    Protocol.TCP: 6,
    Protocol.UDP: 17,
    Protocol.VRRP: 112,
    Protocol.ICMP: 1,
}

EPMD_PORT = 4369
"""Erlang's port mapper daemon, on every RabbitMQ node (all addresses): a node asks a
peer's epmd for the peer's distribution port. Erlang's default; plinth sets no
``ERL_EPMD_PORT``, so the model has no field for it."""

CLI_PORT_OFFSET = 10000
CLI_PORTS = 11
"""``rabbitmqctl`` and ``rabbitmq-diagnostics`` start an Erlang node of their own, whose
distribution listener takes a port from the node's distribution port + 10000 to + 10010
(RabbitMQ's networking guide: 35672-35682). A cluster-wide command (``list_connections``,
``list_queues``) makes every peer answer that node over a connection of the peer's own,
so the peers must reach it: without the flow such a command hangs."""

NTP_PORT = 123
DNS_PORT = 53
DEBIAN_NTP_POOL = "2.debian.pool.ntp.org"
"""chrony's source on Debian when ``base.ntp_servers`` is empty (Debian's chrony.conf)."""


class Security(StrEnum):
    """How a listener protects what it carries."""

    MUTUAL_TLS = "mTLS"
    """TLS, and the client presents a certificate of the platform PKI."""
    TLS = "TLS"
    """TLS, the client needs no certificate."""
    PLAIN = "not TLS"
    """squid's HTTP proxy port (CONNECT carries the TLS of the destination)."""
    SSH = "SSH"
    """SSH's own encryption and keys (the controller's)."""
    NONE = "-"
    """Not a stream: VRRP adverts, ICMP echo."""


class FlowKind(StrEnum):
    CLIENT = "client"
    """Applications and operators (``network.clients``) into the platform."""
    OPERATOR = "operator"
    """The controller (``network.controllers``): SSH, reads."""
    PEER = "peer"
    """The members of one cluster (or of one VIP) among themselves."""
    SERVICE = "service"
    """One component to another inside a datacenter."""
    EGRESS = "egress"
    """Hosts to their way out (squid) or out of the platform."""
    CROSS_SITE = "cross-site"
    """A standby datacenter following the active one (or the active one watching it)."""


@dataclass(frozen=True)
class Listener:
    """A socket the deploy makes a daemon open to the network."""

    host: str
    datacenter: str
    protocol: Protocol
    port: int | None
    bind: str
    """The address it is bound to, ``*`` for every address."""
    component: str
    """The component (``operations/<component>.py``; ``base`` for SSH and ICMP)."""
    name: str
    """What it serves, in a few words (``etcd peers``, ``rw``, ``registry``)."""
    setting: str
    """Where its port comes from: the model's field, or why it is fixed."""
    security: Security
    port_end: int | None = None
    """The last port of a range starting at ``port`` (None: one port)."""
    transient: bool = False
    """Open only while something runs (a CLI tool's own listeners): ``plinth audit`` does
    not expect it to listen, and probes nothing there."""

    @property
    def port_text(self) -> str:
        """``5432/tcp``, ``35672-35682/tcp``, ``vrrp``, ``icmp``."""
        if self.port is None:
            return str(self.protocol)
        end = f"-{self.port_end}" if self.port_end is not None else ""
        return f"{self.port}{end}/{self.protocol}"

    def serves(self, port: int) -> bool:
        """Whether ``port`` is this listener's port (or within its range)."""
        if self.port is None:
            return False
        return self.port <= port <= (self.port_end or self.port)


@dataclass(frozen=True)
class Sources:
    """Who may open a flow: some of the platform's hosts, or declared networks."""

    label: str
    """In words: ``etcd members of dc1``, ``the controller (network.controllers)``."""
    hosts: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    """Networks (CIDR) from ``network.controllers`` / ``network.clients``."""
    addresses: tuple[str, ...] = ()
    """The addresses of ``hosts``, in their order (what a firewall rule names)."""
    component: str | None = None
    """The component whose hosts these are (None: the controller, the clients, any host)."""
    datacenter: str | None = None
    """The datacenter of those hosts (None: outside the platform, or several)."""

    @property
    def empty(self) -> bool:
        return not self.hosts and not self.networks


@dataclass(frozen=True)
class Flow:
    """One allowed inbound flow: ``sources`` may reach ``listener`` at ``address``."""

    listener: Listener
    address: str
    """The address the sources dial: the host's own or a VIP's."""
    sources: Sources
    kind: FlowKind
    reason: str

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def protocol(self) -> Protocol:
        return self.listener.protocol

    @property
    def port(self) -> int | None:
        return self.listener.port

    @property
    def component(self) -> str:
        return self.listener.component


@dataclass(frozen=True)
class Egress:
    """Where ``host`` may open connections (its firewall's outbound side)."""

    host: str
    datacenter: str
    protocol: Protocol
    port: int | None
    destinations: tuple[str, ...]
    """Addresses (a platform host's, a VIP's) or names outside the platform. Empty: the
    model does not say (DNS resolvers): shown so, never dropped."""
    label: str
    """The destinations in words."""
    component: str
    reason: str
    external: bool = False
    """Leaves the platform (a mirror, an NTP server, a resolver, an external proxy)."""
    port_end: int | None = None
    """The last port of a range starting at ``port`` (None: one port)."""

    @property
    def port_text(self) -> str:
        if self.port is None:
            return str(self.protocol)
        end = f"-{self.port_end}" if self.port_end is not None else ""
        return f"{self.port}{end}/{self.protocol}"


# ---- the listeners ----


def _served_vhosts(env: Environment, dc: str) -> list[tuple[int, VirtualHost]]:
    """(index, virtual host) of the virtual hosts ``dc``'s nginx serves: those whose
    upstream role has hosts there (operations/nginx.py leaves the others out)."""
    return [
        (i, v)
        for i, v in enumerate(env.components.nginx.virtual_hosts)
        if env.hosts_with(v.upstream_role, dc)
    ]


def airflow_runs(env: Environment, dc: str) -> bool:
    """Airflow's units run in ``dc``: services on, and the active site (a standby keeps
    them installed and stopped)."""
    return env.components.airflow.services and dc == env.active_site


def running_sentinels(env: Environment, dc: str) -> list[Host]:
    """``dc``'s Sentinels that run: none in a DC following the active one."""
    return [] if upstream_of(env, dc) is not None else env.hosts_with(Role.SENTINEL, dc)


def _host_listeners(env: Environment, host: Host) -> Iterator[Listener]:
    c = env.components
    dc = host.datacenter
    address = str(host.address)

    def listener(
        protocol: Protocol,
        port: int | None,
        component: str,
        name: str,
        setting: str,
        security: Security,
        bind: str = address,
    ) -> Listener:
        return Listener(host.name, dc, protocol, port, bind, component, name, setting, security)

    tcp = Protocol.TCP
    yield listener(tcp, env.ssh.port, "base", "SSH", "ssh.port", Security.SSH, "*")
    yield listener(Protocol.ICMP, None, "base", "echo", "(ICMP echo request)", Security.NONE, "*")
    roles = host.roles
    if Role.ETCD in roles:
        yield listener(
            tcp,
            c.etcd.client_port,
            "etcd",
            "etcd",
            "components.etcd.client_port",
            Security.MUTUAL_TLS,
        )
        yield listener(
            tcp,
            c.etcd.peer_port,
            "etcd",
            "etcd peers",
            "components.etcd.peer_port",
            Security.MUTUAL_TLS,
        )
    if Role.POSTGRESQL in roles:
        yield listener(
            tcp,
            c.patroni.postgresql_port,
            "patroni",
            "PostgreSQL",
            "components.patroni.postgresql_port",
            Security.MUTUAL_TLS,
        )
        yield listener(
            tcp,
            c.patroni.rest_api_port,
            "patroni",
            "Patroni API",
            "components.patroni.rest_api_port",
            Security.MUTUAL_TLS,
        )
    if Role.HAPROXY in roles:
        # haproxy binds every PostgreSQL VIP of its DC, held or not (ip_nonlocal_bind)
        for vip in env.vips_in(dc):
            if "postgresql" in vip.services:
                for port, name, setting in (
                    (c.haproxy.primary_port, "rw", "components.haproxy.primary_port"),
                    (c.haproxy.replica_port, "ro", "components.haproxy.replica_port"),
                ):
                    yield listener(
                        tcp, port, "haproxy", name, setting, Security.MUTUAL_TLS, str(vip.address)
                    )
    if Role.KEEPALIVED in roles:
        for index, vip in enumerate(env.vips):
            if vip.datacenter == dc and host in vip_holders(env, vip):
                yield listener(
                    Protocol.VRRP,
                    None,
                    "keepalived",
                    f"VRRP {vip.name}",
                    f"vips[{index}].router_id ({vip.router_id})",
                    Security.NONE,
                )
    if Role.NGINX in roles:
        for index, vhost in _served_vhosts(env, dc):
            yield listener(
                tcp,
                vhost.port,
                "nginx",
                vhost.name,
                f"components.nginx.virtual_hosts[{index}].port",
                Security.MUTUAL_TLS if vhost.client_certificates == "required" else Security.TLS,
                "*",
            )
    if Role.SQUID in roles:
        yield listener(
            tcp, c.squid.port, "squid", "proxy", "components.squid.port", Security.PLAIN, "*"
        )
    if Role.REGISTRY in roles:
        yield listener(
            tcp,
            c.registry.port,
            "registry",
            "registry",
            "components.registry.port",
            Security.MUTUAL_TLS,
        )
    if Role.AIRFLOW_API in roles and airflow_runs(env, dc):
        yield listener(
            tcp,
            c.airflow.api_port,
            "airflow",
            "api-server",
            "components.airflow.api_port",
            Security.TLS,
            "*",
        )
    if Role.REDIS in roles:
        yield listener(
            tcp,
            c.redis.port,
            "redis",
            env.debian.key_value_store.product,
            "components.redis.port",
            Security.MUTUAL_TLS,
        )
    if Role.SENTINEL in roles and host in running_sentinels(env, dc):
        yield listener(
            tcp,
            c.redis.sentinel_port,
            "redis",
            "Sentinel",
            "components.redis.sentinel_port",
            Security.MUTUAL_TLS,
        )
    if Role.RABBITMQ in roles:
        r = c.rabbitmq
        for port, name, setting in (
            (r.amqps_port, "AMQPS", "components.rabbitmq.amqps_port"),
            (r.management_port, "management", "components.rabbitmq.management_port"),
            (r.distribution_port, "distribution", "components.rabbitmq.distribution_port"),
        ):
            yield listener(tcp, port, "rabbitmq", name, setting, Security.MUTUAL_TLS, "*")
        yield listener(
            tcp,
            EPMD_PORT,
            "rabbitmq",
            "epmd",
            "(Erlang's default; ERL_EPMD_PORT unset)",
            Security.PLAIN,
            "*",
        )
        yield replace(
            listener(
                tcp,
                r.distribution_port + CLI_PORT_OFFSET,
                "rabbitmq",
                "CLI tools",
                "components.rabbitmq.distribution_port + 10000 to + 10010 (RabbitMQ's "
                "CLI tools' own distribution listeners, while one runs)",
                Security.MUTUAL_TLS,
                "*",
            ),
            port_end=r.distribution_port + CLI_PORT_OFFSET + CLI_PORTS - 1,
            transient=True,
        )


def listeners(env: Environment) -> list[Listener]:
    """Every listener of every host, host by host in the model's order."""
    return [item for host in env.hosts for item in _host_listeners(env, host)]


def vip_listeners(env: Environment, vip: Vip) -> list[Listener]:
    """The listeners that serve ``vip`` on the hosts of its DC: haproxy's bound to it,
    nginx's for the virtual hosts it lists, squid's when it lists ``squid``."""
    vhosts = {v.name for v in env.components.nginx.virtual_hosts if v.name in vip.services}
    served = []
    for item in listeners(env):
        if item.datacenter != vip.datacenter:
            continue
        if (
            (item.component == "haproxy" and item.bind == str(vip.address))
            or (item.component == "nginx" and item.name in vhosts)
            or (item.component == "squid" and "squid" in vip.services)
        ):
            served.append(item)
    return served


# ---- the inbound flows ----


def _names(hosts: Iterable[Host], but: str | None = None) -> tuple[str, ...]:
    return tuple(h.name for h in hosts if h.name != but)


def _airflow_hosts(env: Environment, dc: str) -> list[Host]:
    return [h for h in env.hosts_in(dc) if any(r in h.roles for r in AIRFLOW_ROLES)]


@dataclass
class _Builder:
    """Collects flows against the listeners, looked up by (host, protocol, port) and the
    address the flow dials."""

    env: Environment
    by_key: dict[tuple[str, Protocol, int | None], list[Listener]] = field(default_factory=dict)
    out: list[Flow] = field(default_factory=list)

    def __post_init__(self) -> None:
        for item in listeners(self.env):
            self.by_key.setdefault((item.host, item.protocol, item.port), []).append(item)

    def find(
        self, host: Host, protocol: Protocol, port: int | None, address: str, name: str = ""
    ) -> Listener | None:
        """The listener of ``host`` a flow to ``address`` reaches: bound to that address or
        to every address. (One port may serve twice on a host: haproxy's 5000 on the VIP,
        the registry's 5000 on the host's own address, in the small lab.)"""
        for item in self.by_key.get((host.name, protocol, port), []):
            if item.bind in ("*", address) and (not name or item.name == name):
                return item
        return None

    def upstream(self, host: Host, index: int, vhost: VirtualHost) -> None:
        """The listener nginx's ``vhost`` proxies to on ``host``. When the model runs
        nothing there (an upstream role whose daemon is off), a listener that says so is
        made up, so that the flow is shown rather than dropped."""
        if self.find(host, Protocol.TCP, vhost.upstream_port, str(host.address)) is None:
            self.by_key.setdefault((host.name, Protocol.TCP, vhost.upstream_port), []).append(
                Listener(
                    host.name,
                    host.datacenter,
                    Protocol.TCP,
                    vhost.upstream_port,
                    str(host.address),
                    ROLE_COMPONENT[vhost.upstream_role][0],
                    f"{vhost.name} upstream, not running",
                    f"components.nginx.virtual_hosts[{index}].upstream_port",
                    Security.NONE,
                )
            )

    def add(
        self,
        host: Host,
        port: int | None,
        sources: Sources,
        kind: FlowKind,
        reason: str,
        *,
        protocol: Protocol = Protocol.TCP,
        address: str | None = None,
        name: str = "",
    ) -> None:
        address = address or str(host.address)
        target = self.find(host, protocol, port, address, name)
        if target is None:
            raise KeyError(f"no listener {port}/{protocol} {name} at {address} on {host.name}")
        # a host reaching itself goes through loopback: never a flow
        others = [i for i, name in enumerate(sources.hosts) if name != host.name]
        sources = replace(
            sources,
            hosts=tuple(sources.hosts[i] for i in others),
            addresses=tuple(sources.addresses[i] for i in others),
        )
        self.out.append(Flow(target, address, sources, kind, reason))


def _hosts(label: str, hosts: Iterable[Host], component: str | None, dc: str | None) -> Sources:
    chosen = list(hosts)
    return Sources(label, _names(chosen), (), tuple(str(h.address) for h in chosen), component, dc)


def controller(env: Environment) -> Sources:
    return Sources(
        "the controller (network.controllers)", (), tuple(str(n) for n in env.network.controllers)
    )


def clients(env: Environment) -> Sources:
    return Sources("clients (network.clients)", (), tuple(str(n) for n in env.network.clients))


def flows(env: Environment) -> list[Flow]:
    """Every allowed inbound flow, datacenter by datacenter, component by component."""
    b = _Builder(env)
    for host in env.hosts:
        b.add(
            host,
            env.ssh.port,
            controller(env),
            FlowKind.OPERATOR,
            "plinth deploys and reads the host over SSH (pyinfra)",
        )
        b.add(
            host,
            None,
            controller(env),
            FlowKind.OPERATOR,
            "operators check that the host answers (ping)",
            protocol=Protocol.ICMP,
        )
    for dc in env.datacenters:
        _etcd_and_patroni(env, dc.name, b)
        _haproxy(env, dc.name, b)
        _keepalived(env, dc.name, b)
        _edge(env, dc.name, b)
        _airflow(env, dc.name, b)
        _redis(env, dc.name, b)
        _rabbitmq(env, dc.name, b)
    # host by host in the model's order, each host's listeners in their order
    hosts = {h.name: i for i, h in enumerate(env.hosts)}
    order = {(item.host, item.protocol, item.port, item.name): i for i, item in
             enumerate(listeners(env))}  # fmt: skip
    return sorted(
        b.out,
        key=lambda f: (
            hosts[f.host],
            order.get((f.host, f.protocol, f.port, f.listener.name), len(order)),
        ),
    )


def _etcd_and_patroni(env: Environment, dc: str, b: _Builder) -> None:
    c = env.components
    etcd = env.hosts_with(Role.ETCD, dc)
    members = env.hosts_with(Role.POSTGRESQL, dc)
    haproxy = env.hosts_with(Role.HAPROXY, dc)
    etcd_peers = _hosts(f"etcd members of {dc}", etcd, "etcd", dc)
    pg_members = _hosts(f"PostgreSQL members of {dc}", members, "patroni", dc)
    haproxy_hosts = _hosts(f"haproxy hosts of {dc}", haproxy, "haproxy", dc)
    for host in etcd:
        port = c.etcd.client_port
        b.add(
            host,
            port,
            pg_members,
            FlowKind.SERVICE,
            "Patroni keeps its leader lock and the cluster's state in etcd",
        )
        b.add(
            host,
            port,
            etcd_peers,
            FlowKind.PEER,
            "plinth's checks and rolls run etcdctl on a member against every member",
        )
        b.add(
            host,
            c.etcd.peer_port,
            etcd_peers,
            FlowKind.PEER,
            "Raft between the members: log replication, heartbeats, elections",
        )
    for host in members:
        port = c.patroni.postgresql_port
        b.add(
            host,
            port,
            pg_members,
            FlowKind.PEER,
            "Patroni members replicate from the primary (streaming, pg_rewind, base backups)",
        )
        if haproxy:
            b.add(
                host,
                port,
                haproxy_hosts,
                FlowKind.SERVICE,
                "haproxy forwards the VIP's connections: rw to the primary, ro to replicas",
            )
        port = c.patroni.rest_api_port
        b.add(
            host,
            port,
            pg_members,
            FlowKind.PEER,
            "members read each other's state in a leader race; plinth's rolls call members "
            "from a member",
        )
        if haproxy:
            b.add(
                host,
                port,
                haproxy_hosts,
                FlowKind.SERVICE,
                "haproxy health-checks Patroni's REST API (/primary, /replica) to route the VIP",
            )
        b.add(
            host,
            port,
            controller(env),
            FlowKind.OPERATOR,
            "operators read the cluster (GET /cluster); plinth's own calls run on a member, "
            "and changes need a member's address (docs/security.md)",
        )


def _haproxy(env: Environment, dc: str, b: _Builder) -> None:
    c = env.components
    active = env.active_site
    for vip in env.vips_in(dc):
        if "postgresql" not in vip.services:
            continue
        address = str(vip.address)
        for host in env.hosts_with(Role.HAPROXY, dc):
            primary, replica = c.haproxy.primary_port, c.haproxy.replica_port
            b.add(
                host,
                primary,
                clients(env),
                FlowKind.CLIENT,
                f"applications write through VIP {vip.name}: haproxy routes to the primary",
                address=address,
            )
            if airflow_runs(env, dc) and _airflow_hosts(env, dc):
                b.add(
                    host,
                    primary,
                    _hosts(f"Airflow hosts of {dc}", _airflow_hosts(env, dc), "airflow", dc),
                    FlowKind.SERVICE,
                    "Airflow's metadata database (sql_alchemy_conn) through the VIP",
                    address=address,
                )
            if dc == active and env.vip_serving("postgresql", dc) == vip:
                for other in env.datacenters:
                    standby = env.hosts_with(Role.POSTGRESQL, other.name)
                    if other.name == dc or not standby:
                        continue
                    b.add(
                        host,
                        primary,
                        _hosts(
                            f"PostgreSQL members of {other.name}", standby, "patroni", other.name
                        ),
                        FlowKind.CROSS_SITE,
                        f"the standby cluster of {other.name} replicates from the active "
                        "site's primary through this VIP",
                        address=address,
                    )
            b.add(
                host,
                replica,
                clients(env),
                FlowKind.CLIENT,
                f"applications read from the replicas through VIP {vip.name} (lag-bounded)",
                address=address,
            )


def _keepalived(env: Environment, dc: str, b: _Builder) -> None:
    for vip in env.vips_in(dc):
        holders = vip_holders(env, vip)
        peers = _hosts(f"keepalived peers of VIP {vip.name}", holders, "keepalived", dc)
        for host in holders:
            b.add(
                host,
                None,
                peers,
                FlowKind.PEER,
                f"unicast VRRP adverts of VIP {vip.name} ({vip.address}, router "
                f"{vip.router_id}): only its peers may take it",
                protocol=Protocol.VRRP,
                name=f"VRRP {vip.name}",
            )


def _vhost_vips(env: Environment, dc: str, name: str) -> list[Vip]:
    return [v for v in env.vips_in(dc) if name in v.services]


def _edge(env: Environment, dc: str, b: _Builder) -> None:
    c = env.components
    nginx = env.hosts_with(Role.NGINX, dc)
    nginx_hosts = _hosts(f"nginx hosts of {dc}", nginx, "nginx", dc)
    served = _served_vhosts(env, dc)
    for host in nginx:
        for _, vhost in served:
            for vip in _vhost_vips(env, dc, vhost.name):
                b.add(
                    host,
                    vhost.port,
                    clients(env),
                    FlowKind.CLIENT,
                    f"clients reach the {vhost.name} virtual host through VIP {vip.name}",
                    address=str(vip.address),
                )
                if vhost.name == "registry":
                    # operations/registry.py: every host's Docker trusts the DC's registry
                    b.add(
                        host,
                        vhost.port,
                        _hosts(f"the hosts of {dc}", env.hosts_in(dc), None, dc),
                        FlowKind.SERVICE,
                        "the hosts' Docker pulls from the DC's registry "
                        "(/etc/docker/certs.d names the VIP)",
                        address=str(vip.address),
                    )
    # nginx to its upstreams: each virtual host's upstream role, at its upstream port
    for index, vhost in served:
        for host in env.hosts_with(vhost.upstream_role, dc):
            b.upstream(host, index, vhost)
            b.add(
                host,
                vhost.upstream_port,
                nginx_hosts,
                FlowKind.SERVICE,
                f"nginx proxies the {vhost.name} virtual host to its upstreams (TLS both ways)",
            )
    for host in env.hosts_with(Role.SQUID, dc):
        # apt tries the proxy its DC names (the VIP), then each squid host behind it
        dialled: dict[str, list[Host]] = {}
        for user in env.hosts:
            for url in client_proxies(env, user):
                for target, address in _squid_dials(env, url):
                    if target == host and user not in dialled.setdefault(address, []):
                        dialled[address].append(user)
        for address, users in dialled.items() or [(str(host.address), [])]:
            b.add(
                host,
                c.squid.port,
                _hosts("hosts whose package_sources.http_proxy leads here", users, None, None),
                FlowKind.EGRESS,
                "apt on the platform's hosts reaches the package sources only through squid",
                address=address,
            )
    _vip_checks(env, dc, b)


def _squid_dials(env: Environment, url: str) -> list[tuple[Host, str]]:
    """(squid host, address dialled) of a proxy URL: the squid hosts behind a VIP it names
    (at the VIP's address), or the squid host it names by name, FQDN or address; none for
    a proxy outside the platform (or on another port than squid's)."""
    _, name, port = proxy_endpoint(url)
    if port != env.components.squid.port:
        return []
    for vip in env.vips:
        if "squid" in vip.services and name in (env.vip_fqdn(vip), str(vip.address)):
            return [(h, str(vip.address)) for h in env.hosts_with(Role.SQUID, vip.datacenter)]
    return [
        (h, str(h.address))
        for h in env.hosts_with(Role.SQUID)
        if name in (h.name, env.fqdn(h), str(h.address))
    ]


def _vip_checks(env: Environment, dc: str, b: _Builder) -> None:
    """The edge VIP check (plinth/vip_check.py, configured by operations/keepalived.py):
    each holder connects to the VIP's other holders at the ports they serve it on and to
    the upstreams of the virtual hosts it carries."""
    vhosts = dict(_served_vhosts(env, dc))
    for vip in env.vips_in(dc):
        holders = vip_holders(env, vip)
        checking = [
            h for h in holders if not ("postgresql" in vip.services and Role.HAPROXY in h.roles)
        ]
        if not checking:
            continue
        check = _hosts(f"holders of VIP {vip.name}", checking, "keepalived", dc)
        for peer in holders:
            for port in front_ports(env, vip, peer):
                b.add(
                    peer,
                    port,
                    check,
                    FlowKind.PEER,
                    f"the VIP check of {vip.name} counts the peers that answer here "
                    "(a TCP connect)",
                )
        for index, vhost in vhosts.items():
            if vhost.name not in vip.services:
                continue
            for upstream in env.hosts_with(vhost.upstream_role, dc):
                b.upstream(upstream, index, vhost)
                b.add(
                    upstream,
                    vhost.upstream_port,
                    check,
                    FlowKind.SERVICE,
                    f"the VIP check of {vip.name} counts the {vhost.name} upstreams that "
                    "answer (a TCP connect)",
                )


def _airflow(env: Environment, dc: str, b: _Builder) -> None:
    if not airflow_runs(env, dc):
        return
    callers: dict[str, list[Host]] = {}
    for host in _airflow_hosts(env, dc):
        if Role.AIRFLOW_WORKER in host.roles or Role.AIRFLOW_TRIGGERER in host.roles:
            callers.setdefault(execution_api_server(env, host).name, []).append(host)
    for host in env.hosts_with(Role.AIRFLOW_API, dc):
        b.add(
            host,
            env.components.airflow.api_port,
            _hosts(
                f"Airflow workers and triggerers of {dc} that dial it",
                callers.get(host.name, []),
                "airflow",
                dc,
            ),
            FlowKind.SERVICE,
            "their Task SDK runs tasks against the execution API ([core] execution_api_server_url)",
        )


def _redis(env: Environment, dc: str, b: _Builder) -> None:
    c = env.components.redis
    data = env.hosts_with(Role.REDIS, dc)
    sentinels = running_sentinels(env, dc)
    upstream = upstream_of(env, dc)
    watching_dc = upstream.datacenter if upstream is not None else dc
    watching = running_sentinels(env, watching_dc)
    # the DCs following this one: their data nodes and Sentinel hosts, one group each
    following = [
        _hosts(
            f"{env.debian.key_value_store.product} and Sentinel hosts of {d.name}",
            [h for h in env.hosts_in(d.name) if {Role.REDIS, Role.SENTINEL} & set(h.roles)],
            "redis",
            d.name,
        )
        for d in env.datacenters
        if d.name != dc and (u := upstream_of(env, d.name)) is not None and u.datacenter == dc
    ]
    store = env.debian.key_value_store.product
    for host in data:
        b.add(
            host,
            c.port,
            _hosts(f"{store} nodes of {dc}", data, "redis", dc),
            FlowKind.PEER,
            "replicas replicate from the master (any node after a failover); plinth's "
            "checks read every node from a node",
        )
        if watching:
            b.add(
                host,
                c.port,
                _hosts(f"Sentinels of {watching_dc}", watching, "redis", watching_dc),
                FlowKind.PEER if watching_dc == dc else FlowKind.CROSS_SITE,
                "Sentinels monitor every node of the master set and reconfigure them on a failover",
            )
        for group in following:
            b.add(
                host,
                c.port,
                group,
                FlowKind.CROSS_SITE,
                "the following site's nodes replicate from this site's master "
                "(replica-priority 0) and read its state at bootstrap",
            )
        b.add(
            host,
            c.port,
            clients(env),
            FlowKind.CLIENT,
            "applications use the master the Sentinels name",
        )
    for host in sentinels:
        port = c.sentinel_port
        b.add(
            host,
            port,
            _hosts(f"Sentinels of {dc}", sentinels, "redis", dc),
            FlowKind.PEER,
            "Sentinels agree that the master is down and elect who fails it over",
        )
        b.add(
            host,
            port,
            _hosts(f"{store} nodes of {dc}", data, "redis", dc),
            FlowKind.PEER,
            "plinth's checks and rolls ask the Sentinels from the data nodes",
        )
        for group in following:
            b.add(
                host,
                port,
                group,
                FlowKind.CROSS_SITE,
                "the following site's hosts ask this site's Sentinels for the master at bootstrap",
            )
        b.add(
            host,
            port,
            clients(env),
            FlowKind.CLIENT,
            "applications ask the Sentinels where the master is",
        )


def _rabbitmq(env: Environment, dc: str, b: _Builder) -> None:
    r = env.components.rabbitmq
    nodes = env.hosts_with(Role.RABBITMQ, dc)
    peers = _hosts(f"RabbitMQ nodes of {dc}", nodes, "rabbitmq", dc)
    airflow = _airflow_hosts(env, dc) if airflow_runs(env, dc) else []
    for host in nodes:
        b.add(
            host,
            r.amqps_port,
            clients(env),
            FlowKind.CLIENT,
            "applications publish and consume (the client certificate is the login)",
        )
        if airflow:
            b.add(
                host,
                r.amqps_port,
                _hosts(f"Airflow hosts of {dc}", airflow, "airflow", dc),
                FlowKind.SERVICE,
                "Airflow's Celery broker (broker_url)",
            )
        b.add(
            host,
            r.management_port,
            clients(env),
            FlowKind.CLIENT,
            "operators' management UI and API",
        )
        b.add(
            host,
            r.distribution_port,
            peers,
            FlowKind.PEER,
            "Erlang distribution between the nodes: clustering, quorum queue replication",
        )
        b.add(
            host,
            EPMD_PORT,
            peers,
            FlowKind.PEER,
            "a node asks its peers' epmd for their distribution port",
        )
        b.add(
            host,
            r.distribution_port + CLI_PORT_OFFSET,
            peers,
            FlowKind.PEER,
            "a cluster-wide rabbitmqctl command run here (plinth's checks) is answered by "
            "every peer over a connection of its own",
        )


# ---- egress ----


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def is_address(name: str) -> bool:
    """Whether ``name`` is an IP address (else a DNS name)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def egress(env: Environment, inbound: list[Flow] | None = None) -> list[Egress]:
    """Every host's outbound flows: inside the platform, the inbound flows it is a source
    of (by destination address); outside it, what the model names."""
    inbound = flows(env) if inbound is None else inbound
    out: list[Egress] = []
    for host in env.hosts:
        out += _platform_egress(env, host, inbound)
        out += _external_egress(env, host)
    return out


def _platform_egress(env: Environment, host: Host, inbound: list[Flow]) -> list[Egress]:
    vips = {str(v.address): f"VIP {v.name}" for v in env.vips}
    seen: dict[tuple[Protocol, int | None, str, str], Egress] = {}
    for flow in inbound:
        if host.name not in flow.sources.hosts:
            continue
        key = (flow.protocol, flow.port, flow.listener.name, flow.address)
        if key in seen:
            continue
        target = vips.get(flow.address, flow.host)
        seen[key] = Egress(
            host.name,
            host.datacenter,
            flow.protocol,
            flow.port,
            (flow.address,),
            f"{target} ({flow.listener.name})",
            flow.component,
            flow.reason,
            port_end=flow.listener.port_end,
        )
    return list(seen.values())


def _external_egress(env: Environment, host: Host) -> Iterator[Egress]:
    dc = host.datacenter
    sources = env.package_sources_for(dc)
    names_outside = False
    servers = env.base.ntp_servers or (DEBIAN_NTP_POOL,)
    yield Egress(
        host.name,
        dc,
        Protocol.UDP,
        NTP_PORT,
        tuple(servers),
        "base.ntp_servers"
        if env.base.ntp_servers
        else "Debian's NTP pool (base.ntp_servers empty)",
        "base",
        "chrony keeps the host's time",
        external=True,
    )
    names_outside |= any(not is_address(s) for s in servers)
    proxies = client_proxies(env, host)
    if Role.SQUID in host.roles:
        domains = allowed_domains(sources, env.components.squid)
        for port in (80, 443):
            yield Egress(
                host.name,
                dc,
                Protocol.TCP,
                port,
                domains,
                "squid's allowlist (package sources, components.squid.allowed_domains)",
                "squid",
                "squid fetches what the platform's hosts ask for, and its own "
                "packages, from the allowed destinations only",
                external=True,
            )
        names_outside = True
    elif not proxies:
        by_port: dict[int, list[str]] = {}
        for url in (sources.apt_mirror, sources.apt_security_mirror):
            name = urlsplit(url).hostname or url
            if name not in by_port.setdefault(_url_port(url), []):
                by_port[_url_port(url)].append(name)
        for port, names in by_port.items():
            yield Egress(
                host.name,
                dc,
                Protocol.TCP,
                port,
                tuple(names),
                "the Debian mirrors (package_sources: no http_proxy)",
                "base",
                "apt goes to the mirrors directly: no proxy is set for this DC",
                external=True,
            )
        names_outside = True
    elif not any(_squid_dials(env, url) for url in proxies):
        _, name, port = proxy_endpoint(proxies[0])
        yield Egress(
            host.name,
            dc,
            Protocol.TCP,
            port,
            (name,),
            "package_sources.http_proxy (outside the platform)",
            "base",
            "apt goes out through the site's proxy",
            external=True,
        )
        names_outside |= not is_address(name)
    s3 = env.components.registry.s3
    if s3 is not None and Role.REGISTRY in host.roles:
        name = urlsplit(s3.endpoint).hostname or s3.endpoint
        yield Egress(
            host.name,
            dc,
            Protocol.TCP,
            _url_port(s3.endpoint),
            (name,),
            "components.registry.s3.endpoint",
            "registry",
            "the registry keeps its blobs in the object store",
            external=True,
        )
        names_outside |= not is_address(name)
    if names_outside:
        for protocol in (Protocol.UDP, Protocol.TCP):
            yield Egress(
                host.name,
                dc,
                protocol,
                DNS_PORT,
                (),
                "the host's resolvers (not in the model)",
                "base",
                "names outside the platform are resolved (the platform's own are in /etc/hosts)",
                external=True,
            )


# ---- JSON and text ----


def flow_to_json(flow: Flow) -> dict[str, Any]:
    item = flow.listener
    return {
        "host": item.host,
        "datacenter": item.datacenter,
        "address": flow.address,
        "protocol": str(item.protocol),
        "ip_protocol": IP_PROTOCOL_NUMBERS[item.protocol],
        "port": item.port,
        **({"port_end": item.port_end} if item.port_end is not None else {}),
        **({"transient": True} if item.transient else {}),
        "bind": item.bind,
        "component": item.component,
        "listener": item.name,
        "setting": item.setting,
        "security": str(item.security),
        "kind": str(flow.kind),
        "from": {
            "label": flow.sources.label,
            "hosts": list(flow.sources.hosts),
            "networks": list(flow.sources.networks),
            "addresses": list(flow.sources.addresses),
            "component": flow.sources.component,
            "datacenter": flow.sources.datacenter,
        },
        "reason": flow.reason,
    }


def flow_from_json(data: dict[str, Any]) -> Flow:
    source = data["from"]
    return Flow(
        Listener(
            data["host"],
            data["datacenter"],
            Protocol(data["protocol"]),
            data["port"],
            data["bind"],
            data["component"],
            data["listener"],
            data["setting"],
            Security(data["security"]),
            data.get("port_end"),
            bool(data.get("transient", False)),
        ),
        data["address"],
        Sources(
            source["label"],
            tuple(source["hosts"]),
            tuple(source["networks"]),
            tuple(source["addresses"]),
            source["component"],
            source["datacenter"],
        ),
        FlowKind(data["kind"]),
        data["reason"],
    )


def egress_to_json(item: Egress) -> dict[str, Any]:
    return {
        "host": item.host,
        "datacenter": item.datacenter,
        "protocol": str(item.protocol),
        "ip_protocol": IP_PROTOCOL_NUMBERS[item.protocol],
        "port": item.port,
        "to": list(item.destinations),
        "label": item.label,
        "component": item.component,
        "reason": item.reason,
        "external": item.external,
        **({"port_end": item.port_end} if item.port_end is not None else {}),
    }


def egress_from_json(data: dict[str, Any]) -> Egress:
    return Egress(
        data["host"],
        data["datacenter"],
        Protocol(data["protocol"]),
        data["port"],
        tuple(data["to"]),
        data["label"],
        data["component"],
        data["reason"],
        data["external"],
        data.get("port_end"),
    )


def to_json(env: Environment, datacenter: str | None = None) -> dict[str, Any]:
    """The flows as ``plinth flows --json`` prints them (``datacenter``: its hosts only)."""
    inbound = flows(env)
    outbound = egress(env, inbound)
    if datacenter is not None:
        inbound = [f for f in inbound if f.listener.datacenter == datacenter]
        outbound = [e for e in outbound if e.datacenter == datacenter]
    return {
        "environment": env.name,
        "datacenter": datacenter,
        "inbound": [flow_to_json(f) for f in inbound],
        "egress": [egress_to_json(e) for e in outbound],
    }


def _from_text(sources: Sources) -> str:
    if sources.empty:
        return f"{sources.label}: nobody"
    members = ", ".join((*sources.hosts, *sources.networks))
    return f"{sources.label}: {members}"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """A markdown table (readable as plain text too)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_text(data: dict[str, Any]) -> str:
    """The two tables of :func:`to_json`'s output: inbound, then egress."""
    inbound = [flow_from_json(f) for f in data["inbound"]]
    outbound = [egress_from_json(e) for e in data["egress"]]
    where = f", datacenter {data['datacenter']}" if data["datacenter"] else ""
    lines = [f"inbound flows of {data['environment']}{where}: who may reach each listener", ""]
    rows: list[tuple[str, ...]] = []
    for flow in inbound:
        item = flow.listener
        rows.append(
            (
                item.host,
                f"{flow.address} {item.port_text}",
                _from_text(flow.sources),
                f"{item.component} ({item.name})",
                str(item.security),
                flow.reason,
            )
        )
    lines += _table(("host", "to", "from", "component", "secured", "reason"), rows)
    lines += ["", f"egress of {data['environment']}{where}:", ""]
    rows = [
        (
            e.host,
            e.port_text,
            f"{e.label}: {', '.join(e.destinations)}"
            if e.destinations
            else f"{e.label}: not declared",
            e.component,
            e.reason,
        )
        for e in outbound
    ]
    lines += _table(("host", "port", "to", "component", "reason"), rows)
    return "\n".join(lines) + "\n"
