"""haproxy: the DC's PostgreSQL entry on the ``pg`` VIP (TCP passthrough).

The primary port routes to the node whose Patroni answers ``/primary`` with 200, the
replica port to replicas under the lag limit (``/replica?lag=``). Checks run every
``check_interval_ms`` over mutual TLS (Patroni's ``verify_client: required``): haproxy
presents its own client certificate, concatenated with its key on the host (the key
never leaves it). Sessions to a server marked down are shut, so clients of a demoted
primary reconnect to the new one. The configuration is checked with ``haproxy -c``
before it replaces the live one; changes are applied by a reload (no dropped sessions).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Generator
from dataclasses import dataclass
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import systemd

from facts.haproxy import ConcatenationMatches
from operations.checked import checked_file
from operations.keepalived import HAPROXY_STATS_SOCKET, SCRIPT_USER, script_user
from plinth.certificates import ALL_CRLS, CertificateSpec
from plinth.context import HostContext
from plinth.model import HaproxySettings, PatroniSettings, Role
from plinth.render import render_template

CONFIG = "/etc/haproxy/haproxy.cfg"
CLIENT_PEM = "/etc/haproxy/plinth-client.pem"


@dataclass(frozen=True)
class Backend:
    name: str
    address: str
    fqdn: str


@dataclass(frozen=True)
class HaproxyInput:
    """The slice of the model haproxy reads."""

    settings: HaproxySettings
    patroni: PatroniSettings
    vips: tuple[str, ...]
    """Addresses of the DC's VIPs that serve ``postgresql``."""
    servers: tuple[Backend, ...]
    tls: CertificateSpec

    def render(self) -> str:
        listeners = [
            {"name": "postgresql_primary", "port": self.settings.primary_port,
             "uri": "/primary", "balance": None},
            {"name": "postgresql_replicas", "port": self.settings.replica_port,
             "uri": f"/replica?lag={self.patroni.replica_max_lag}", "balance": "leastconn"},
        ]  # fmt: skip
        return render_template(
            "haproxy/etc/haproxy/haproxy.cfg.j2",
            settings=self.settings,
            listeners=listeners,
            vips=self.vips,
            servers=self.servers,
            postgresql_port=self.patroni.postgresql_port,
            rest_api_port=self.patroni.rest_api_port,
            ca_file=self.tls.ca_path,
            crl_file=ALL_CRLS,
            client_pem=CLIENT_PEM,
            stats_socket=HAPROXY_STATS_SOCKET,
            stats_group=SCRIPT_USER,
        )


def haproxy_input(context: HostContext, tls: CertificateSpec) -> HaproxyInput:
    env = context.environment
    dc = context.datacenter.name
    return HaproxyInput(
        settings=env.components.haproxy,
        patroni=env.components.patroni,
        vips=tuple(str(v.address) for v in env.vips_in(dc) if "postgresql" in v.services),
        servers=tuple(
            Backend(h.name, str(h.address), env.fqdn(h))
            for h in env.hosts_with(Role.POSTGRESQL, dc)
        ),
        tls=tls,
    )


@operation()
def client_pem(cert: str, key: str, dest: str) -> Generator[StringCommand, None, None]:
    """``dest`` = certificate chain + key, mode 0600, rebuilt when either changes."""
    if host.get_fact(ConcatenationMatches, parts=(cert, key), dest=dest):
        host.noop(f"{dest} up to date")
        return
    q = shlex.quote
    tmp = q(dest + ".tmp")
    yield StringCommand(f"umask 077 && cat {q(cert)} {q(key)} > {tmp} && mv -f {tmp} {q(dest)}")


@operation()
def started() -> Generator[StringCommand, None, None]:
    if host.get_fact(SystemdStatus).get("haproxy.service"):
        host.noop("haproxy is running")
        return
    yield StringCommand("systemctl", "start", "haproxy.service")


@operation(is_idempotent=False)
def reloaded() -> Generator[StringCommand, None, None]:
    """Graceful reload: new workers take new connections, old sessions finish."""
    if not host.get_fact(SystemdStatus).get("haproxy.service"):
        host.noop("haproxy not running yet")
        return
    yield StringCommand("systemctl", "reload", "haproxy.service")


@deploy("haproxy")
def haproxy_node(spec: HaproxyInput, tls_changed: Callable[[], bool] = lambda: False) -> None:
    """The DC's PostgreSQL entry (see the module docstring).

    + tls_changed: true at execute time when host TLS wrote a CRL haproxy reads
      (``TlsChanges.crl_changed``): haproxy loads CRLs only at start and reload. Its client
      certificate is covered by the client PEM rebuilt here.
    """
    # The read-only stats socket belongs to its group: it must exist before haproxy -c.
    script_user(name="keepalived script user (reader of haproxy's read-only stats socket)")
    pem = client_pem(
        name="haproxy client certificate for Patroni checks",
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        dest=CLIENT_PEM,
    )
    config = checked_file(
        name="haproxy configuration",
        path=CONFIG,
        src=StringIO(spec.render()),
        check="haproxy -c -q -f {path}",
        mode="644",
    )
    systemd.service(
        name="haproxy enabled at boot", service="haproxy.service", running=None, enabled=True
    )
    start = started(name="haproxy started")
    reloaded(
        name="haproxy reloaded for its new configuration, certificate or CRL",
        _if=lambda: (
            (config.did_change() or pem.did_change() or tls_changed()) and not start.did_change()
        ),
    )
