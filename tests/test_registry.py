"""The registry's configuration from the model, and Docker's trust of it (no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from operations.registry import (
    RegistryInput,
    RegistrySecrets,
    docker_trust_directory,
    render,
)
from plinth.certificates import host_certificates
from plinth.model import Environment, RegistryS3Storage, RegistrySettings, load_environment

REPO = Path(__file__).resolve().parents[1]
SECRETS = RegistrySecrets(http_secret="not-a-real-secret", s3_secret_key="s3-not-real")


def example() -> Environment:
    return load_environment(REPO / "inventory" / "example-prod.yaml")


def registry_spec(settings: RegistrySettings | None = None) -> RegistryInput:
    env = example()
    app = next(h for h in env.hosts if h.name == "dc1-app1")
    tls = next(c for c in host_certificates(env, app) if c.service == "registry")
    return RegistryInput("10.40.1.31", settings or env.components.registry, tls)


def test_filesystem_storage_with_tls_and_mandatory_client_certificates() -> None:
    text = render(registry_spec(), SECRETS)
    assert text.startswith("# managed by plinth")
    config = yaml.safe_load(text)
    assert config["storage"]["filesystem"] == {"rootdirectory": "/var/lib/docker-registry"}
    assert "s3" not in config["storage"]
    http = config["http"]
    assert http["addr"] == "10.40.1.31:5000"
    assert http["secret"] == "not-a-real-secret"
    assert http["tls"] == {
        "certificate": "/etc/plinth/tls/registry/registry-chain.crt",
        "key": "/etc/plinth/tls/registry/registry.key",
        "clientcas": ["/etc/plinth/tls/registry/ca.crt"],
    }


def test_s3_storage_never_redirects_clients_to_the_object_store() -> None:
    s3 = RegistryS3Storage(endpoint="https://minio.dc1.grid.plinth.internal:9000", bucket="reg")
    config = yaml.safe_load(render(registry_spec(RegistrySettings(s3=s3)), SECRETS))
    storage = config["storage"]
    assert "filesystem" not in storage
    assert storage["redirect"] == {"disable": True}
    assert storage["s3"]["regionendpoint"] == "https://minio.dc1.grid.plinth.internal:9000"
    assert storage["s3"]["bucket"] == "reg" and storage["s3"]["region"] == "us-east-1"
    assert storage["s3"]["secretkey"] == "s3-not-real"


def test_secrets_do_not_show_in_a_repr() -> None:
    assert "not-a-real-secret" not in repr(SECRETS)
    assert "not-a-real-secret" not in repr(registry_spec())


def test_docker_knows_the_registry_by_the_vip_name_and_the_virtual_host_port() -> None:
    env = example()
    assert docker_trust_directory(env, "dc2") == (
        "/etc/docker/certs.d/edge.dc2.grid.plinth.internal:5443"
    )


def test_outputs_name_the_egress_proxy_and_the_registry_of_each_datacenter() -> None:
    from plinth.outputs import collect, render_text

    data = collect(example(), REPO / "inventory" / "example-prod.yaml")
    dc2 = data["datacenters"]["dc2"]
    assert dc2["egress_proxy"] == "http://edge.dc2.grid.plinth.internal:3128"
    assert dc2["registry"]["address"] == "edge.dc2.grid.plinth.internal:5443"
    assert dc2["registry"]["push_identities"] == ["registry-push"]
    text = render_text(data)
    assert "registry: edge.dc1.grid.plinth.internal:5443, client certificate required" in text


def test_status_is_unhealthy_when_an_edge_daemon_is_down() -> None:
    from plinth.status import healthy, render

    data: dict[str, Any] = {
        "stack": "lab-dc1",
        "etcd": None,
        "patroni": None,
        "vips": [],
        "edge": {"dc1-n1": {"squid": True, "nginx": False, "docker-registry": True}},
    }
    assert not healthy(data)
    assert "edge dc1-n1: squid=active nginx=DOWN docker-registry=active" in render(data)
    data["edge"]["dc1-n1"]["nginx"] = True
    assert healthy(data)
