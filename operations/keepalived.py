"""keepalived: the DC's VIPs (PostgreSQL's, the edge's), with unicast VRRP between its nodes.

Every node starts as BACKUP with ``nopreempt`` (the first election picks the highest
priority; a recovered node does not take the VIP back); a node whose haproxy (for the
edge VIP: nginx or squid) is not running goes to FAULT and gives the VIP up, and so does
a node that cannot serve the VIP: the VIP check (``plinth/vip_check.py``, uploaded
verbatim as ``vip-check``) releases the PostgreSQL VIP on a node whose haproxy reaches
less than a majority of the cell or no primary for too long, and the edge VIP on a node
that reaches less than a majority of its peers and upstreams. The notify
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
from pyinfra.facts.server import Users
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd

import plinth.vip_check
from facts.keepalived import STATE_DIR, Ipv4Interfaces
from operations.checked import checked_file
from operations.nginx import virtual_hosts
from plinth.context import HostContext
from plinth.model import Environment, Host, KeepalivedSettings, Role, Vip
from plinth.render import render_template
from plinth.topology.keepalived import front_ports, tracked_units, vip_holders
from plinth.vip_check import MODE_EDGE, MODE_POSTGRESQL, CheckConfig, Target

CONFIG = "/etc/keepalived/keepalived.conf"
NOTIFY = "/usr/local/libexec/plinth/keepalived-notify"
VIP_CHECK = "/usr/local/libexec/plinth/vip-check"
VIP_CHECK_SOURCE = plinth.vip_check.__file__
"""The very file the tests import is the one the hosts run."""
CHECK_DIR = "/etc/keepalived/plinth-vip-check"
"""``<instance>.json``: what the VIP check of each VRRP instance observes (root's, 0644)."""
SCRIPT_USER = "keepalived_script"
HAPROXY_STATS_SOCKET = "/run/haproxy/stats-readonly.sock"
"""haproxy's second stats socket, ``level user`` (read-only), which only the script user
(and root) may open: the PostgreSQL VIP check reads ``show stat`` there."""
HAPROXY_PRIMARY_PROXY = "postgresql_primary"
"""haproxy's listen section routing to the primary (servers named after the hosts)."""
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
    check: CheckConfig | None = None
    """The VIP check: whether this node can serve the VIP (None: the unit checks only)."""


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
            vip_check=VIP_CHECK,
            check_dir=CHECK_DIR,
        )


def vip_check(env: Environment, vip: Vip, me: Host, holders: list[Host]) -> CheckConfig:
    """What the VIP check of ``me`` observes for ``vip`` (see ``plinth/vip_check.py``).

    PostgreSQL (haproxy on ``me``): the primary backend of the local haproxy, whose servers
    are the DC's PostgreSQL hosts. Otherwise (the edge): TCP connects to the VIP's other
    holders and to the upstreams of the virtual hosts it carries, as nginx proxies to them.
    """
    settings = env.components.keepalived
    state_file = f"{STATE_DIR}/{vip.name}_{vip.datacenter}.vip-check.json"
    instance = f"{vip.name}_{vip.datacenter}"
    timeout = settings.check_timeout / 2
    if "postgresql" in vip.services and Role.HAPROXY in me.roles:
        return CheckConfig(
            mode=MODE_POSTGRESQL,
            instance=instance,
            state_file=state_file,
            stats_socket=HAPROXY_STATS_SOCKET,
            proxy=HAPROXY_PRIMARY_PROXY,
            members=tuple(h.name for h in env.hosts_with(Role.POSTGRESQL, vip.datacenter)),
            grace=float(settings.primary_grace_ttls * env.components.patroni.ttl),
            # the standby site's cell is a standby cluster: no primary there by design
            primary_expected=vip.datacenter == env.active_site,
            timeout=timeout,
        )
    witnesses: dict[str, list[Target]] = {me.name: []}
    for peer in holders:
        ports = front_ports(env, vip, peer)
        if peer.name != me.name and ports:
            witnesses[peer.name] = [Target(str(peer.address), p) for p in ports]
    by_address = {str(h.address): h.name for h in env.hosts}
    upstreams: dict[str, list[Target]] = {}
    for vhost in virtual_hosts(env, vip.datacenter):
        if not any(vhost.name == s.replace("-", "_") for s in vip.services):
            continue
        targets = [Target(u.address, vhost.upstream_port) for u in vhost.servers]
        upstreams[vhost.name] = targets
        for target in targets:
            name = by_address.get(target.address, target.address)
            if name != me.name:
                witnesses.setdefault(name, []).append(target)
    return CheckConfig(
        mode=MODE_EDGE,
        instance=instance,
        state_file=state_file,
        witnesses={name: tuple(ts) for name, ts in witnesses.items()},
        upstreams={name: tuple(ts) for name, ts in upstreams.items()},
        timeout=timeout,
    )


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
            VrrpInstance(
                f"{v.name}_{dc.name}",
                str(v.address),
                v.router_id,
                tracks,
                vip_check(
                    env,
                    v,
                    context.host,
                    # the VIP's other holders: hosts that run one of its daemons
                    vip_holders(env, v),
                ),
            )
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
def script_user() -> Generator[StringCommand, None, None]:
    """The unprivileged user keepalived runs its scripts as (``script_user``).

    Both the haproxy deploy (its read-only stats socket belongs to this user's group, and
    ``haproxy -c`` refuses an unknown group) and the keepalived deploy ensure it; the
    command checks again when it runs, so the second of them never fails on an existing user.
    """
    if SCRIPT_USER in host.get_fact(Users):
        host.noop(f"user {SCRIPT_USER} exists")
        return
    # Its own primary group: keepalived drops supplementary groups before running a
    # script, so the socket's group must be this one.
    yield StringCommand(
        f"(getent group {SCRIPT_USER} >/dev/null || groupadd --system {SCRIPT_USER}) && "
        f"(getent passwd {SCRIPT_USER} >/dev/null || useradd --system --no-create-home "
        f"--home-dir /nonexistent --shell /usr/sbin/nologin --gid {SCRIPT_USER} {SCRIPT_USER})"
    )


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
    script_user(name="keepalived script user")
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
    # The check and its configuration are read afresh at every run: no reload for them.
    # Uploaded before the configuration, whose test (keepalived -t) checks the script
    # exists and that only root can write it and its directories (enable_script_security).
    files.put(
        name="keepalived VIP check",
        src=VIP_CHECK_SOURCE,
        dest=VIP_CHECK,
        user="root",
        group="root",
        mode="755",
    )
    files.directory(
        name="keepalived VIP check configuration directory",
        path=CHECK_DIR,
        user="root",
        group="root",
        mode="755",
    )
    for vip in spec.vips:
        if vip.check is not None:
            files.put(
                name=f"keepalived VIP check of {vip.instance}",
                src=StringIO(vip.check.to_json()),
                dest=f"{CHECK_DIR}/{vip.instance}.json",
                user="root",
                group="root",
                mode="644",
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
