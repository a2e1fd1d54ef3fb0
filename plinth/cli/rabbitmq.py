"""``plinth rabbitmq sync-definitions``: the active DC's queues, exchanges and bindings
reproduced in every other DC's cluster (never messages).

Each DC is its own pyinfra stack, so a DC2 deploy cannot read DC1's cluster: the copy
runs from the controller, which reaches every DC over SSH. It reads everything first
(one node of the active DC exports, one node of each other DC describes what it has) and
imports only when every read succeeded: an unreachable DC or node is an error naming it,
nothing is imported anywhere. pyinfra is imported only when the command runs (as in
``plinth status``).
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
from contextlib import ExitStack
from typing import Any

import click

from plinth.cli.completion import complete_environments
from plinth.cli.core import OperatorError, operator_errors
from plinth.model import Environment, Host, Role
from plinth.rabbitmq_sync import (
    SyncError,
    SyncPlan,
    Topology,
    first_json,
    import_document,
    parse_queue_info,
    parse_topology,
    plan_sync,
)
from plinth.stacks import Stack, resolve

EXPORT = "rabbitmqctl -q export_definitions -"
EXPORT_TIMEOUT = 120


def _run(state: Any, host: Host, command: str, timeout: int = EXPORT_TIMEOUT) -> list[str]:
    from plinth.rolling import run

    target = state.inventory.get_host(host.name)
    ok, out, err = run(target, command, timeout=timeout)
    if not ok:
        last = " ".join(line.strip() for line in (err or out)[-3:] if line.strip())
        what = " ".join(command.split()[:3])
        raise SyncError(f"{host.name}: {what} failed: {last or 'no output'}")
    return out


def read_topology(state: Any, host: Host) -> Topology:
    """The copyable topology as ``host`` (a running node) describes its cluster."""
    export = first_json(_run(state, host, EXPORT))
    if not isinstance(export, dict):
        raise SyncError(f"{host.name}: export_definitions printed no JSON document")
    info: dict[tuple[str, str], dict[str, Any]] = {}
    vhosts = sorted({str(v["name"]) for v in export.get("vhosts") or () if "name" in v})
    for vhost in vhosts:
        command = (
            f"rabbitmqctl -q list_queues -p {shlex.quote(vhost)} name type exclusive "
            "--formatter json"
        )
        rows = first_json(_run(state, host, command))
        info |= parse_queue_info(rows if rows is not None else [], vhost)
    # Only the topology is kept: the export's users and password hashes go no further.
    return parse_topology(export, info)


def read_cluster(state: Any, stack: Stack, hosts: list[Host]) -> tuple[Host, Topology]:
    """The topology from the first node of ``hosts`` that answers; all failing is an error."""
    errors = []
    for host in hosts:
        try:
            return host, read_topology(state, host)
        except SyncError as error:
            errors.append(str(error))
    raise SyncError(f"stack {stack.name}: no RabbitMQ node answers: {'; '.join(errors)}")


def import_plan(state: Any, host: Host, plan: SyncPlan) -> None:
    """Import ``plan``'s objects through ``host`` (a temporary file, removed afterwards)."""
    document = json.dumps(import_document(plan), sort_keys=True)
    encoded = base64.b64encode(document.encode()).decode()
    _run(
        state, host,
        "f=$(mktemp /tmp/plinth-topology.XXXXXX.json) && "
        f"printf %s {encoded} | base64 -d > \"$f\" && chmod 0644 \"$f\" && "
        'rabbitmqctl -q import_definitions "$f"; rc=$?; rm -f "$f"; exit $rc',
    )  # fmt: skip


def _rabbitmq_stacks(env: Environment, stacks: list[Stack]) -> list[tuple[Stack, list[Host]]]:
    return [
        (s, env.hosts_with(Role.RABBITMQ, s.datacenter))
        for s in stacks
        if env.hosts_with(Role.RABBITMQ, s.datacenter)
    ]


def _report(name: str, host: Host, plan: SyncPlan, dry: bool) -> None:
    verb = "would create" if dry else "created"
    click.echo(
        f"{name} (through {host.name}): {verb} {len(plan.create_queues)} queue(s), "
        f"{len(plan.create_exchanges)} exchange(s), {len(plan.create_bindings)} binding(s); "
        f"{plan.present} already present; {len(plan.differs)} differ; "
        f"{len(plan.skipped)} skipped"
    )
    for line in plan.lines():
        click.echo(f"  {line}")
    for line in plan.differs:
        click.echo(f"  ! {line}")
    for line in plan.skipped:
        click.echo(f"  - skipped {line}")


@click.group()
def rabbitmq() -> None:
    """RabbitMQ across datacenters."""


@rabbitmq.command("sync-definitions")
@click.argument("environment", shell_complete=complete_environments)
@click.option("--dry", is_flag=True, help="List what would be created; change nothing.")
@operator_errors
def sync_definitions(environment: str, dry: bool) -> None:
    """Copy the active DC's live queues, exchanges and bindings (never messages) into
    every other DC's RabbitMQ cluster. Idempotent: a second run creates nothing.

    Exit 2 when an object exists in a target with other properties (left unchanged).
    """
    from plinth.remote import connected

    stacks = resolve(environment)
    env = stacks[0].environment
    if len(stacks) != len(env.datacenters):
        raise OperatorError(f"{environment}: name the environment ({env.name}), not one stack")
    clusters = _rabbitmq_stacks(env, stacks)
    active = env.active_site
    source = next(((s, h) for s, h in clusters if s.datacenter == active), None)
    if source is None:
        raise OperatorError(f"{env.name}: the active datacenter {active} has no RabbitMQ nodes")
    targets = [(s, h) for s, h in clusters if s.datacenter != active]
    if not targets:
        click.echo(f"{env.name}: no other datacenter has RabbitMQ; nothing to copy")
        return
    try:
        with ExitStack() as stack:
            # Every DC connected and read before anything is imported anywhere.
            states = {s.name: stack.enter_context(connected(s)) for s, _ in clusters}
            source_host, topology = read_cluster(states[source[0].name], *source)
            click.echo(
                f"{source[0].name} (active, read through {source_host.name}): "
                f"{len(topology.queues)} queue(s), {len(topology.exchanges)} exchange(s), "
                f"{len(topology.bindings)} binding(s) to copy; {len(topology.skipped)} left out"
            )
            for line in topology.skipped:
                click.echo(f"  - left out {line}")
            plans = []
            for target_stack, hosts in targets:
                host, current = read_cluster(states[target_stack.name], target_stack, hosts)
                plans.append((target_stack, host, plan_sync(topology, current)))
            differs = False
            for target_stack, host, plan in plans:
                if plan.created and not dry:
                    import_plan(states[target_stack.name], host, plan)
                    after = plan_sync(topology, read_topology(states[target_stack.name], host))
                    if after.created:
                        raise SyncError(
                            f"stack {target_stack.name}: still missing after the import: "
                            + "; ".join(after.lines())
                        )
                _report(target_stack.name, host, plan, dry)
                differs = differs or bool(plan.differs)
    except SyncError as error:
        raise OperatorError(f"{error}; nothing more was imported") from None
    if differs:
        sys.exit(2)
