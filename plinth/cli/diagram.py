"""``plinth diagram``: the topology of an environment as SVG, draw.io or DOT."""

from __future__ import annotations

from pathlib import Path

import click

from plinth.cli.core import OperatorError, _environment_path, operator_errors
from plinth.diagram_files import FORMATS, SUFFIXES, DiagramError, Format, render
from plinth.model import load_environment


@click.command()
@click.argument("environment")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="svg",
    show_default=True,
    help="svg (drawn by Graphviz's dot), drawio (opens in draw.io), dot (Graphviz source).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write. Default: <environment name>.<format suffix> here; '-' for stdout.",
)
@operator_errors
def diagram(environment: str, fmt: Format, out: Path | None) -> None:
    """Draw ENVIRONMENT (a name under inventory/ or a YAML path) from its model alone:
    sites, hosts by tier, cells, VIPs, flows with ports and TLS, cross-site replication.
    No host is contacted."""
    env = load_environment(_environment_path(environment))
    try:
        text = render(env, fmt)
    except DiagramError as error:
        raise OperatorError(f"{environment}: {error}") from None
    if out is not None and str(out) == "-":
        click.echo(text, nl=False)
        return
    path = out or Path(f"{env.name}{SUFFIXES[fmt]}")
    path.write_text(text)
    click.echo(f"wrote {path}")
