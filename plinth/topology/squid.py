"""squid's shape, from the model: the destinations it lets through, and the proxies each
host's apt tries (the DC's edge VIP, then the squid hosts behind it).

Read by the squid and base deploys (``operations/squid.py``, ``operations/base.py``) and by
the network flows (:mod:`plinth.topology.flows`): who dials squid is what the hosts'
proxy settings say, derived once here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from plinth.model import Environment, Host, PackageSources, Role, SquidSettings

DEFAULT_PROXY_PORT = 3128
"""The port of a proxy URL that names none (squid's)."""


def proxy_endpoint(url: str) -> tuple[str, str, int]:
    """(url, host, port) of a proxy URL; the port defaults to 3128 (squid's)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"proxy {url!r} has no host name")
    return url, parts.hostname, parts.port or DEFAULT_PROXY_PORT


def allowed_domains(sources: PackageSources, settings: SquidSettings) -> tuple[str, ...]:
    """Destinations the proxy lets through: the package sources, then the extra ones.

    A PyPI index on pypi.org also needs files.pythonhosted.org, where the wheels live.
    """
    domains: list[str] = []
    for url in (sources.apt_mirror, sources.apt_security_mirror, sources.pypi_index):
        host = urlsplit(url).hostname
        if host and host not in domains:
            domains.append(host)
    if "pypi.org" in domains and "files.pythonhosted.org" not in domains:
        domains.append("files.pythonhosted.org")
    for domain in settings.allowed_domains:
        if domain not in domains:
            domains.append(domain)
    return tuple(domains)


def client_proxies(env: Environment, host: Host) -> tuple[str, ...]:
    """The egress proxies ``host``'s apt tries, in order; empty: apt goes direct.

    A squid host goes direct (it *is* the way out, and must not depend on itself).
    Any other host uses its DC's ``package_sources.http_proxy``; when that names a VIP
    carrying ``squid``, the squid hosts behind that VIP follow it: the VIP exists only
    once keepalived runs, at the end of the first deploy, long after every host
    installed its packages.
    """
    if Role.SQUID in host.roles:
        return ()
    proxy = env.package_sources_for(host.datacenter).http_proxy
    if not proxy:
        return ()
    _, name, port = proxy_endpoint(proxy)
    proxies = [proxy]
    for vip in env.vips:
        if "squid" not in vip.services or name not in (env.vip_fqdn(vip), str(vip.address)):
            continue
        for member in env.hosts_with(Role.SQUID, vip.datacenter):
            candidate = f"http://{env.fqdn(member)}:{port}"
            if candidate not in proxies:
                proxies.append(candidate)
    return tuple(proxies)
