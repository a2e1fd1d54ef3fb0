"""What the lab looks like: the environment of each profile, addresses, names, limits.

Pure (no Docker, no I/O) so it is unit-tested; ``containers`` turns it into containers.

Address plan, per DC /24 (``10.231.<n>.0/24``, a range Docker's default pools and typical
home/office networks do not use):

    .1         Docker's bridge gateway (the controller's side; default route to outside):
               the model's ``network.controllers`` and ``network.clients``
    .11-.13    small: all-roles nodes ``<dc>-n1..3``; full: persistence ``<dc>-db1..3``
    .21-.22    full: edge hosts ``<dc>-edge1..2``
    .31-.32    full: stateless hosts ``<dc>-app1..2``
    .100       VIP ``pg`` (VRRP router id 51)
    .101       VIP ``edge`` (VRRP router id 52)
    .254       full: the inter-DC router container (``plinth-lab-router``)

The full profile is isolated by default: its DC networks are Docker ``internal`` (no
route out, the OT situation) and only the squid hosts are also on the egress network
(``10.231.250.0/24``, a normal bridge) whose gateway is their default route out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plinth.model import AirflowSettings, Environment, NginxSettings, Role

Profile = Literal["small", "full"]
PROFILES: tuple[Profile, ...] = ("small", "full")

DATACENTERS: dict[str, ipaddress.IPv4Network] = {
    "dc1": ipaddress.IPv4Network("10.231.1.0/24"),
    "dc2": ipaddress.IPv4Network("10.231.2.0/24"),
}
DOMAIN_SUFFIX = "lab.plinth.internal"
DOCKER_GATEWAY_OFFSET = 1
ROUTER_OFFSET = 254
ROUTER_NAME = "router"
EGRESS_NETWORK = ipaddress.IPv4Network("10.231.250.0/24")
"""The squid hosts' way out in an isolated lab (Docker's gateway at .1 NATs it)."""
EGRESS_NAME = "egress"

PERSISTENCE_ROLES = (
    Role.ETCD,
    Role.POSTGRESQL,
    Role.REDIS,
    Role.SENTINEL,
    Role.RABBITMQ,
    Role.MINIO,
)
EDGE_ROLES = (Role.HAPROXY, Role.KEEPALIVED, Role.NGINX, Role.SQUID)
STATELESS_ROLES = (Role.REGISTRY, *(r for r in Role if r.value.startswith("airflow-")))

# Memory caps (not reservations). Sum of the full profile stays below ~20 GiB so a
# runaway service hits its container's limit before the 24 GiB machine swaps or OOMs.
SQUID_PORT = 3128
"""The model's default ``components.squid.port`` (the lab does not change it)."""

MEMORY_SMALL_NODE = "4g"
MEMORY_PERSISTENCE = "1536m"
MEMORY_EDGE = "768m"
MEMORY_STATELESS = "2g"
MEMORY_ROUTER = "128m"

SSH_SETTINGS = {
    "user": "root",
    "key": "../.lab/ssh/id_ed25519",
    "known_hosts": "../.lab/ssh/known_hosts",
    "strict_host_key_checking": "yes",
}


def security_mirror(mirror: str) -> str:
    """The security suite on the same mirror host (``.../debian`` -> ``.../debian-security``)."""
    mirror = mirror.rstrip("/")
    if mirror.endswith("/debian"):
        return mirror + "-security"
    return mirror.rsplit("/", 1)[0] + "/debian-security"


def host_address(dc: str, offset: int) -> ipaddress.IPv4Address:
    return DATACENTERS[dc].network_address + offset


def router_address(dc: str) -> ipaddress.IPv4Address:
    return host_address(dc, ROUTER_OFFSET)


def docker_gateway(dc: str) -> ipaddress.IPv4Address:
    return host_address(dc, DOCKER_GATEWAY_OFFSET)


def network_name(dc: str) -> str:
    return f"plinth-lab-{dc}"


def container_name(host: str) -> str:
    return f"plinth-lab-{host}"


def egress_network_name() -> str:
    return network_name(EGRESS_NAME)


def isolated_by_default(profile: Profile) -> bool:
    """The full rehearsal is the OT situation; small (CI's) keeps its direct way out."""
    return profile == "full"


def egress_hosts(env: Environment) -> list[str]:
    """Hosts attached to the egress network in an isolated lab: the squid hosts only."""
    return [h.name for h in env.hosts if Role.SQUID in h.roles]


def datacenters_of(profile: Profile) -> list[str]:
    return ["dc1"] if profile == "small" else ["dc1", "dc2"]


def has_router(profile: Profile) -> bool:
    """Only the full profile has two DCs to route between."""
    return profile == "full"


