"""Container registry: CNCF Distribution 2.8 (Debian's ``docker-registry``) behind nginx.

Each instance serves TLS with its platform certificate and requires a platform client
certificate (``http.tls.clientcas``): in practice nginx's, which authenticates the real
clients. Authentication is by client certificate, not htpasswd: every platform host
already has a key that never left it and a certificate the PKI can revoke, while a
shared password would have to be copied to every host and rotated by hand. nginx lets
any verified client pull and only the ``write_identities`` of the virtual host push.

Storage is the local filesystem (the lab) or S3 when the model configures one, with
redirects to pre-signed URLs disabled so clients never need to reach the object store.
``http.secret`` (shared by every instance behind the load balancer) comes from the
encrypted secrets and reaches the host only inside the uploaded file.

Every platform host trusts the registry for Docker: ``/etc/docker/certs.d/<vip>:<port>/``
holds the platform root and the host's own certificate as Docker's client pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO
from typing import Any

import yaml
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.context import read_secrets as read_environment_secrets
from plinth.model import Environment, RegistrySettings
from plinth.render import MANAGED_HEADER

CONFIG = "/etc/docker/registry/config.yml"
HTTP_SECRET = "registry-http-secret"
DOCKER_CERTS_DIR = "/etc/docker/certs.d"


@dataclass(frozen=True)
class RegistryInput:
    """The slice of the model one registry instance reads (no secrets: see render)."""

    address: str
    settings: RegistrySettings
    tls: CertificateSpec


@dataclass(frozen=True)
class RegistrySecrets:
    http_secret: str
    s3_secret_key: str | None = None

    def __repr__(self) -> str:  # never print a secret, even in a traceback
        return "RegistrySecrets(<hidden>)"


def registry_input(context: HostContext, tls: CertificateSpec) -> RegistryInput:
    return RegistryInput(
        address=str(context.host.address),
        settings=context.environment.components.registry,
        tls=tls,
    )


def read_secrets(context: HostContext) -> RegistrySecrets:
    """The shared ``http.secret`` (and the S3 secret key) from the encrypted secrets."""
    s3 = context.environment.components.registry.s3
    names = {"http": HTTP_SECRET} | ({"s3": s3.secret_key_secret} if s3 else {})
    values = read_environment_secrets(
        context, names, hint=", and `plinth secrets set` for the object store's key"
    )
    return RegistrySecrets(http_secret=values["http"], s3_secret_key=values.get("s3"))


def render(spec: RegistryInput, secrets: RegistrySecrets) -> str:
    """``config.yml``: secrets inside, so pass it on as file content only."""
    settings = spec.settings
    storage: dict[str, Any]
    if settings.s3 is None:
        storage = {"filesystem": {"rootdirectory": settings.filesystem_root}}
    else:
        s3 = settings.s3
        storage = {
            "s3": {
                "accesskey": s3.access_key,
                "secretkey": secrets.s3_secret_key,
                "region": s3.region,
                "regionendpoint": s3.endpoint,
                "bucket": s3.bucket,
                "secure": True,
                "v4auth": True,
                "rootdirectory": "/registry",
            },
            # Clients (and nginx) never talk to the object store: the registry streams.
            "redirect": {"disable": True},
        }
    storage["delete"] = {"enabled": False}
    storage["cache"] = {"blobdescriptor": "inmemory"}
    config = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": storage,
        "http": {
            "addr": f"{spec.address}:{settings.port}",
            "secret": secrets.http_secret,
            "tls": {
                "certificate": spec.tls.chain_path,
                "key": spec.tls.key_path,
                # Makes a platform client certificate mandatory (nginx presents its own).
                "clientcas": [spec.tls.ca_path],
            },
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    return f"# {MANAGED_HEADER}\n" + yaml.safe_dump(config, sort_keys=False)


@deploy("registry")
def registry_instance(spec: RegistryInput, config_text: str) -> None:
    if spec.settings.s3 is None:
        files.directory(
            name="registry storage directory",
            path=spec.settings.filesystem_root,
            user="docker-registry",
            group="docker-registry",
            mode="750",
        )
    config = files.put(
        name="registry configuration",
        src=StringIO(config_text),
        dest=CONFIG,
        user="root",
        group="docker-registry",
        mode="640",
    )
    started = systemd.service(
        name="registry running",
        service="docker-registry.service",
        running=True,
        enabled=True,
    )
    # Distribution does not reload its configuration: a change is a restart (stateless).
    systemd.service(
        name="registry restarted for its new configuration",
        service="docker-registry.service",
        restarted=True,
        _if=lambda: config.did_change() and not started.did_change(),
    )


def docker_trust_directory(env: Environment, datacenter: str) -> str | None:
    """``<vip fqdn>:<port>`` Docker knows the DC's registry by; None without one."""
    vhost = next((v for v in env.components.nginx.virtual_hosts if v.name == "registry"), None)
    vip = next((v for v in env.vips_in(datacenter) if "registry" in v.services), None)
    if vhost is None or vip is None:
        return None
    return f"{DOCKER_CERTS_DIR}/{env.vip_fqdn(vip)}:{vhost.port}"


@deploy("registry trust")
def registry_trust(directory: str, host_tls: CertificateSpec) -> None:
    """Docker on this host trusts the registry and authenticates with the host's own
    certificate (links: a renewed certificate is picked up without a deploy)."""
    files.directory(name="Docker registry trust directory", path=directory, mode="755")
    for link, target in (
        ("ca.crt", host_tls.ca_path),
        ("client.cert", host_tls.chain_path),
        ("client.key", host_tls.key_path),
    ):
        files.link(name=f"Docker registry {link}", path=f"{directory}/{link}", target=target)
