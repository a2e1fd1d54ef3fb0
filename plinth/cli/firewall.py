"""``plinth firewall``: a host's nftables rules as the deploy would load them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import click

from plinth.cli.completion import complete_environments
from plinth.cli.core import OperatorError, _environment_path, operator_errors
from plinth.model import load_environment
from plinth.topology.firewall import firewall_enforced, ruleset

NFT_CHECK_TIMEOUT_SECONDS = 30


def nft_check(text: str) -> str | None:
    """None when ``nft -c -f`` accepts ``text`` on this machine, else nft's words.
    Needs ``nft`` and the privilege to talk to the kernel's nftables (root)."""
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        raise OperatorError("--check needs nft on this machine: apt-get install nftables")
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as candidate:
        candidate.write(text)
        candidate.flush()
        done = subprocess.run(
            [nft, "-c", "-f", candidate.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=NFT_CHECK_TIMEOUT_SECONDS,
        )
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"nft exited {done.returncode}"
    return None


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@click.option("--host", "host_name", required=True, help="The host whose rules to print.")
@click.option(
    "--check", is_flag=True, help="Also have nft on this machine check them (nft -c; root)."
)
@operator_errors
def firewall(environment: str, host_name: str, check: bool) -> None:
    """The host firewall of HOST in ENVIRONMENT (a name under inventory/ or a YAML path):
    the nftables file the deploy loads there (table inet plinth), one rule per network
    flow with its reason. Derived from the model alone; no host is contacted."""
    env = load_environment(_environment_path(environment))
    if host_name not in {h.name for h in env.hosts}:
        raise OperatorError(
            f"--host {host_name}: not a host of {env.name} ({', '.join(h.name for h in env.hosts)})"
        )
    text = ruleset(env, host_name)
    if not firewall_enforced(env):
        click.echo(
            f"# network.firewall is off in {env.name}: nothing is loaded; with enforce, this is",
            err=True,
        )
    click.echo(text, nl=False)
    if check:
        problem = nft_check(text)
        if problem is not None:
            raise OperatorError(f"{host_name}: nft refused the rules: {problem}")
        click.echo(f"# nft -c: the rules of {host_name} are valid", err=True)
