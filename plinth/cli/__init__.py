"""The ``plinth`` command line: validate, preview, up, outputs, flows, firewall, audit,
status, lab, pki, secrets, rabbitmq, dc-switchover."""

from __future__ import annotations

import click

from plinth.cli import (
    audit,
    cluster,
    core,
    diagram,
    firewall,
    flows,
    geo,
    imports,
    lab,
    pki,
    rabbitmq,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
# The installed distribution's version (importlib.metadata), read only when asked:
# pyproject.toml is its one source.
@click.version_option(package_name="plinth", prog_name="plinth", message="%(prog)s %(version)s")
def main() -> None:
    """plinth: a high-security data platform on Debian hosts, deployed with pyinfra."""


core.register(main)
main.add_command(audit.audit)
main.add_command(cluster.status)
main.add_command(cluster.switchover)
main.add_command(geo.dc_switchover)
main.add_command(diagram.diagram)
main.add_command(firewall.firewall)
main.add_command(flows.flows)
main.add_command(lab.lab)
main.add_command(pki.pki)
main.add_command(pki.secrets)
main.add_command(rabbitmq.rabbitmq)
main.add_command(imports.import_group)
