"""``plinth audit``: every listener of every host against the model, and every TLS listener
probed from the controller (:mod:`plinth.audit`)."""

from __future__ import annotations

import json
import sys

import click

from plinth.cli.completion import complete_stacks
from plinth.cli.core import operator_errors
from plinth.stacks import resolve, state_dir


@click.command()
@click.argument("stack", shell_complete=complete_stacks)
@click.option("--json", "as_json", is_flag=True, help="Findings and probes as JSON (for CI).")
@operator_errors
def audit(stack: str, as_json: bool) -> None:
    """Prove STACK's network statement (or every DC of an environment): each host's
    listening sockets (ss) against the listeners the model declares, and each TLS
    listener dialled from here without a client certificate, with a foreign CA's, offering
    TLS 1.1 and in plaintext, its served certificate checked. Exit 1 on any finding; an
    unreachable host is an error, never a shorter report."""
    # pyinfra's connection machinery (gevent) only when the command runs.
    from facts.sockets import ListeningSockets
    from plinth.audit import listener_findings, render_text, run_probes, to_json
    from plinth.pki import PkiStore
    from plinth.remote import connected, fact_by_host

    stacks = resolve(stack)
    env = stacks[0].environment
    findings = []
    matched = {}
    for current in stacks:
        with connected(current) as state:
            sockets = fact_by_host(state, ListeningSockets)
        for host, host_sockets in sorted(sockets.items()):
            host_findings, pairs = listener_findings(env, host, host_sockets)
            findings.extend(host_findings)
            matched[host] = pairs
    trust = PkiStore(state_dir(env.name)).ca_bundle_pem(intermediates=True)
    probes = run_probes(env, matched, trust)
    findings.extend(f for p in probes for f in p.findings)
    if as_json:
        click.echo(json.dumps(to_json(findings, probes), indent=2))
    else:
        click.echo(render_text(findings, probes), nl=False)
    if findings:
        sys.exit(1)
