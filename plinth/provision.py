"""Controller-side preparation of an environment before a deploy.

The lab gets its PKI on first use; every environment gets the secrets its
components need, generated once and stored encrypted (never defaults in code).
"""

from __future__ import annotations

import datetime as dt

from plinth.at_rest import prove_passphrase
from plinth.model import Environment
from plinth.passphrase import get_passphrase
from plinth.pki import DatacenterTrust, PkiError, PkiStore, init_pki
from plinth.pki.crl import DueRefresh, crl_states, refresh_due
from plinth.secrets import SecretStore
from plinth.stacks import project_root, state_dir


def passphrase_for(env: Environment) -> str:
    return get_passphrase(env.name, env.kind == "lab", project_root() / ".lab")


def datacenter_trust(env: Environment) -> list[DatacenterTrust]:
    return [DatacenterTrust(dc.name, (dc.domain,), (dc.subnet,)) for dc in env.datacenters]


def ensure_pki(env: Environment) -> list[str]:
    """Create the PKI of a lab environment if missing (real ones need `pki init`)."""
    store = PkiStore(state_dir(env.name))
    missing_dcs = [dc.name for dc in env.datacenters if dc.name not in store.datacenters()]
    if not missing_dcs:
        return []
    if env.kind != "lab":
        raise PkiError(
            f"environment {env.name!r} has no intermediate for {', '.join(missing_dcs)}: run "
            f"`plinth pki init {env.name}` (with the root key at hand) first"
        )
    passphrase = passphrase_for(env)
    prove_passphrase(state_dir(env.name), env.name, passphrase)
    return init_pki(state_dir(env.name), env.name, datacenter_trust(env), passphrase)


def refresh_due_crls(env: Environment) -> DueRefresh:
    """Before ``plinth up`` touches a host: re-sign every CRL inside its warning window.

    A CRL past its nextUpdate makes PostgreSQL, nginx, haproxy and RabbitMQ refuse every client, so
    ``up`` does not leave that to a calendar: it re-signs what is due (the intermediates'
    keys are here anyway, it signs leaves with them) and the deploy carries the new CRLs to
    the hosts. A root CRL that is missing or expired while the root key is offline stops it
    (:class:`PkiError`) before any host is touched. The passphrase is proven against every
    CA key first, as for every write of CA material; nothing due, nothing opened.
    """
    store = PkiStore(state_dir(env.name))
    if not any(state.due(dt.datetime.now(dt.UTC)) for state in crl_states(store)):
        return DueRefresh((), ())
    passphrase = passphrase_for(env)
    prove_passphrase(state_dir(env.name), env.name, passphrase)
    return refresh_due(store, passphrase)


# Secrets each component needs, by the role that needs them: generated on the first
# `up` so no password is ever a default in code. kind: urlsafe | hex | fernet.
REQUIRED_SECRETS: dict[str, dict[str, str]] = {
    "postgresql": {
        "postgresql-superuser-password": "urlsafe",
        "postgresql-replication-password": "urlsafe",
        "postgresql-rewind-password": "urlsafe",
        # Patroni's REST API: what a state-changing call needs besides a certificate.
        "postgresql-restapi-password": "urlsafe",
    },
    "redis": {
        "redis-default-password": "urlsafe",
        "redis-replication-password": "urlsafe",
    },
    "sentinel": {"redis-sentinel-password": "urlsafe"},
    "rabbitmq": {"rabbitmq-erlang-cookie": "hex", "rabbitmq-admin-password": "urlsafe"},
    "minio": {"minio-root-password": "urlsafe"},
    "registry": {"registry-http-secret": "urlsafe"},
    "airflow-api": {
        "airflow-fernet-key": "fernet",
        "airflow-jwt-secret": "urlsafe",
        "airflow-api-secret-key": "urlsafe",
    },
}


SECRET_BYTES: dict[str, int] = {"airflow-jwt-secret": 64}
"""Secrets that need more than the store's default 32 random bytes. Airflow signs its JWTs
with HS512 and uses the secret's text as the key; RFC 7518 section 3.2 wants an HMAC key at
least as long as the hash output, 64 bytes (PyJWT warns below that)."""


def required_secrets(env: Environment) -> dict[str, str]:
    present = {role.value for host in env.hosts for role in host.roles}
    needed: dict[str, str] = {}
    for role, secrets in REQUIRED_SECRETS.items():
        if role in present:
            needed.update(secrets)
    if env.components.airflow.services and "airflow-api" in present:
        # The simple auth manager's admin password: only once the services run.
        needed["airflow-admin-password"] = "urlsafe"
    return needed


def ensure_secrets(env: Environment) -> list[str]:
    """Generate the secrets the environment's components need; names of those created.

    Opening the store proves the passphrase against secrets.json; before anything is added
    it must open the CA keys too (or, for a brand-new environment, pass the strength rule).
    """
    passphrase = passphrase_for(env)
    store = SecretStore(state_dir(env.name) / "secrets.json", passphrase)
    if all(name in store for name in required_secrets(env)):
        return []
    prove_passphrase(state_dir(env.name), env.name, passphrase)
    return [
        name
        for name, kind in sorted(required_secrets(env).items())
        if store.ensure(name, kind, SECRET_BYTES.get(name, 32))  # type: ignore[arg-type]
    ]


def short_secrets(env: Environment) -> list[str]:
    """Warnings for stored secrets shorter than :data:`SECRET_BYTES` asks (generated before
    that rule). Not replaced here: a new JWT secret invalidates the tokens of running
    tasks, so the operator chooses when (``secrets generate --force``, then ``up``)."""
    store = SecretStore(state_dir(env.name) / "secrets.json", passphrase_for(env))
    warnings = []
    for name, minimum in sorted(SECRET_BYTES.items()):
        if name in required_secrets(env) and name in store:
            length = len(store.get(name).reveal().encode())
            if length < minimum:
                warnings.append(
                    f"secret {name} is {length} bytes, {minimum} wanted (HS512 key); replace "
                    f"it when tasks may restart: plinth secrets generate {env.name} {name} "
                    f"--force, then plinth up {env.name}"
                )
    return warnings