def _host(name: str, dc: str, offset: int, roles: Iterable[Role]) -> dict[str, Any]:
    return {
        "name": name,
        "address": str(host_address(dc, offset)),
        "datacenter": dc,
        "roles": [r.value for r in roles],
    }


def _vips(dc: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "pg",
            "datacenter": dc,
            "address": str(host_address(dc, 100)),
            "router_id": 51,
            "services": ["postgresql"],
        },
        {
            "name": "edge",
            "datacenter": dc,
            "address": str(host_address(dc, 101)),
            "router_id": 52,
            "services": ["registry", "airflow", "squid"],
        },
    ]


def lab_components(profile: Profile) -> dict[str, Any]:
    """``components`` of the lab's environment: the model's defaults, except that both
    profiles run Airflow's services (not only their offline install), so every lab run
    proves the pipelines' platform end to end. In ``full`` the active DC runs them and
    DC2 keeps the same installation stopped (the standby site).

    Airflow needs a virtual host to its api-servers next to the registry's, and its
    smallest settings: in ``small`` three hosts carry every role on two cores, in
    ``full`` two 2 GiB app hosts per DC do.
    """
    airflow_vhost = {
        "name": "airflow",
        "port": 8444,
        "upstream_role": Role.AIRFLOW_API.value,
        "upstream_port": AirflowSettings().api_port,
    }
    return {
        "airflow": {"services": True, "api_workers": 1, "worker_concurrency": 2},
        "nginx": {
            "virtual_hosts": [
                *(v.model_dump(mode="json") for v in NginxSettings().virtual_hosts),
                airflow_vhost,
            ]
        },
    }


