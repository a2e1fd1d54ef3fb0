"""``plinth flows``: what can talk to what, from the model alone."""

from __future__ import annotations

import json

import click

from plinth.cli.completion import complete_environments
from plinth.cli.core import OperatorError, _environment_path, operator_errors
from plinth.model import load_environment
from plinth.topology import flows as flows_module


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@click.option("--dc", "datacenter", default=None, help="Only this datacenter's hosts.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable flows (for CI).")
@operator_errors
def flows(environment: str, datacenter: str | None, as_json: bool) -> None:
    """Every allowed network flow of ENVIRONMENT (a name under inventory/ or a YAML path):
    per host, each listener the deploy creates with who may reach it and why, then each
    host's egress. Derived from the model alone; no host is contacted."""
    env = load_environment(_environment_path(environment))
    if datacenter is not None and datacenter not in env.datacenters_by_name:
        raise OperatorError(
            f"--dc {datacenter}: not a datacenter of {env.name} "
            f"({', '.join(env.datacenters_by_name)})"
        )
    data = flows_module.to_json(env, datacenter)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(flows_module.render_text(data), nl=False)
