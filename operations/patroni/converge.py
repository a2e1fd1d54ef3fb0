"""One member converged: Patroni started or reloaded, PostgreSQL running, the dynamic
configuration patched to the model, login roles and their databases created."""

from __future__ import annotations

import shlex
from collections.abc import Generator, Sequence
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.facts.systemd import SystemdStatus

from facts.patroni import PostgresDatabases, PostgresRoles
from operations.patroni.rest import cluster_fact, gate, pending_config_patch
from operations.patroni.settings import READY_WAIT_SECONDS, PatroniInput, flatten
from plinth.reasons import explain_change
from plinth.rolling import note, refuse, run
from plinth.topology.patroni import unsafe_call


def _running() -> bool:
    return bool(host.get_fact(SystemdStatus).get("patroni.service"))


@operation()
def member_started() -> Generator[StringCommand, None, None]:
    """Start Patroni where it is not running (it bootstraps or clones PostgreSQL)."""
    if _running():
        host.noop("patroni is running")
        return
    yield StringCommand("systemctl", "start", "patroni.service")


@operation(is_idempotent=False)
def reloaded() -> Generator[StringCommand, None, None]:
    """Reload a running Patroni after its local configuration changed (SIGHUP: it rewrites
    pg_hba.conf and reloads PostgreSQL; a parameter needing a restart is only flagged)."""
    if not _running():
        host.noop("patroni not running yet")
        return
    yield StringCommand("systemctl", "reload", "patroni.service")


@operation()
def member_ready(spec: PatroniInput) -> Generator[StringCommand, None, None]:
    """Wait until this member's PostgreSQL runs (bootstrapped, or cloned and replicating)."""
    state = cluster_fact(spec)
    me = state.member(spec.name) if state else None
    if me is not None and me.state in ("running", "streaming"):
        host.noop(f"{spec.name} is {me.role}, {me.state}")
        return
    yield StringCommand(
        f"for i in $(seq {READY_WAIT_SECONDS}); do "
        f'[ "$({spec.curl("/health", "-o /dev/null", "-w %{http_code}")})" = 200 ] && exit 0; '
        "sleep 1; done; "
        f'echo "error: PostgreSQL on {spec.name} not running after {READY_WAIT_SECONDS} s; '
        'see journalctl -u patroni" >&2; exit 1'
    )


@operation()
def dynamic_config(spec: PatroniInput) -> Generator[FunctionCommand, None, None]:
    """Bring Patroni's dynamic configuration to the model through ``PATCH /config``.

    Sent from the member that leads at preview time (any member accepts it); the others
    have nothing to do. Before the cluster exists, ``bootstrap.dcs`` seeds it instead.
    """
    cluster = cluster_fact(spec)
    if cluster is None or cluster.leader is None:
        host.noop("no running cluster yet: bootstrap.dcs seeds the dynamic configuration")
        return
    if cluster.leader.name != spec.name:
        host.noop(f"dynamic configuration is applied from the leader ({cluster.leader.name})")
        return
    patch = pending_config_patch(spec)
    if not patch:
        host.noop("dynamic configuration matches the model")
        return
    if cluster.problems(spec.members, spec.settings.maximum_lag_on_failover):
        explain_change("cluster not healthy now: the change will be refused unless it recovers")
    explain_change("PATCH /config " + ", ".join(flatten(patch)))
    yield FunctionCommand(_gated_patch, (spec, patch), {})


def patch_command(spec: PatroniInput, patch: dict[str, Any]) -> str:
    """``PATCH /config`` of this member's REST API, run as root on it (the password from its
    curlrc: :func:`~plinth.topology.patroni.unsafe_call`)."""
    return unsafe_call(spec.tls, "PATCH", spec.api + "/config", patch, "-f", timeout=10)


def _gated_patch(state: Any, host: Any, spec: PatroniInput, patch: dict[str, Any]) -> bool:
    if gate(host, spec, "Patroni configuration change") is None:
        return False
    ok, out, err = run(host, patch_command(spec, patch))
    if not ok:
        return refuse(host, f"PATCH /config refused: {' '.join(out + err)[-300:]}")
    note(host, "Patroni dynamic configuration: " + ", ".join(flatten(patch)))
    PATCHED_SCOPES.add(spec.scope)
    return True


# Scopes whose dynamic configuration this run changed. Operation bodies are evaluated
# again when they execute: by then the configuration matches and Patroni may not have
# flagged pending restarts yet, so the roll must remember that a PATCH just happened.
PATCHED_SCOPES: set[str] = set()


@operation()
def login_roles(roles: Sequence[str], port: int) -> Generator[StringCommand, None, None]:
    """Certificate-authenticated login roles, each with a schema of its own.

    Created on the primary only (decided by PostgreSQL itself when the command runs);
    replicas see them through replication, so the next run has nothing to do anywhere.
    """
    existing = host.get_fact(PostgresRoles, port=port)
    missing = [r for r in roles if existing is None or r not in existing]
    if not missing:
        host.noop("login roles present")
        return
    explain_change(f"create role(s) {', '.join(missing)}")
    array = "ARRAY[" + ",".join(f"'{r}'" for r in missing) + "]"
    sql = (
        f"SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest({array}) r "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \\gexec\n"
        f"SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', r, r) "
        f"FROM unnest({array}) r \\gexec\n"
    )
    psql = f"runuser -u postgres -- psql -p {port} -X -v ON_ERROR_STOP=1"
    yield StringCommand(
        f'cd / && if [ "$({psql} -Atqc "select pg_is_in_recovery()")" = f ]; then '
        f"printf '%s' {shlex.quote(sql)} | {psql} -q; fi"
    )


@operation()
def databases(wanted: Sequence[tuple[str, str]], port: int) -> Generator[StringCommand, None, None]:
    """Databases owned by login roles (``(name, owner)``); an existing one is left alone.

    Like :func:`login_roles`: created on the primary only (PostgreSQL decides when the
    command runs), replicas get them through replication. ``CREATE DATABASE`` cannot run
    in a transaction block or a function, hence ``\\gexec`` on a filtered select.
    """
    existing = host.get_fact(PostgresDatabases, port=port)
    missing = [(n, o) for n, o in wanted if existing is None or n not in existing]
    if not missing:
        host.noop("databases present")
        return
    explain_change(f"create database(s) {', '.join(n for n, _ in missing)}")
    rows = ",".join(f"('{n}','{o}')" for n, o in missing)
    sql = (
        f"SELECT format('CREATE DATABASE %I OWNER %I', d, o) FROM (VALUES {rows}) AS w(d, o) "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d) \\gexec\n"
        f"SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', d) "
        f"FROM (VALUES {rows}) AS w(d, o) \\gexec\n"
    )
    psql = f"runuser -u postgres -- psql -p {port} -X -v ON_ERROR_STOP=1"
    yield StringCommand(
        f'cd / && if [ "$({psql} -Atqc "select pg_is_in_recovery()")" = f ]; then '
        f"printf '%s' {shlex.quote(sql)} | {psql} -q; fi"
    )
