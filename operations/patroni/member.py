"""One Patroni member, composed in deploy order (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from operations.checked import checked_file
from operations.patroni.converge import (
    databases,
    dynamic_config,
    login_roles,
    member_ready,
    member_started,
    reloaded,
)
from operations.patroni.install import PatroniInstall, config_check, patroni_installed
from operations.patroni.release import release_rolled
from operations.patroni.roll import pending_restarts
from operations.patroni.settings import CONFIG, CONFIG_DIR, PatroniInput
from plinth.topology.patroni import RESTAPI_CURLRC


@deploy("Patroni")
def patroni_member(
    spec: PatroniInput,
    config_text: str,
    curlrc_text: str,
    install: PatroniInstall,
    tls_changed: Callable[[], bool] = lambda: False,
) -> None:
    """One member of the DC's Patroni cluster (see the module docstring).

    + config_text: the rendered patroni.yml (:func:`render`), passed as text so the
      passwords inside never become an operation argument
    + curlrc_text: the REST API credentials for plinth's own state-changing calls
      (:func:`render_curlrc`), passed as text for the same reason
    + install: the Patroni wheelhouse and where it goes (:class:`PatroniInstall`)
    + tls_changed: true at execute time when host TLS wrote Patroni's certificate or a CRL
      (``TlsChanges.changed``). Patroni's reload (SIGHUP) then reloads PostgreSQL, which
      re-reads ``ssl_cert_file`` and ``ssl_crl_file``, and restarts the REST API's listener
      when the certificate's serial changed: no restart, no failover.
    """
    patroni_installed(install=install, version=spec.settings.version)
    files.directory(
        name="PostgreSQL data root",
        path=spec.data_root,
        user="postgres",
        group="postgres",
        mode="700",
    )
    # Debian's patroni package used to create it; Patroni now comes from the wheelhouse.
    files.directory(
        name="Patroni configuration directory",
        path=CONFIG_DIR,
        user="root",
        group="postgres",
        mode="750",
    )
    # Before config.yml: once a member's Patroni reloads it, a change needs the password,
    # and every state-changing call below (PATCH /config, POST /restart, /switchover) reads
    # it from here. Patroni without authentication ignores the header, so calls made
    # before the reload succeed as well.
    files.put(
        name="Patroni REST API credentials for plinth's calls (root only)",
        src=StringIO(curlrc_text),
        dest=RESTAPI_CURLRC,
        mode="600",
        user="root",
        group="root",
    )
    config = checked_file(
        name="Patroni configuration",
        path=CONFIG,
        src=StringIO(config_text),
        check=config_check(install),
        mode="600",
        user="postgres",
        group="postgres",
    )
    systemd.service(
        name="patroni enabled at boot", service="patroni.service", running=None, enabled=True
    )
    started = member_started(name="patroni started")
    reloaded(
        name="patroni reloaded for its new configuration, certificate or CRL",
        _if=lambda: (config.did_change() or tls_changed()) and not started.did_change(),
    )
    member_ready(name="PostgreSQL running under Patroni", spec=spec)
    release_rolled(
        name="Patroni release rolled (replicas, switchover, old leader)",
        spec=spec,
        _serial=True,
    )
    dynamic_config(name="Patroni dynamic configuration", spec=spec)
    pending_restarts(
        name="PostgreSQL restarts rolled (replicas, switchover, old leader)",
        spec=spec,
        _serial=True,
    )
    login_roles(
        name="Login roles (client certificate)",
        roles=list(spec.login_roles),
        port=spec.settings.postgresql_port,
    )
    if spec.databases:
        databases(
            name="Databases of login roles",
            wanted=list(spec.databases),
            port=spec.settings.postgresql_port,
        )
