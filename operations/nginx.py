"""nginx: the DC's application load balancer behind the edge VIP.

Virtual hosts come from the model (``components.nginx.virtual_hosts``); each listens on
its own port with the platform server certificate, verifies clients where the model asks
for it, and reaches its upstreams (the hosts of a role in the same DC) over TLS with
``proxy_ssl_verify on`` and nginx's own client certificate. ``/etc/nginx/nginx.conf`` is
ours as a whole (Debian's default site is not loaded); it is checked with ``nginx -t``
before it replaces the live one, and applied with a graceful reload.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import systemd

from operations.checked import checked_file
from plinth.certificates import ALL_CRLS, CertificateSpec
from plinth.context import HostContext
from plinth.model import Environment
from plinth.render import render_template

CONFIG = "/etc/nginx/nginx.conf"
ERROR_LOG = "/var/log/nginx/error.log"


class NginxModelError(ValueError):
    """A virtual host cannot be built from the model (names the field and the DC)."""


@dataclass(frozen=True)
class Upstream:
    address: str
    backup: bool


@dataclass(frozen=True)
class RenderedVirtualHost:
    name: str
    port: int
    upstream_port: int
    verify_client: str
    write_identities: tuple[str, ...]
    max_body_size: str
    tls_name: str
    """Name every upstream's certificate carries (``proxy_ssl_name``)."""
    servers: tuple[Upstream, ...]


@dataclass(frozen=True)
class NginxInput:
    """The slice of the model nginx reads."""

    vhosts: tuple[RenderedVirtualHost, ...]
    tls: CertificateSpec
    upstream_tls: CertificateSpec

    def render(self) -> str:
        return render_template(
            "nginx/etc/nginx/nginx.conf.j2",
            vhosts=self.vhosts,
            server_cert=self.tls.chain_path,
            server_key=self.tls.key_path,
            upstream_cert=self.upstream_tls.chain_path,
            upstream_key=self.upstream_tls.key_path,
            ca=self.tls.ca_path,
            crl=ALL_CRLS,
        )


VERIFY_CLIENT = {"required": "on", "optional": "optional", "off": "off"}


def virtual_hosts(env: Environment, datacenter: str) -> tuple[RenderedVirtualHost, ...]:
    """The virtual hosts of ``datacenter``'s nginx: those whose upstream role has hosts there.

    Upstreams that share nothing (the registry on local filesystems) get one active
    server and the others as backups, so every nginx of the DC sends every request to
    the same instance and an image pushed is an image pulled.
    """
    shared_storage = {"registry": env.components.registry.s3 is not None}
    built = []
    for index, vhost in enumerate(env.components.nginx.virtual_hosts):
        upstreams = env.hosts_with(vhost.upstream_role, datacenter)
        if not upstreams:
            continue
        vip = next((v for v in env.vips_in(datacenter) if vhost.name in v.services), None)
        if vip is None:
            raise NginxModelError(
                f"components.nginx.virtual_hosts[{index}] ({vhost.name}): no VIP in "
                f"{datacenter} lists the service {vhost.name!r} in its services; add it to "
                "the edge VIP (its name is the one the upstreams' certificates carry)"
            )
        active_only_first = not shared_storage.get(vhost.name, True)
        built.append(
            RenderedVirtualHost(
                name=vhost.name.replace("-", "_"),
                port=vhost.port,
                upstream_port=vhost.upstream_port,
                verify_client=VERIFY_CLIENT[vhost.client_certificates],
                write_identities=tuple(re.escape(i) for i in vhost.write_identities),
                max_body_size=vhost.max_body_size,
                tls_name=env.vip_fqdn(vip),
                servers=tuple(
                    Upstream(str(h.address), backup=active_only_first and i > 0)
                    for i, h in enumerate(upstreams)
                ),
            )
        )
    return tuple(built)


def nginx_input(
    context: HostContext, tls: CertificateSpec, upstream_tls: CertificateSpec
) -> NginxInput:
    return NginxInput(
        vhosts=virtual_hosts(context.environment, context.datacenter.name),
        tls=tls,
        upstream_tls=upstream_tls,
    )


@operation()
def started() -> Generator[StringCommand, None, None]:
    if host.get_fact(SystemdStatus).get("nginx.service"):
        host.noop("nginx is running")
        return
    yield StringCommand("systemctl", "start", "nginx.service")


@operation(is_idempotent=False)
def reloaded() -> Generator[StringCommand, None, None]:
    """Graceful: new workers take new connections, old ones finish their requests."""
    if not host.get_fact(SystemdStatus).get("nginx.service"):
        host.noop("nginx not running yet")
        return
    yield StringCommand("systemctl", "reload", "nginx.service")


@deploy("nginx")
def nginx_node(spec: NginxInput, tls_changed: Callable[[], bool] = lambda: False) -> None:
    """The DC's application load balancer (see the module docstring).

    + tls_changed: true at execute time when host TLS wrote nginx's certificates or a CRL
      (``TlsChanges.changed``): nginx reads both only at start and reload, so without a
      reload it would serve a renewed certificate's predecessor and ignore a revocation.
    """
    config = checked_file(
        name="nginx configuration",
        path=CONFIG,
        src=StringIO(spec.render()),
        check="nginx -t -q -c {path}",
        mode="644",
    )
    systemd.service(
        name="nginx enabled at boot", service="nginx.service", running=None, enabled=True
    )
    start = started(name="nginx started")
    reloaded(
        name="nginx reloaded for its new configuration, certificates or CRL",
        _if=lambda: (config.did_change() or tls_changed()) and not start.did_change(),
    )
