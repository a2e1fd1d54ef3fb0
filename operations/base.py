"""The base host deploy: identity, name resolution, package sources, trust, time,
kernel settings and the journal. Every other component stands on it.

It does *not* touch users or SSH daemon settings (they belong to the operator's
hardening baseline), nor the firewall (``operations/firewall.py``, right after it), and it
never removes packages.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, deploy, operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import apt, files, server, systemd

from facts.base import ContainerRuntime, Ipv4Routes, ManagedBlock, SysctlValues, block_markers
from plinth.model import BaseSettings, PackageSources
from plinth.render import render_template, sha1_text
from plinth.topology.squid import proxy_endpoint

SYSCTL_FILE = "/etc/sysctl.d/60-plinth.conf"
CA_DIR = "/usr/local/share/ca-certificates"
PROXY_CONF = "/etc/apt/apt.conf.d/80plinth-proxy"
PROXY_DETECT = "/usr/local/lib/plinth/apt-proxy-detect"


@dataclass(frozen=True)
class BaseHostInput:
    """The slice of the model the base deploy reads (nothing else)."""

    hostname: str
    fqdn: str
    hosts_entries: tuple[tuple[str, str, str], ...]
    """(address, fqdn, short name) of every platform host and VIP."""
    package_sources: PackageSources
    settings: BaseSettings
    suite: str
    """The environment's Debian release (``Environment.release``): apt's suite."""
    extra_ca_pem: str | None = None
    """Contents of the extra CA bundle (read on the controller)."""
    trust_anchors: dict[str, str] = field(default_factory=dict)
    """File name under /usr/local/share/ca-certificates -> PEM (the platform root)."""
    routes: tuple[tuple[str, str], ...] = ()
    """(destination subnet, next hop): the way to the other datacenters."""
    proxies: tuple[str, ...] = ()
    """apt's egress proxies in the order tried (``operations.squid.client_proxies``);
    empty: apt goes direct (no proxy in the model, or this host is a squid host)."""


def rendered(template: str, **values: object) -> StringIO:
    """A rendered template as an upload source (``files.put`` compares its sha1)."""
    return StringIO(render_template(template, **values))


@operation()
def managed_block(path: str, marker: str, content: str) -> Generator[StringCommand, None, None]:
    """Keep ``content`` between plinth's markers in ``path``, leaving the rest alone.

    The file is rewritten in place (``cat > path``), never replaced by rename:
    container runtimes bind-mount ``/etc/hosts`` and a rename over it fails.

    + path: file to edit (created if missing)
    + marker: name of the block, unique within the file
    + content: the block's lines, without markers
    """
    current = host.get_fact(ManagedBlock, path=path, marker=marker)
    wanted = content.rstrip("\n")
    if current == wanted:
        host.noop(f"{path}: block {marker} already up to date")
        return
    begin, end = block_markers(marker)
    block = f"{begin}\n{wanted}\n{end}\n"
    q_path = shlex.quote(path)
    q_begin, q_end = shlex.quote(begin), shlex.quote(end)
    # Rebuild: everything outside the old block, then the new block at the end.
    script = (
        f"touch {q_path} && tmp=$(mktemp) && "
        f"awk -v b={q_begin} -v e={q_end} '$0==b{{skip=1;next}} $0==e{{skip=0;next}} !skip' "
        f'{q_path} > "$tmp" && printf \'%s\' {shlex.quote(block)} >> "$tmp" && '
        f'cat "$tmp" > {q_path} && rm -f "$tmp"'
    )
    yield StringCommand(script)


@operation()
def sysctl_settings(
    values: dict[str, str], path: str = SYSCTL_FILE
) -> Generator[StringCommand | FileUploadCommand, None, None]:
    """Persist kernel settings in ``path`` and apply the ones the kernel lets us write.

    Inside a container most of /proc/sys is read-only: those keys are still
    written to the file (so the file is the same as on a real host) but are not
    applied, and the reason is recorded. On a real host every key is applied and
    a key that cannot be written fails the operation.
    """
    text = render_template("base/etc/sysctl.d/60-plinth.conf.j2", sysctl=values)
    remote_sha = host.get_fact(Sha1File, path=path)
    if remote_sha != sha1_text(text):
        yield FileUploadCommand(StringIO(text), path)
        yield StringCommand("chmod", "0644", path)

    in_container = host.get_fact(ContainerRuntime) != "none"
    current = host.get_fact(SysctlValues, keys=tuple(sorted(values)))
    skipped = []
    for key, wanted in sorted(values.items()):
        state = current.get(key)
        normalised = " ".join(wanted.split())
        if state is not None and state.value == normalised:
            continue
        if in_container and (state is None or not state.writable):
            skipped.append(key)
            continue
        yield StringCommand("sysctl", "-q", "-w", f"{key}={normalised}")
    if skipped:
        host.noop(
            f"not applied in a container (read-only /proc/sys): {', '.join(skipped)}; "
            f"they stay in {path} for real hosts"
        )


@operation()
def routes_present(routes: tuple[tuple[str, str], ...]) -> Generator[StringCommand, None, None]:
    """Each ``(destination, next hop)`` route is in the main table now.

    Persistence across reboots is the ``plinth-routes`` unit's job; this makes the
    running table match without waiting for one. Routes plinth did not declare
    are left alone.
    """
    current = host.get_fact(Ipv4Routes)
    missing = [(dest, via) for dest, via in routes if current.get(dest) != via]
    if not missing:
        host.noop("routes to the other datacenters already in place")
        return
    for dest, via in missing:
        yield StringCommand("ip", "route", "replace", dest, "via", via)


@deploy("Base host")
def base_host(spec: BaseHostInput) -> None:
    """Apply the base host settings (see module docstring)."""
    in_container = host.get_fact(ContainerRuntime) != "none"

    server.hostname(name="Set the host name", hostname=spec.hostname)
    managed_block(
        name="Platform names in /etc/hosts",
        path="/etc/hosts",
        marker="platform hosts",
        content="\n".join(f"{addr}\t{fqdn} {short}" for addr, fqdn, short in spec.hosts_entries),
    )

    sources = spec.package_sources
    apt_sources = files.put(
        name="apt sources from the model",
        src=rendered("base/etc/apt/sources.list.j2", sources=sources, suite=spec.suite),
        dest="/etc/apt/sources.list",
        mode="644",
    )
    files.file(
        name="No duplicate deb822 source list",
        path="/etc/apt/sources.list.d/debian.sources",
        present=False,
    )
    if spec.proxies:
        # apt asks the script which proxy to use (once per mirror host and run): the
        # first one that accepts a connection. The VIP comes first but does not exist
        # before keepalived runs; the DC's squid hosts follow (see docs/components/edge.md).
        detect = files.put(
            name="apt proxy detection script",
            src=rendered(
                "base/usr/local/lib/plinth/apt-proxy-detect.j2",
                proxies=[proxy_endpoint(p) for p in spec.proxies],
            ),
            dest=PROXY_DETECT,
            mode="755",
            create_remote_dir=True,
        )
        proxy_conf = files.put(
            name="apt proxy",
            src=rendered("base/etc/apt/apt.conf.d/80plinth-proxy.j2", detect=PROXY_DETECT),
            dest=PROXY_CONF,
            mode="644",
        )
    else:
        detect = files.file(name="No apt proxy detection", path=PROXY_DETECT, present=False)
        proxy_conf = files.file(name="No apt proxy", path=PROXY_CONF, present=False)

    apt.update(
        name="Refresh package lists after a source change",
        _if=lambda: apt_sources.did_change() or proxy_conf.did_change() or detect.did_change(),
    )
    apt.packages(
        name="Base packages",
        packages=list(spec.settings.packages),
        update=True,
        cache_time=24 * 3600,
    )

    # Trust: the extra bundle for package sources, then the platform's own root.
    anchors = dict(spec.trust_anchors)
    if spec.extra_ca_pem:
        anchors["plinth-extra-ca.crt"] = spec.extra_ca_pem
    trust_changes = []
    for filename, pem in sorted(anchors.items()):
        trust_changes.append(
            files.put(
                name=f"Trust anchor {filename}",
                src=StringIO(pem),
                dest=f"{CA_DIR}/{filename}",
                mode="644",
            )
        )
    server.shell(
        name="Rebuild the system trust store",
        commands=["update-ca-certificates"],
        _if=lambda: any(op.did_change() for op in trust_changes),
    )

    files.link(
        name=f"Time zone {spec.settings.timezone}",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{spec.settings.timezone}",
    )
    chrony_sources = "/etc/chrony/sources.d/plinth.sources"
    if spec.settings.ntp_servers:
        chrony = files.put(
            name="chrony time sources",
            src=rendered(
                "base/etc/chrony/sources.d/plinth.sources.j2", servers=spec.settings.ntp_servers
            ),
            dest=chrony_sources,
            mode="644",
        )
    else:
        chrony = files.file(name="No plinth chrony sources", path=chrony_sources, present=False)
    if in_container:
        # chronyd needs CAP_SYS_TIME (ConditionCapability): containers share the
        # host's clock, so the unit is enabled for parity but not started.
        systemd.service(name="chrony enabled", service="chrony.service", running=None, enabled=True)
    else:
        systemd.service(
            name="chrony running",
            service="chrony.service",
            running=True,
            enabled=True,
            restarted=False,
        )
        systemd.service(
            name="chrony reload sources",
            service="chrony.service",
            restarted=True,
            _if=chrony.did_change,
        )

    sysctl_settings(name="Kernel settings baseline", values=dict(spec.settings.sysctl))

    unit = files.put(
        name="Persistent routes to the other datacenters",
        src=rendered("base/etc/systemd/system/plinth-routes.service.j2", routes=spec.routes),
        dest="/etc/systemd/system/plinth-routes.service",
        mode="644",
    )
    systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)
    systemd.service(
        name="plinth-routes enabled",
        service="plinth-routes.service",
        running=True,
        enabled=True,
    )
    routes_present(name="Routes to the other datacenters", routes=spec.routes)

    files.directory(name="Persistent journal directory", path="/var/log/journal", mode="2755")
    journald = files.put(
        name="journald persistence",
        src=rendered(
            "base/etc/systemd/journald.conf.d/60-plinth.conf.j2",
            max_use=spec.settings.journald_max_use,
        ),
        dest="/etc/systemd/journald.conf.d/60-plinth.conf",
        mode="644",
        create_remote_dir=True,
    )
    systemd.service(
        name="Restart journald for its new settings",
        service="systemd-journald.service",
        restarted=True,
        _if=journald.did_change,
    )


APPLIED_ACTIVE = "/etc/plinth/active-datacenter"
"""The ``active_datacenter`` the host's last complete deploy applied
(:data:`plinth.geo.observe.APPLIED_MARKER`): the DC commands read it to know whether a
site's files already follow a move of the active site."""


def applied_active_datacenter(active: str) -> None:
    """Record ``active`` in :data:`APPLIED_ACTIVE`. Called last in ``deploy.py``: a host
    whose deploy failed keeps the site it last applied completely."""
    files.put(
        name="Active datacenter this deploy applied",
        src=StringIO(f"{active}\n"),
        dest=APPLIED_ACTIVE,
        mode="644",
        create_remote_dir=True,
    )


def read_extra_ca(path: str | None, environment_file: Path) -> str | None:
    """Read the extra CA bundle named in the model (relative to the environment file)."""
    if not path:
        return None
    bundle = (environment_file.parent / path).resolve()
    try:
        return bundle.read_text()
    except OSError as error:
        raise ValueError(
            f"{environment_file}: package_sources.extra_ca_bundle: cannot read {bundle}: "
            f"{error.strerror}"
        ) from None


__all__ = [
    "APPLIED_ACTIVE",
    "BaseHostInput",
    "applied_active_datacenter",
    "base_host",
    "managed_block",
    "proxy_endpoint",
    "read_extra_ca",
    "sysctl_settings",
]
