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
        }
    return data


def render_text(data: dict[str, Any]) -> str:
    lines = [f"outputs of {data['environment']}:"]
    lines.append(f"  CA bundle: {data['ca_bundle'] or '(no PKI yet: plinth pki init)'}")
    for dc_name, dc in data["datacenters"].items():
        lines.append(f"  {dc_name} (stack {dc['stack']}, domain {dc['domain']}):")
        for vip_name, vip in dc["vips"].items():
            services = ", ".join(vip["services"]) or "-"
            lines.append(f"    VIP {vip_name}: {vip['fqdn']} ({vip['address']}) serves {services}")
        lines.append(f"    hosts: {', '.join(f'{n} {a}' for n, a in dc['hosts'].items())}")
    return "\n".join(lines)
