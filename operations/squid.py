"""squid: the egress proxy of a datacenter, the only way from the platform's hosts to
the package sources and artifact sources the model allows.

It does not configure the clients: hosts use it through ``package_sources.http_proxy``
(the base deploy writes apt's proxy from that).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from io import StringIO

from pyinfra import host as current_host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.operations import files, server, systemd

from operations.checked import checked_file
from plinth.model import Environment, Host, SquidSettings
from plinth.render import render_template
from plinth.topology.squid import allowed_domains, client_proxies

CONFIG = "/etc/squid/squid.conf"


@dataclass(frozen=True)
class SquidInput:
    """The slice of the model squid reads."""

    hostname: str
    settings: SquidSettings
    client_networks: tuple[str, ...]
    allowed_domains: tuple[str, ...]


def squid_input(env: Environment, host: Host) -> SquidInput:
    # Clients may sit in any DC (DC2 hosts keep using DC1's proxy while theirs is
    # down), so every platform subnet may use every proxy.
    settings = env.components.squid
    # The proxy itself must go direct: its own sources, never a proxy (itself).
    sources = env.package_sources_for(host.datacenter)
    return SquidInput(
        hostname=env.fqdn(host),
        settings=settings,
        client_networks=tuple(str(dc.subnet) for dc in env.datacenters),
        allowed_domains=allowed_domains(sources, settings),
    )


def render_config(spec: SquidInput) -> str:
    return render_template(
        "squid/etc/squid/squid.conf.j2",
        listen_port=spec.settings.port,
        hostname=spec.hostname,
        client_networks=spec.client_networks,
        allowed_domains=spec.allowed_domains,
        cache_size_mb=spec.settings.cache_size_mb,
        max_object_size_mb=spec.settings.max_object_size_mb,
    )


@deploy("squid")
def squid(spec: SquidInput) -> None:
    """Write squid's allowlist configuration (checked with ``squid -k parse`` before it
    replaces the running one), start it, and reload it only when it changed. The package
    is installed, not started, with the cell's packages (operations/patroni/packages.py)."""
    config = checked_file(
        name="squid configuration",
        path=CONFIG,
        src=StringIO(render_config(spec)),
        check="squid -k parse -f {path}",
        mode="644",
    )
    files.directory(
        name="squid cache directory",
        path="/var/spool/squid",
        user="proxy",
        group="proxy",
        mode="750",
    )
    start = systemd.service(
        name="squid running", service="squid.service", running=True, enabled=True
    )
    # A squid that has just started read the new file already (and has no pid file to
    # signal for a moment): only a running one is told to reconfigure.
    server.shell(
        name="squid reloads its configuration",
        commands=["squid -k reconfigure"],
        _if=lambda: config.did_change() and not start.did_change(),
    )


@operation()
def egress_ordering_point(is_squid_host: bool) -> Generator[StringCommand, None, None]:
    """Run by every host at the same place in deploy.py: pyinfra orders operations by a
    graph of each host's sequence, so this one operation comes after the squid hosts'
    base deploy and squid, and before anything the other hosts install (through squid).

    + is_squid_host: whether this host is one of the ways out
    """
    if is_squid_host:
        current_host.noop("squid host: deployed before the hosts that install through it")
    else:
        current_host.noop("the DC's squid hosts are deployed: packages may go through them")
    yield from ()


__all__ = [
    "SquidInput",
    "allowed_domains",
    "client_proxies",
    "egress_ordering_point",
    "render_config",
    "squid",
    "squid_input",
]
