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
    ACL_FILE,
    DROP_IN,
    REDIS_UNIT,
    SECRET_NAMES,
    SENTINEL_UNIT,
    Passwords,
    command_line,
)
from plinth.render import render_template
from plinth.topology.redis import AUTH_DIR, RedisInput


def _auth_files(passwords: Passwords) -> None:
    files.directory(name="Redis credentials directory", path=AUTH_DIR, mode="700", user="root")
    for user in SECRET_NAMES:
        files.put(
            name=f"redis-cli password of the {user} user (root only)",
            src=StringIO(passwords[user]),
            dest=f"{AUTH_DIR}/{user}.auth",
            mode="600",
            user="root",
            group="root",
        )


def _drop_in(unit: str, arguments: str) -> Any:
    container = host.get_fact(ContainerRuntime) != "none"
    return files.put(
        name=f"{unit}: settings fixed at start (drop-in)",
        src=StringIO(
            render_template(
                f"redis/etc/systemd/system/{unit}.d/plinth.conf.j2",
                arguments=arguments,
                container=container,
            )
        ),
        dest=DROP_IN.format(unit=unit),
        mode="644",
        create_remote_dir=True,
    )


@deploy("Redis")
def redis_node(spec: RedisInput, passwords: Passwords) -> None:
    """The DC's Redis data node and/or Sentinel on this host (see the module docstring).

    + passwords: from :func:`read_passwords`; they only reach files on the host
    """
    _auth_files(passwords)
    redis_unit = None
    if spec.redis_tls is not None:
        acl = files.put(
            name="Redis ACL users (password hashes)",
            src=StringIO(
                render_template("redis/etc/redis/users.acl.j2", hashes=passwords.acl_hashes())
            ),
            dest=ACL_FILE,
            mode="640",
            user="redis",
            group="redis",
        )
        redis_unit = _drop_in(
            REDIS_UNIT, command_line(spec, spec.redis_tls, spec.settings.port, data_node=True)
        )
    sentinel_unit = None
    if spec.sentinel_tls is not None:
        sentinel_unit = _drop_in(
            SENTINEL_UNIT,
            command_line(spec, spec.sentinel_tls, spec.settings.sentinel_port, data_node=False),
        )
    systemd.daemon_reload(
        name="systemd reloaded for the Redis drop-ins",
        _if=lambda: any(u is not None and u.did_change() for u in (redis_unit, sentinel_unit)),
    )
    if spec.redis_tls is not None:
        bootstrap_config(
            name="redis.conf bootstrapped", spec=spec, passwords=passwords, sentinel=False
        )
        systemd.service(
            name="redis enabled at boot", service=REDIS_UNIT, running=None, enabled=True
        )
        redis_started = started(name="redis started", unit=REDIS_UNIT)
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
            service=SENTINEL_UNIT,
            running=False,
            enabled=False,
        )
    elif spec.sentinel_tls is not None:
        bootstrap_config(
            name="sentinel.conf bootstrapped", spec=spec, passwords=passwords, sentinel=True
        )
        systemd.service(
            name="sentinel enabled at boot", service=SENTINEL_UNIT, running=None, enabled=True
        )
        started(name="sentinel started", unit=SENTINEL_UNIT)
        answering(name="sentinel monitoring the master set", spec=spec, sentinel=True)
        monitoring_config(name="Sentinel parameters (SENTINEL SET)", spec=spec)
    if spec.redis_tls is not None:
        rolling_restart(
            name="Redis restarts rolled (replicas, Sentinels, failover, old master)",
            spec=spec,
            _serial=True,
        )
