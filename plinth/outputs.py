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
            "rabbitmq": _rabbitmq(env, dc.name, data["ca_bundle"]),
        }
    return data


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
        mq = dc.get("rabbitmq")
        if mq:
            lines.append(
                f"    RabbitMQ: amqps://{{{','.join(mq['nodes'])}}}:{mq['amqps_port']} vhosts "
                f"{', '.join(mq['vhosts'])}, {mq['authentication']}; management "
                f":{mq['management_port']} ({mq['client_certificate']})"
            )
    return "\n".join(lines)
