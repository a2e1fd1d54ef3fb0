"""Outputs: what an application (or DC2's stack) needs to reach the platform.

Computed from the model and the PKI on disk, so DC2 reads DC1's endpoints
from the same shared description. Each component adds its endpoints here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plinth.model import Environment


def collect(env: Environment, environment_file: Path) -> dict[str, Any]:
    root = environment_file.parent / env.name / "pki" / "root.crt"
    data: dict[str, Any] = {
        "environment": env.name,
        "ca_bundle": str(root) if root.is_file() else None,
        "datacenters": {},
    }
    for dc in env.datacenters:
        data["datacenters"][dc.name] = {
            "stack": f"{env.name}-{dc.name}",
            "domain": dc.domain,
            "vips": {
                vip.name: {
                    "fqdn": env.vip_fqdn(vip),
                    "address": str(vip.address),
                    "services": list(vip.services),
                }
                for vip in env.vips_in(dc.name)
            },
            "hosts": {h.name: str(h.address) for h in env.hosts_in(dc.name)},
            "postgresql": _postgresql(env, dc.name, data["ca_bundle"]),
            "redis": _redis(env, dc.name, data["ca_bundle"]),
            **_edge(env, dc.name),
            "rabbitmq": _rabbitmq(env, dc.name, data["ca_bundle"]),
            "airflow": _airflow(env, dc.name),
        }
    return data


def _edge(env: Environment, dc: str) -> dict[str, Any]:
    """The DC's egress proxy and registry, as hosts and operators address them."""
    from plinth.model import Role

    out: dict[str, Any] = {"egress_proxy": None, "registry": None}
    vip = next((v for v in env.vips_in(dc) if "squid" in v.services), None)
    if vip is not None and env.hosts_with(Role.SQUID, dc):
        out["egress_proxy"] = f"http://{env.vip_fqdn(vip)}:{env.components.squid.port}"
    vhost = next((v for v in env.components.nginx.virtual_hosts if v.name == "registry"), None)
    vip = next((v for v in env.vips_in(dc) if "registry" in v.services), None)
    if vhost and vip and env.hosts_with(Role.REGISTRY, dc) and env.hosts_with(Role.NGINX, dc):
        out["registry"] = {
            "address": f"{env.vip_fqdn(vip)}:{vhost.port}",
            "push_identities": list(vhost.write_identities),
            "client_certificate": f"plinth pki client-cert {env.name} --cn <identity> --out <dir>",
        }
    return out


def _postgresql(env: Environment, dc: str, ca_bundle: str | None) -> dict[str, Any] | None:
    """Where applications reach the DC's PostgreSQL: the VIP, its ports, how to verify."""
    from plinth.model import Role

    vip = next((v for v in env.vips_in(dc) if "postgresql" in v.services), None)
    if vip is None or not env.hosts_with(Role.POSTGRESQL, dc):
        return None
    haproxy = env.components.haproxy
    return {
        "host": env.vip_fqdn(vip),
        "address": str(vip.address),
        "primary_port": haproxy.primary_port,
        "replica_port": haproxy.replica_port,
        "sslmode": "verify-full",
        "sslrootcert": ca_bundle,
        "client_certificate": f"plinth pki client-cert {env.name} --cn <role> --out <dir>",
    }


def _redis(env: Environment, dc: str, ca_bundle: str | None) -> dict[str, Any] | None:
    """Where applications reach the DC's Redis: through its Sentinels (never a fixed node:
    the master moves on failover)."""
    from plinth.model import Role
    from plinth.topology.redis import sentinel_master_name, upstream_of

    if not env.hosts_with(Role.REDIS, dc):
        return None
    # A DC that is not the active one holds replicas of the active DC's master and its
    # own Sentinels are stopped: its applications reach the active DC's cell.
    upstream = upstream_of(env, dc)
    source = upstream.datacenter if upstream is not None else dc
    sentinels = env.hosts_with(Role.SENTINEL, source)
    if not sentinels:
        return None
    redis = env.components.redis
    return {
        "master_name": sentinel_master_name(redis, source),
        "follows": upstream.datacenter if upstream is not None else None,
        "sentinels": [f"{env.fqdn(h)}:{redis.sentinel_port}" for h in sentinels],
        "sentinel_addresses": [f"{h.address}:{redis.sentinel_port}" for h in sentinels],
        "tls": True,
        "ca_bundle": ca_bundle,
        "client_certificate": f"plinth pki client-cert {env.name} --cn <app> --out <dir>",
        "password_secrets": {
            "redis (user default)": "redis-default-password",
            "sentinel": "redis-sentinel-password",
        },
    }


