"""The cell's settings, pure: constants, the passwords, the settings maps (fixed at start,
changed at runtime, Sentinel's), the drop-ins and their command line, and the bootstrap
files.

The host's names (units, binaries, files, user) are the release's
(:attr:`.RedisInput.store`, from :mod:`plinth.releases`): Redis on Debian 12, Valkey on
Debian 13. The drop-in templates are named after the role of their unit
(``SERVER_UNIT.d``, ``SENTINEL_UNIT.d``) and written to that unit's drop-in directory."""

from __future__ import annotations

import hashlib
import shlex

from plinth.certificates import CertificateSpec
from plinth.context import HostContext, read_secrets
from plinth.model import RedisSettings
from plinth.releases import KeyValueStore
from plinth.render import render_template
from plinth.topology.redis import RedisInput

DROP_IN = "/etc/systemd/system/{unit}.d/plinth.conf"
DROP_IN_TEMPLATE = "redis/etc/systemd/system/{role}_UNIT.d/plinth.conf.j2"
READY_WAIT_SECONDS = 90
PEERS_WAIT_SECONDS = 30
SECRET_NAMES = {
    "default": "redis-default-password",
    "replication": "redis-replication-password",
    "sentinel": "redis-sentinel-password",
}


class Passwords:
    """The three Redis passwords; ``repr`` never shows them (FunctionCommand arguments
    are printed in debug logs)."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, user: str) -> str:
        return self._values[user]

    def __repr__(self) -> str:
        return "<redis passwords>"

    def acl_hashes(self) -> dict[str, str]:
        """SHA-256 of each password: ``users.acl`` stores hashes, not the passwords."""
        return {user: hashlib.sha256(pw.encode()).hexdigest() for user, pw in self._values.items()}


def static_settings(spec: RedisInput) -> dict[str, str]:
    """Settings fixed at start, as ``CONFIG GET`` reports them on a data node."""
    tls = spec.redis_tls
    if tls is None:
        return {}
    return {
        "port": "0",
        "tls-port": str(spec.settings.port),
        "tls-cert-file": tls.chain_path,
        "tls-key-file": tls.key_path,
        "tls-ca-cert-file": tls.ca_path,
        "tls-auth-clients": "yes",
        "tls-replication": "yes",
        "aclfile": spec.store.acl_file,
        "io-threads": str(spec.settings.io_threads),
    }


def runtime_settings(settings: RedisSettings, replica_priority: int) -> dict[str, str]:
    """Settings changed with ``CONFIG SET`` (values as ``CONFIG GET`` prints them)."""
    return {
        "min-replicas-to-write": str(settings.min_replicas_to_write),
        "min-replicas-max-lag": str(settings.min_replicas_max_lag),
        "maxmemory": str(settings.maxmemory_mb * 1024 * 1024),
        "maxmemory-policy": settings.maxmemory_policy,
        "replica-priority": str(replica_priority),
    }


def sentinel_settings(settings: RedisSettings) -> dict[str, str]:
    """Monitoring parameters changed with ``SENTINEL SET`` (names as ``SENTINEL MASTER``
    prints them)."""
    return {
        "quorum": str(settings.quorum),
        "down-after-milliseconds": str(settings.down_after_milliseconds),
        "failover-timeout": str(settings.failover_timeout_milliseconds),
        "parallel-syncs": str(settings.parallel_syncs),
    }


def setting_difference(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    """The settings of ``wanted`` whose live value differs (missing counts as different)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


def command_line(spec: RedisInput, tls: CertificateSpec, port: int, data_node: bool) -> str:
    """Arguments of the drop-in's ``ExecStart`` (no secrets)."""
    args = [
        ("bind", spec.address),
        # Outgoing connections (replication, Sentinel) leave from the node's own address:
        # the address Sentinel and the master record, and the certificate names.
        ("bind-source-addr", spec.address),
        ("port", "0"),
        ("tls-port", str(port)),
        ("tls-cert-file", tls.chain_path),
        ("tls-key-file", tls.key_path),
        ("tls-ca-cert-file", tls.ca_path),
        ("tls-auth-clients", "yes"),
        ("tls-replication", "yes"),
    ]
    if data_node:
        args += [("aclfile", spec.store.acl_file), ("io-threads", str(spec.settings.io_threads))]
    return " ".join(f"--{key} {shlex.quote(value)}" for key, value in args)


def unit(store: KeyValueStore, sentinel: bool) -> str:
    """The systemd unit of the data node or of the Sentinel."""
    return store.sentinel_unit if sentinel else store.server_unit


def drop_in_path(store: KeyValueStore, sentinel: bool) -> str:
    """Where the unit's drop-in goes (``/etc/systemd/system/<unit>.d/plinth.conf``)."""
    return DROP_IN.format(unit=unit(store, sentinel))


def render_drop_in(spec: RedisInput, sentinel: bool, arguments: str, container: bool) -> str:
    """The drop-in of the data node's (or the Sentinel's) unit: ``ExecStart`` with
    ``arguments`` (:func:`command_line`); ``container``: the host is a container (lab)."""
    return render_template(
        DROP_IN_TEMPLATE.format(role="SENTINEL" if sentinel else "SERVER"),
        store=spec.store,
        arguments=arguments,
        container=container,
    )


def render_redis_conf(
    spec: RedisInput, passwords: Passwords, master: tuple[str, int] | None
) -> str:
    return render_template(
        "redis/etc/redis/redis.conf.j2",
        store=spec.store,
        marker=spec.marker,
        settings=spec.settings,
        replication_password=passwords["replication"],
        replica_priority=spec.replica_priority,
        master=master,
    )


def render_sentinel_conf(spec: RedisInput, passwords: Passwords, master: tuple[str, int]) -> str:
    return render_template(
        "redis/etc/redis/sentinel.conf.j2",
        store=spec.store,
        marker=spec.marker,
        settings=spec.settings,
        sentinel_password=passwords["sentinel"],
        master_name=spec.master_name,
        master=master,
    )


def read_passwords(context: HostContext) -> Passwords:
    """The Redis passwords from the environment's encrypted secrets."""
    return Passwords(read_secrets(context, SECRET_NAMES))
