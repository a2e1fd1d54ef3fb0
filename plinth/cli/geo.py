"""``plinth dc-switchover ENV --to DC``: the planned move of the active site (issue 14,
docs/geo-redundancy.md). The decisions are :mod:`plinth.geo`'s, the loop
:mod:`plinth.geo.execute`'s; the reading and the steps over SSH are :mod:`plinth.dc`'s,
imported only when the command connects (pyinfra's gevent, as in ``plinth status``).
"""

from __future__ import annotations

import sys

import click

from plinth.cli.completion import complete_environments
from plinth.cli.core import OperatorError, operator_errors
from plinth.geo.decide import Action, Plan, plan_switchover
from plinth.geo.execute import run
from plinth.stacks import Stack, resolve, write_inventory_files


def _sites(environment: str, target: str) -> list[Stack]:
    """Every DC stack of ``environment``, once the command may run on it at all."""
    stacks = resolve(environment)
    env = stacks[0].environment
    if environment != env.name:
        raise OperatorError(
            f"{environment}: name the environment ({env.name}), not one datacenter's stack: "
            f"a DC command reads and changes both sites"
        )
    names = [dc.name for dc in env.datacenters]
    if len(names) < 2:
        raise OperatorError(
            f"{env.name} has one datacenter ({names[0]}): there is no other site to move to"
        )
    if len(names) > 2:
        raise OperatorError(
            f"{env.name} has {len(names)} datacenters: the DC commands handle two sites"
        )
    if target not in names:
        raise OperatorError(f"--to {target}: not a datacenter of {env.name} ({', '.join(names)})")
    return stacks


@click.command("dc-switchover")
@click.argument("environment", shell_complete=complete_environments)
@click.option("--to", "target", required=True, help="The datacenter to make active.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before the first step.")
@click.option("--dry", is_flag=True, help="Print the plan and exit; change nothing.")
@operator_errors
def dc_switchover(environment: str, target: str, yes: bool, dry: bool) -> None:
    """Planned move of ENVIRONMENT's active site to the datacenter --to, both sites up:
    writes stop at the active site (Airflow, PostgreSQL demoted to a standby cluster of
    the target, Redis paused), the target is promoted once it holds every byte, Airflow
    starts there, inventory/ENVIRONMENT.yaml is rewritten to name it (commit that line)
    and both sites are converged.

    Reads both sites, performs the plan's first step, reads again and plans again until
    nothing is left: run it again after an interruption and it resumes; run it when the
    target is already active and followed and it says so and does nothing (exit 0).
    Exit 1 on a refusal or a step that did not complete, with what the run already did.
    """
    stacks = _sites(environment, target)
    write_inventory_files(stacks[0].environment, stacks[0].environment_file)
    from plinth.dc.actions import HostExecutor
    from plinth.dc.live import LiveSites

    def confirm(plan: Plan) -> bool:
        return click.confirm(f"Perform these {len(plan.steps)} step(s), one at a time?")

    with LiveSites(stacks, target) as live:
        outcome = run(
            lambda observed: plan_switchover(observed, target),
            HostExecutor(live, click.echo),
            click.echo,
            dry=dry,
            confirm=None if yes else confirm,
        )
    if any(line.startswith(f"{target}: {Action.WRITE_MODEL.value}") for line in outcome.done):
        path = stacks[0].environment_file
        click.echo(
            f"commit {path}: it names {target} active now; a checkout that still names the "
            f"old site is stale"
        )
    sys.exit(outcome.exit_code)
