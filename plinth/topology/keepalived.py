"""keepalived's shape, from the model: which daemons serve a VIP on a holder (the units a
VRRP instance tracks, and so which holders run an instance of that VIP at all), and on
which ports a holder serves it.

Read by the keepalived deploy (``operations/keepalived.py``: track scripts, the VIP
check's witnesses) and by the network flows (:mod:`plinth.topology.flows`: who sends a
VIP's VRRP adverts, who the edge VIP check connects to).
"""

from __future__ import annotations

from plinth.model import Environment, Host, Role, Vip


def tracked_units(
    services: tuple[str, ...], roles: tuple[Role, ...], vhosts: set[str]
) -> tuple[str, ...]:
    """Daemons on a holder that serve a VIP's ``services``: haproxy for PostgreSQL, nginx for
    its virtual hosts, squid for egress. A node whose daemon stops gives the VIP up."""
    units = []
    if "postgresql" in services and Role.HAPROXY in roles:
        units.append("haproxy")
    if vhosts & set(services) and Role.NGINX in roles:
        units.append("nginx")
    if "squid" in services and Role.SQUID in roles:
        units.append("squid")
    return tuple(units)


def vip_holders(env: Environment, vip: Vip) -> list[Host]:
    """The hosts that run a VRRP instance of ``vip``: its DC's keepalived hosts with a
    daemon serving one of its services (the others have no instance of it)."""
    vhosts = {v.name for v in env.components.nginx.virtual_hosts}
    return [
        h
        for h in env.hosts_with(vip.holder_role, vip.datacenter)
        if tracked_units(vip.services, h.roles, vhosts)
    ]


def front_ports(env: Environment, vip: Vip, holder: Host) -> tuple[int, ...]:
    """Ports on which ``holder`` serves ``vip`` (nginx listens on every address, so a peer
    answers there whether or not it holds the VIP)."""
    vhost_ports = [v.port for v in env.components.nginx.virtual_hosts if v.name in vip.services]
    ports = []
    if "postgresql" in vip.services and Role.HAPROXY in holder.roles:
        ports.append(env.components.haproxy.primary_port)
    if Role.NGINX in holder.roles:
        ports += vhost_ports
    if "squid" in vip.services and Role.SQUID in holder.roles:
        ports.append(env.components.squid.port)
    return tuple(ports)
