"""``plinth status`` and ``plinth switchover``: each DC's cells and edge, live (the
reading, judging and printing is :mod:`plinth.status`).

pyinfra's connection machinery (gevent) is imported only when a command runs, as in
``plinth pki status``: importing it with the CLI would monkey-patch every command.
"""

from __future__ import annotations

import json
import sys

import click

from plinth.cli.completion import complete_stacks
from plinth.cli.core import OperatorError, operator_errors
from plinth.stacks import resolve
from plinth.status import (
    Unhealthy,
    collect,
    collect_all,
    healthy,
    host_certificate,
    patroni_api,
    render,
    wait_healthy,
)
from plinth.topology.patroni import unsafe_call


@click.command()
@click.argument("stack", shell_complete=complete_stacks)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.IntRange(0, 3600),
    default=0,
    help="Poll until everything is healthy, up to this many seconds (after a restart).",
)
@operator_errors
def status(stack: str, as_json: bool, wait_seconds: int) -> None:
    """etcd, Patroni, Redis, RabbitMQ, edge and VIP state of STACK (or every DC of an
    environment). Exit 1 unless everything is healthy."""
    if wait_seconds:
        try:
            results = wait_healthy(stack, wait_seconds)
        except Unhealthy as unhealthy:
            results = unhealthy.results
    else:
        results = collect_all(resolve(stack))
    if as_json:
        click.echo(json.dumps({"stacks": results}, indent=2))
    else:
        click.echo("\n".join(render(r) for r in results))
    if not all(healthy(r) for r in results):
        sys.exit(1)


@click.command()
@click.argument("stack", shell_complete=complete_stacks)
@click.option("--candidate", default=None, help="Member to promote (default: Patroni picks).")
@operator_errors
def switchover(stack: str, candidate: str | None) -> None:
    """Planned switchover of STACK's Patroni cluster (refused unless the cluster is healthy)."""
    stacks = resolve(stack)
    if len(stacks) != 1:
        raise OperatorError(
            f"{stack}: name one datacenter's stack ({', '.join(s.name for s in stacks)})"
        )
    current = stacks[0]
    env = current.environment
    data = collect(current)
    patroni = data["patroni"]
    if patroni is None or patroni["leader"] is None:
        raise OperatorError(f"stack {current.name}: no Patroni leader answers")
    if patroni["problems"]:
        raise OperatorError(
            f"stack {current.name}: switchover refused: {'; '.join(patroni['problems'])}"
        )
    leader = patroni["leader"]
    names = [m["name"] for m in patroni["members"]]
    if candidate is not None and (candidate not in names or candidate == leader):
        raise OperatorError(f"--candidate {candidate}: not a replica of {patroni['scope']}")
    host = next(h for h in env.hosts if h.name == leader)
    tls = host_certificate(env, host, "patroni")
    body = {"leader": leader, **({"candidate": candidate} if candidate else {})}
    # Run as root on the leader: the REST API password comes from its curlrc.
    command = unsafe_call(
        tls, "POST", patroni_api(env, host) + "/switchover", body, "-w '\\n%{http_code}'"
    )
    from pyinfra.api import StringCommand

    from plinth.remote import connected

    with connected(current) as state:
        target = state.inventory.get_host(leader)
        ok, output = target.run_shell_command(StringCommand(command))
    lines = output.stdout_lines
    code = lines[-1] if lines else "?"
    # curl's own error (a leader not deployed with the REST API password yet: its
    # curlrc is missing, exit 26) is on stderr, with no status line.
    message = " ".join(lines[:-1]) or " ".join(output.stderr_lines)
    if not ok or code != "200":
        raise OperatorError(f"stack {current.name}: switchover refused ({code}): {message}")
    click.echo(f"stack {current.name}: {message}")
    after = collect(current)["patroni"]
    click.echo(f"leader now: {after['leader'] if after else '?'}")
