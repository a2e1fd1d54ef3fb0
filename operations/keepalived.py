"""keepalived: the DC's VIPs (PostgreSQL's, the edge's), with unicast VRRP between its nodes.

Every node starts as BACKUP with ``nopreempt`` (the first election picks the highest
priority; a recovered node does not take the VIP back); a node whose haproxy (for the
edge VIP: nginx or squid) is not running goes to FAULT and gives the VIP up. The notify
script records each state change in ``/var/lib/keepalived-plinth/<instance>.state``
(the ``VrrpState`` fact reads it). The configuration is checked with ``keepalived -t``
before it replaces the live one, and applied with a reload (SIGHUP), which keeps the current MASTER.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import OperationError, StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, server, systemd

from facts.keepalived import Ipv4Interfaces
from operations.checked import checked_file
from plinth.context import HostContext
from plinth.model import KeepalivedSettings, Role
from plinth.render import render_template

CONFIG = "/etc/keepalived/keepalived.conf"
NOTIFY = "/usr/local/libexec/plinth/keepalived-notify"
STATE_DIR = "/var/lib/keepalived-plinth"
SCRIPT_USER = "keepalived_script"
# keepalived 2.2.7's config test kills itself (exit 143) when scripts run as a non-root
# user (acassen/keepalived#2587, #2617; fixed in 2.2.8): the copy that is tested runs
# them as root, which checks the same syntax and script paths.
KEEPALIVED_CHECK = (
    'sh -c \'sed "s/^\\([[:space:]]*script_user\\) .*/\\1 root/" "$1" > "$1.t" && '
    'keepalived -t -f "$1.t"; rc=$?; rm -f "$1.t"; exit $rc\' _ {path}'
)


@dataclass(frozen=True)
class VrrpInstance:
    instance: str
    address: str
    router_id: int
    tracks: tuple[str, ...] = ("haproxy",)
    """systemd units (without ``.service``) that must be active for this node to hold it."""


@dataclass(frozen=True)
class KeepalivedInput:
    """The slice of the model keepalived reads."""

    host: str
    address: str
    prefix: int
    priority: int
    peers: tuple[str, ...]
    vips: tuple[VrrpInstance, ...]
    settings: KeepalivedSettings

    def render(self, interface: str) -> str:
        tracked = sorted({unit for vip in self.vips for unit in vip.tracks})
        return render_template(
            "keepalived/etc/keepalived/keepalived.conf.j2",
            host=self.host,
            address=self.address,
            prefix=self.prefix,
            priority=self.priority,
            peers=self.peers,
            vips=self.vips,
            settings=self.settings,
            interface=interface,
            script_user=SCRIPT_USER,
            notify=NOTIFY,
            tracked=tracked,
        )


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


def keepalived_input(context: HostContext) -> KeepalivedInput:
    env = context.environment
    dc = context.datacenter
    holders = env.hosts_with(Role.KEEPALIVED, dc.name)
    index = [h.name for h in holders].index(context.host.name)
    vhosts = {v.name for v in env.components.nginx.virtual_hosts}
    return KeepalivedInput(
        host=context.host.name,
        address=str(context.host.address),
        prefix=dc.subnet.prefixlen,
        # 150, 140, 130...: the first host of the role in the model leads the first election.
        priority=max(1, 150 - 10 * index),
        peers=tuple(str(h.address) for h in holders if h.name != context.host.name),
        vips=tuple(
            VrrpInstance(f"{v.name}_{dc.name}", str(v.address), v.router_id, tracks)
            for v in env.vips_in(dc.name)
            if (tracks := tracked_units(v.services, context.host.roles, vhosts))
        ),
        settings=env.components.keepalived,
    )


def vip_network_check(spec: KeepalivedInput) -> None:
    network = ipaddress.IPv4Network(f"{spec.address}/{spec.prefix}", strict=False)
    for vip in spec.vips:
        if ipaddress.IPv4Address(vip.address) not in network:
            raise OperationError(f"VIP {vip.address} is outside {network}")


@operation()
def started() -> Generator[StringCommand, None, None]:
    if host.get_fact(SystemdStatus).get("keepalived.service"):
        host.noop("keepalived is running")
        return
    yield StringCommand("systemctl", "start", "keepalived.service")


@operation(is_idempotent=False)
def reloaded() -> Generator[StringCommand, None, None]:
    if not host.get_fact(SystemdStatus).get("keepalived.service"):
        host.noop("keepalived not running yet")
        return
    yield StringCommand("systemctl", "reload", "keepalived.service")


@deploy("keepalived")
def keepalived_node(spec: KeepalivedInput) -> None:
    if not spec.vips:
        return
    vip_network_check(spec)
    interfaces: dict[str, Any] = host.get_fact(Ipv4Interfaces)
    interface = interfaces.get(spec.address)
    if interface is None:
        raise OperationError(
            f"{spec.host}: no interface carries {spec.address} (the model's address): "
            "cannot choose the VRRP interface"
        )
    server.user(
        name="keepalived script user",
        user=SCRIPT_USER,
        system=True,
        shell="/usr/sbin/nologin",
        create_home=False,
        home="/nonexistent",
    )
    files.directory(
        name="keepalived state directory",
        path=STATE_DIR,
        user=SCRIPT_USER,
        group="root",
        mode="755",
    )
    files.directory(name="plinth helper directory", path="/usr/local/libexec/plinth", mode="755")
    notify = files.put(
        name="keepalived notify script",
        src=StringIO(
            render_template(
                "keepalived/usr/local/libexec/plinth/keepalived-notify.j2", state_dir=STATE_DIR
            )
        ),
        dest=NOTIFY,
        mode="755",
    )
    config = checked_file(
        name="keepalived configuration",
        path=CONFIG,
        src=StringIO(spec.render(interface)),
        check=KEEPALIVED_CHECK,
        mode="644",
    )
    systemd.service(
        name="keepalived enabled at boot", service="keepalived.service", running=None, enabled=True
    )
    start = started(name="keepalived started")
    reloaded(
        name="keepalived reloaded for its new configuration",
        _if=lambda: (config.did_change() or notify.did_change()) and not start.did_change(),
    )
