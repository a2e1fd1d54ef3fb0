"""One host's Redis data node and/or Sentinel, composed in deploy order (see the package
docstring)."""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from facts.base import ContainerRuntime
from operations.redis.bootstrap import bootstrap_config
from operations.redis.converge import (
    answering,
    monitoring_config,
    runtime_config,
    started,
    users_reloaded,
)
from operations.redis.roll import rolling_restart
from operations.redis.settings import (
    SECRET_NAMES,
    Passwords,
    command_line,
    drop_in_path,
    render_drop_in,
    unit,
)
from plinth.render import render_template
from plinth.topology.redis import AUTH_DIR, RedisInput


def _auth_files(spec: RedisInput, passwords: Passwords) -> None:
    files.directory(name="Redis credentials directory", path=AUTH_DIR, mode="700", user="root")
    for user in SECRET_NAMES:
        files.put(
            name=f"{spec.store.cli} password of the {user} user (root only)",
            src=StringIO(passwords[user]),
            dest=f"{AUTH_DIR}/{user}.auth",
            mode="600",
            user="root",
            group="root",
        )


def _drop_in(spec: RedisInput, sentinel: bool, arguments: str) -> Any:
    container = host.get_fact(ContainerRuntime) != "none"
    return files.put(
        name=f"{unit(spec.store, sentinel)}: settings fixed at start (drop-in)",
        src=StringIO(render_drop_in(spec, sentinel, arguments, container)),
        dest=drop_in_path(spec.store, sentinel),
        mode="644",
        create_remote_dir=True,
    )


@deploy("Redis")
def redis_node(spec: RedisInput, passwords: Passwords) -> None:
    """The DC's Redis data node and/or Sentinel on this host (see the module docstring).

    + passwords: from :func:`read_passwords`; they only reach files on the host
    """
    store = spec.store
    _auth_files(spec, passwords)
    redis_unit = None
    if spec.redis_tls is not None:
        acl = files.put(
            name="Redis ACL users (password hashes)",
            src=StringIO(
                render_template("redis/etc/redis/users.acl.j2", hashes=passwords.acl_hashes())
            ),
            dest=store.acl_file,
            mode="640",
            user=store.user,
            group=store.group,
        )
        redis_unit = _drop_in(
            spec, False, command_line(spec, spec.redis_tls, spec.settings.port, data_node=True)
        )
    sentinel_unit = None
    if spec.sentinel_tls is not None:
        sentinel_unit = _drop_in(
            spec,
            True,
            command_line(spec, spec.sentinel_tls, spec.settings.sentinel_port, data_node=False),
        )
    systemd.daemon_reload(
        name="systemd reloaded for the Redis drop-ins",
        _if=lambda: any(u is not None and u.did_change() for u in (redis_unit, sentinel_unit)),
    )
    if spec.redis_tls is not None:
        bootstrap_config(
            name=f"{store.server_config_name} bootstrapped",
            spec=spec,
            passwords=passwords,
            sentinel=False,
        )
        systemd.service(
            name="redis enabled at boot", service=store.server_unit, running=None, enabled=True
        )
        redis_started = started(name="redis started", unit=store.server_unit)
        answering(name="redis answering over TLS", spec=spec, sentinel=False)
        users_reloaded(
            name="Redis ACL users reloaded",
            spec=spec,
            _if=lambda: acl.did_change() and not redis_started.did_change(),
        )
        runtime_config(name="Redis runtime settings (CONFIG SET)", spec=spec)
    if spec.sentinel_tls is not None and spec.upstream is not None:
        # A following DC's Sentinels would form a cell of their own around a master that
        # is really a replica of the active DC: they stay stopped (and their file is not
        # bootstrapped) until an operator makes this DC the active one (see the takeover
        # runbook in docs/components/redis.md).
        systemd.service(
            name=f"sentinel stopped: this DC follows {spec.upstream.datacenter}",
            service=store.sentinel_unit,
            running=False,
            enabled=False,
        )
    elif spec.sentinel_tls is not None:
        bootstrap_config(
            name=f"{store.sentinel_config_name} bootstrapped",
            spec=spec,
            passwords=passwords,
            sentinel=True,
        )
        systemd.service(
            name="sentinel enabled at boot",
            service=store.sentinel_unit,
            running=None,
            enabled=True,
        )
        started(name="sentinel started", unit=store.sentinel_unit)
        answering(name="sentinel monitoring the master set", spec=spec, sentinel=True)
        monitoring_config(name="Sentinel parameters (SENTINEL SET)", spec=spec)
    if spec.redis_tls is not None:
        rolling_restart(
            name="Redis restarts rolled (replicas, Sentinels, failover, old master)",
            spec=spec,
            _serial=True,
        )