def _rabbitmq(env: Environment, dc: str, ca_bundle: str | None) -> dict[str, Any] | None:
    """Where applications reach the DC's RabbitMQ: every node (clients fail over between
    them; Celery takes ``;``-separated URLs), AMQPS with a client certificate."""
    from plinth.model import Role

    hosts = env.hosts_with(Role.RABBITMQ, dc)
    if not hosts:
        return None
    settings = env.components.rabbitmq
    return {
        "nodes": [env.fqdn(h) for h in hosts],
        "amqps_port": settings.amqps_port,
        "management_port": settings.management_port,
        "vhosts": [v.name for v in settings.vhosts],
        "authentication": "EXTERNAL (user = CN of the client certificate)",
        "ca_bundle": ca_bundle,
        "client_certificate": f"plinth pki client-cert {env.name} --cn <user> --out <dir>",
    }


def _airflow(env: Environment, dc: str) -> dict[str, Any] | None:
    """Airflow's UI and REST API through the DC's nginx (only with its services on)."""
    from plinth.model import Role

    settings = env.components.airflow
    vhost = next(
        (v for v in env.components.nginx.virtual_hosts if v.upstream_role == Role.AIRFLOW_API),
        None,
    )
    if not settings.services or vhost is None:
        return None
    vip = next((v for v in env.vips_in(dc) if vhost.name in v.services), None)
    if vip is None:
        return None
    if not env.hosts_with(Role.AIRFLOW_API, dc) or not env.hosts_with(Role.NGINX, dc):
        return None
    url = f"https://{env.vip_fqdn(vip)}:{vhost.port}/"
    return {
        "url": url,
        "api": f"{url}api/v2/",
        "health": f"{url}api/v2/monitor/health",
        "active": dc == env.active_site,
        "client_certificate": f"plinth pki client-cert {env.name} --cn <identity> --out <dir>",
        "admin_password_secret": "airflow-admin-password",
    }


def render_text(data: dict[str, Any]) -> str:
    lines = [f"outputs of {data['environment']}:"]
    lines.append(f"  CA bundle: {data['ca_bundle'] or '(no PKI yet: plinth pki init)'}")
    for dc_name, dc in data["datacenters"].items():
        lines.append(f"  {dc_name} (stack {dc['stack']}, domain {dc['domain']}):")
        for vip_name, vip in dc["vips"].items():
            services = ", ".join(vip["services"]) or "-"
            lines.append(f"    VIP {vip_name}: {vip['fqdn']} ({vip['address']}) serves {services}")
        lines.append(f"    hosts: {', '.join(f'{n} {a}' for n, a in dc['hosts'].items())}")
        pg = dc.get("postgresql")
        if pg:
            lines.append(
                f"    PostgreSQL: {pg['host']} ({pg['address']}) primary :{pg['primary_port']}, "
                f"replicas :{pg['replica_port']}, sslmode={pg['sslmode']}, client certificate "
                f"required ({pg['client_certificate']})"
            )
        rd = dc.get("redis")
        if rd:
            lines.append(
                f"    Redis {rd['master_name']} via Sentinel over TLS: "
                f"{', '.join(rd['sentinels'])}; "
                f"client certificate required ({rd['client_certificate']}), passwords: secrets "
                f"{', '.join(rd['password_secrets'].values())}"
                + (
                    f" (this DC's nodes are priority-0 replicas of {rd['follows']}'s master)"
                    if rd.get("follows")
                    else ""
                )
            )
        if dc.get("egress_proxy"):
            lines.append(f"    egress proxy (squid): {dc['egress_proxy']}")
        registry = dc.get("registry")
        if registry:
            pushers = ", ".join(registry["push_identities"]) or "any verified client"
            lines.append(
                f"    registry: {registry['address']}, client certificate required "
                f"({registry['client_certificate']}); push: {pushers}"
            )
        mq = dc.get("rabbitmq")
        if mq:
            lines.append(
                f"    RabbitMQ: amqps://{{{','.join(mq['nodes'])}}}:{mq['amqps_port']} vhosts "
                f"{', '.join(mq['vhosts'])}, {mq['authentication']}; management "
                f":{mq['management_port']} ({mq['client_certificate']})"
            )
        af = dc.get("airflow")
        if af:
            state = "active" if af["active"] else "standby: units stopped"
            lines.append(
                f"    Airflow ({state}): UI {af['url']}, API {af['api']}, client certificate "
                f"required ({af['client_certificate']}), admin password: secret "
                f"{af['admin_password_secret']}"
            )
    return "\n".join(lines)