def build_environment(
    profile: Profile,
    mirror: str | None = None,
    extra_ca_bundle: Path | None = None,
    isolated: bool = False,
) -> dict[str, Any]:
    """The YAML-ready content of ``inventory/lab.yaml`` for ``profile``.

    ``mirror`` (default: the model's) is the Debian mirror the hosts use;
    ``extra_ca_bundle`` a PEM bundle the hosts add to their trust store; ``isolated``:
    the hosts have no way out but their DC's squid, so each DC's package sources name
    its edge VIP as ``http_proxy``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown lab profile {profile!r}; known: {', '.join(PROFILES)}")
    dcs = datacenters_of(profile)
    datacenters = []
    for dc in dcs:
        entry: dict[str, Any] = {
            "name": dc,
            "subnet": str(DATACENTERS[dc]),
            "domain": f"{dc}.{DOMAIN_SUFFIX}",
        }
        # The router is the path to the other DC (hosts keep Docker's gateway as their
        # default route); the base deploy makes the routes persistent. small has no router.
        if has_router(profile):
            entry["inter_dc_gateway"] = str(router_address(dc))
        datacenters.append(entry)

    hosts: list[dict[str, Any]] = []
    vips: list[dict[str, Any]] = []
    if profile == "small":
        hosts = [_host(f"dc1-n{i}", "dc1", 10 + i, Role) for i in (1, 2, 3)]
        vips = _vips("dc1")
    else:
        for dc in dcs:
            hosts += [_host(f"{dc}-db{i}", dc, 10 + i, PERSISTENCE_ROLES) for i in (1, 2, 3)]
            hosts += [_host(f"{dc}-edge{i}", dc, 20 + i, EDGE_ROLES) for i in (1, 2)]
            hosts += [_host(f"{dc}-app{i}", dc, 30 + i, STATELESS_ROLES) for i in (1, 2)]
            # VIP names and VRRP router ids repeat per DC: each DC is its own network.
            vips += _vips(dc)

    package_sources: dict[str, Any] = {}
    if mirror is not None:
        package_sources = {
            "apt_mirror": mirror.rstrip("/"),
            "apt_security_mirror": security_mirror(mirror),
        }
    if extra_ca_bundle is not None:
        # The controller's own trust: where egress is TLS-inspected (as an OT site's
        # proxy would be), hosts need that CA to reach PyPI and artifact sources.
        package_sources["extra_ca_bundle"] = str(extra_ca_bundle)
    if isolated:
        # Each DC's hosts go out through the squid behind their own DC's edge VIP
        # (the squid hosts themselves go direct: operations/base.py).
        for entry in datacenters:
            proxy = f"http://edge.{entry['domain']}:{SQUID_PORT}"
            entry["package_sources"] = {**package_sources, "http_proxy": proxy}
    # The controller reaches each DC's containers from Docker's bridge gateway there, and
    # the lab tests are the clients (they dial the VIPs, nodes and Sentinels from it).
    controller = [f"{docker_gateway(dc)}/32" for dc in dcs]
    # The lab proves the host firewall: inbound is enforced (SSH and the tests' client
    # traffic come from the gateways above). Egress stays open: the small lab's
    # foundation test fetches https://pypi.org from a host directly to prove the extra
    # CA bundle, a path no flow lists (hosts never use PyPI; wheelhouses come from the
    # controller). Name resolution (Docker's 127.0.0.11, loopback) and the package path
    # (the mirror on port 80 in small, the DC's squid in full) are in the flows, so
    # egress enforce is a model change away once that test goes through squid.
    network = {
        "controllers": controller,
        "clients": list(controller),
        "firewall": "enforce",
        "egress": "open",
    }
    document: dict[str, Any] = {
        "name": "lab",
        "kind": "lab",
        "datacenters": datacenters,
        "hosts": hosts,
        "vips": vips,
        "ssh": dict(SSH_SETTINGS),
        "network": network,
        "package_sources": package_sources,
    }
    components = lab_components(profile)
    if components:
        document["components"] = components
    return document


CONTROLLER_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def controller_ca_bundle() -> Path | None:
    """The controller's CA bundle, if it has one (Debian's ca-certificates)."""
    return CONTROLLER_CA_BUNDLE if CONTROLLER_CA_BUNDLE.is_file() else None


def memory_limit(roles: Iterable[Role | str]) -> str:
    """Memory cap of a host container from what it runs."""
    values = {Role(r) for r in roles}
    if values >= set(PERSISTENCE_ROLES) and values >= set(STATELESS_ROLES):
        return MEMORY_SMALL_NODE
    if values & set(PERSISTENCE_ROLES):
        return MEMORY_PERSISTENCE
    if values & set(STATELESS_ROLES):
        return MEMORY_STATELESS
    return MEMORY_EDGE


@dataclass(frozen=True)
class Route:
    destination: ipaddress.IPv4Network
    via: ipaddress.IPv4Address


def inter_dc_routes(env: Environment) -> dict[str, list[Route]]:
    """Per host: a route to every other DC's subnet through the router in its own DC.

    Hosts keep Docker's gateway as default route in a connected lab; in an isolated
    one only the squid hosts have a default route (the egress network's gateway).
    """
    if len(env.datacenters) < 2:
        return {}
    routes: dict[str, list[Route]] = {}
    for host in env.hosts:
        routes[host.name] = [
            Route(dc.subnet, router_address(host.datacenter))
            for dc in env.datacenters
            if dc.name != host.datacenter
        ]
    return routes


def subnet_conflicts(
    wanted: Iterable[ipaddress.IPv4Network],
    existing: Mapping[str, Iterable[ipaddress.IPv4Network]],
) -> list[str]:
    """One line per existing network (Docker network or route) that overlaps ours."""
    problems = []
    for ours in wanted:
        for owner, theirs in existing.items():
            for net in theirs:
                if net.prefixlen > 0 and ours.overlaps(net):
                    problems.append(f"{ours} overlaps {net} of {owner}")
    return problems


HOSTS_FILE_HEADER = (
    "# written by plinth lab: bind-mounted over /etc/hosts so that Docker leaves it alone\n"
    "# when the container restarts; the base deploy keeps its own block below.\n"
)
# What Docker writes for loopback; software expects these names.
LOOPBACK_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def hosts_file(env: Environment, host_name: str) -> str:
    """The ``/etc/hosts`` a lab host boots with (before any deploy).

    Docker would rebuild the file on every container start (from ``--add-host``), which
    drops the block the base deploy writes, so the next deploy sees drift. The lab owns
    the file instead: loopback, the host itself first (``hostname -f``), then every
    platform host and VIP so names resolve before the first deploy. The deploy's managed
    block is appended below these lines and survives restarts and snapshots.
    """
    own = next((h for h in env.hosts if h.name == host_name), None)
    if own is None:
        raise ValueError(f"{host_name!r} is not a host of environment {env.name}")
    lines = [f"{address}\t{names}" for address, names in LOOPBACK_HOSTS]
    lines.append(f"{own.address}\t{env.fqdn(own)} {own.name}")
    lines += [f"{h.address}\t{env.fqdn(h)} {h.name}" for h in env.hosts if h is not own]
    lines += [f"{v.address}\t{env.vip_fqdn(v)}" for v in env.vips]
    return HOSTS_FILE_HEADER + "\n".join(lines) + "\n"


def profile_of(document: Mapping[str, Any]) -> tuple[Profile, bool]:
    """(profile, isolated) of a lab environment document as ``build_environment`` made it:
    two datacenters are ``full``; isolated DCs send their packages through a proxy."""
    datacenters = document.get("datacenters") or []
    profile: Profile = "full" if len(datacenters) > 1 else "small"
    isolated = any((dc.get("package_sources") or {}).get("http_proxy") for dc in datacenters)
    return profile, isolated
