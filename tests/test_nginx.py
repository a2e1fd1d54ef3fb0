"""nginx's virtual hosts from the model, its rendered configuration, and the edge's
certificates and VIP tracking (no Docker)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from operations.nginx import NginxInput, NginxModelError, nginx_input, virtual_hosts
from plinth.certificates import host_certificates
from plinth.context import HostContext
from plinth.model import Environment, ModelError, Role, load_environment, parse_environment
from plinth.topology.keepalived import tracked_units

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"


def example() -> Environment:
    return load_environment(EXAMPLE)


def edge_input(env: Environment, name: str = "dc1-edge1") -> NginxInput:
    host = next(h for h in env.hosts if h.name == name)
    context = HostContext(env, EXAMPLE, host, env.datacenters_by_name[host.datacenter])
    certs = {c.service: c for c in host_certificates(env, host)}
    return nginx_input(context, certs["nginx"], certs["nginx-upstream"])


def test_registry_upstreams_are_verified_over_tls_with_a_client_certificate() -> None:
    text = edge_input(example()).render()
    assert text.startswith("# managed by plinth")
    assert "proxy_ssl_verify on;" in text
    assert "proxy_ssl_verify_depth 2;" in text
    assert "proxy_ssl_trusted_certificate /etc/plinth/tls/nginx/ca.crt;" in text
    assert "proxy_ssl_certificate /etc/plinth/tls/nginx-upstream/nginx-upstream-chain.crt;" in text
    assert "proxy_ssl_certificate_key /etc/plinth/tls/nginx-upstream/nginx-upstream.key;" in text
    assert "proxy_pass https://registry_upstreams;" in text
    assert "proxy_ssl_name edge.dc1.grid.plinth.internal;" in text
    # dc1's registry hosts only, never dc2's
    assert "10.40.1.31:5000" in text and "10.40.2.31" not in text


def test_clients_need_a_platform_certificate_and_only_listed_identities_write() -> None:
    text = edge_input(example()).render()
    assert "listen 5443 ssl;" in text
    assert "ssl_verify_client on;" in text
    assert "ssl_client_certificate /etc/plinth/tls/nginx/ca.crt;" in text
    assert "ssl_verify_depth 2;" in text
    assert '"~^(GET|HEAD|OPTIONS):" 0;' in text
    assert '"~^[A-Z]+:(.*,)?CN=registry\\-push(,|$)" 0;' in text
    assert "if ($registry_write_denied)" in text and "return 403;" in text


def test_filesystem_storage_sends_everything_to_one_instance() -> None:
    vhost = virtual_hosts(example(), "dc1")[0]
    assert [(s.address, s.backup) for s in vhost.servers] == [
        ("10.40.1.31", False),
        ("10.40.1.32", True),
    ]


def test_shared_s3_storage_makes_every_instance_active() -> None:
    data = example().model_dump(mode="json")
    data["components"]["registry"]["s3"] = {
        "endpoint": "https://minio.dc1.grid.plinth.internal:9000",
        "bucket": "registry",
    }
    vhost = virtual_hosts(parse_environment(data), "dc1")[0]
    assert [s.backup for s in vhost.servers] == [False, False]


def test_a_virtual_host_without_a_vip_names_the_field_and_the_datacenter() -> None:
    data = example().model_dump(mode="json")
    for vip in data["vips"]:
        vip["services"] = [s for s in vip["services"] if s != "registry"]
    with pytest.raises(NginxModelError, match=r"virtual_hosts\[0\] \(registry\).*dc1"):
        virtual_hosts(parse_environment(data), "dc1")


def test_a_datacenter_without_upstream_hosts_gets_no_virtual_host() -> None:
    data = example().model_dump(mode="json")
    for host in data["hosts"]:
        if host["datacenter"] == "dc2":
            host["roles"] = [r for r in host["roles"] if r != "registry"]
    assert virtual_hosts(parse_environment(data), "dc2") == ()


def test_two_virtual_hosts_on_one_port_are_refused() -> None:
    data = example().model_dump(mode="json")
    registry = data["components"]["nginx"]["virtual_hosts"][0]
    data["components"]["nginx"]["virtual_hosts"].append(dict(registry, name="airflow"))
    with pytest.raises(ModelError, match=r"components\.nginx\.virtual_hosts\[1\]\.port: 5443"):
        parse_environment(data)


def test_edge_certificates_name_the_vip_where_the_service_sits_behind_it() -> None:
    env = example()
    edge = next(h for h in env.hosts if h.name == "dc1-edge1")
    certs = {c.service: c for c in host_certificates(env, edge)}
    assert certs["nginx"].dns_names == (
        "dc1-edge1.dc1.grid.plinth.internal",
        "edge.dc1.grid.plinth.internal",
    )
    assert certs["nginx"].ip_addresses == ("10.40.1.21", "10.40.1.101")
    assert certs["nginx-upstream"].profile.value == "client"
    app = next(h for h in env.hosts if h.name == "dc1-app1")
    registry = next(c for c in host_certificates(env, app) if c.service == "registry")
    assert registry.dns_names == (
        "dc1-app1.dc1.grid.plinth.internal",
        "edge.dc1.grid.plinth.internal",
    )
    assert registry.owner == "docker-registry"


def test_the_edge_vip_follows_nginx_and_squid_the_pg_vip_haproxy() -> None:
    edge_roles = (Role.HAPROXY, Role.KEEPALIVED, Role.NGINX, Role.SQUID)
    assert tracked_units(("registry", "airflow", "squid"), edge_roles, {"registry"}) == (
        "nginx",
        "squid",
    )
    assert tracked_units(("postgresql",), edge_roles, {"registry"}) == ("haproxy",)
    # a holder that runs none of the VIP's services does not hold it
    assert tracked_units(("registry",), (Role.KEEPALIVED,), {"registry"}) == ()


def test_client_certificates_are_checked_against_every_crl_only_where_clients_are_verified() -> (
    None
):
    env = example()
    base = edge_input(env)
    pulled = base.vhosts[0]
    public = replace(pulled, name="public", port=8443, verify_client="off")
    optional = replace(pulled, name="status", port=8444, verify_client="optional")
    text = replace(base, vhosts=(pulled, public, optional)).render()
    sections = {block.split(" ----", 1)[0]: block for block in text.split("# ---- ")[1:]}
    crl = "ssl_crl /etc/plinth/tls/crl/all.crl.pem;"
    assert crl in sections["registry"] and "ssl_verify_client on;" in sections["registry"]
    assert crl in sections["status"]
    assert "ssl_verify_client off;" in sections["public"] and "ssl_crl" not in sections["public"]
    # Upstream certificates are always verified, so always against the CRLs.
    assert "proxy_ssl_crl /etc/plinth/tls/crl/all.crl.pem;" in text.split("# ---- ")[0]
