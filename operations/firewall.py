"""The host firewall deploy: nftables with plinth's table, applied with a safety net.

The rules are :func:`plinth.topology.firewall.ruleset` (rendered from the model's network
flows on the controller). They are loaded only when the file differs from what the host
has, or the table is missing, and only like this:

1. the candidate is uploaded beside the live file and checked with ``nft -c -f``; a
   rejected candidate fails the host with nft's message, nothing applied;
2. the table as it is now is saved to a rollback file, and a transient systemd timer
   (``plinth-firewall-rollback``) is armed to load it in 90 s;
3. the candidate is loaded (``nft -f``: one transaction, only ``table inet plinth``);
4. from the controller, a new TCP connection to the host's SSH port must open and
   answer with sshd's banner (the connection plinth already has is "established" and
   proves nothing);
5. only then is the timer stopped and the candidate moved over the live file (which
   ``/etc/nftables.conf`` includes at boot). If the probe fails the host fails, naming
   itself, and the timer restores the previous rules; the live file keeps the previous
   rules too, so a reboot does not bring the bad ones back.

With ``network.firewall: off`` the table and its file are removed if a deploy installed
them; nftables itself stays. This deploy never touches other tables (a container
engine's, Docker's, the operator's) and never flushes the ruleset.
"""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, deploy, operation
from pyinfra.facts.files import Sha1File
from pyinfra.operations import apt, files, systemd

from facts.firewall import ROLLBACK_UNIT, FirewallTable
from plinth.model import Environment, Host
from plinth.reasons import explain_change
from plinth.render import render_template, sha1_text
from plinth.rolling import note, refuse
from plinth.topology.firewall import firewall_enforced, ruleset

RULESET_DIR = "/etc/nftables.d"
RULESET_PATH = f"{RULESET_DIR}/plinth.nft"
CANDIDATE_PATH = f"{RULESET_PATH}.plinth-candidate"
"""Beside the live file, outside ``/etc/nftables.conf``'s ``*.nft`` include."""
ROLLBACK_PATH = "/var/lib/plinth/firewall-rollback.nft"
NFTABLES_CONF = "/etc/nftables.conf"
SERVICE_DROP_IN = "/etc/systemd/system/nftables.service.d/plinth.conf"
ROLLBACK_AFTER_SECONDS = 90
"""Time from arming the rollback to its firing: the apply and the probe take seconds."""
PROBE_TIMEOUT_SECONDS = 5
PROBE_ATTEMPTS = 3


@dataclass(frozen=True)
class FirewallInput:
    """The slice of the model the firewall deploy reads."""

    host: str
    ruleset: str | None = field(repr=False)
    """The rendered nftables file; None: ``network.firewall: off``. Left out of the repr:
    pyinfra prints the probe's arguments in its logs."""
    ssh_address: str
    """What the controller dials for SSH (``ssh_address`` or the host's address)."""
    ssh_port: int


def firewall_input(env: Environment, host_model: Host) -> FirewallInput:
    return FirewallInput(
        host=host_model.name,
        ruleset=ruleset(env, host_model.name) if firewall_enforced(env) else None,
        ssh_address=host_model.ssh_address or str(host_model.address),
        ssh_port=env.ssh.port,
    )


def ssh_answers(address: str, port: int, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when a new TCP connection to ``address:port`` opens and sshd greets it
    (``SSH-...``); else what went wrong."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            banner = conn.recv(64)
    except OSError as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if not banner.startswith(b"SSH-"):
        return f"no SSH banner (got {banner[:20]!r})"
    return None


def _probe_ssh(state: Any, host: Any, spec: FirewallInput) -> bool:
    """Runs on the controller (a ``FunctionCommand``) right after the new rules loaded.
    The parameters must be called ``state`` and ``host``: pyinfra passes them only then."""
    del state
    problem: str | None = None
    for attempt in range(PROBE_ATTEMPTS):
        problem = ssh_answers(spec.ssh_address, spec.ssh_port)
        if problem is None:
            note(host, f"firewall applied: a new SSH connection to {spec.ssh_address} opens")
            return True
        if attempt + 1 < PROBE_ATTEMPTS:
            time.sleep(1)
    return refuse(
        host,
        f"{spec.host}: the new firewall rules cut SSH: a new connection from the controller "
        f"to {spec.ssh_address}:{spec.ssh_port} failed ({problem}); the rollback timer "
        f"{ROLLBACK_UNIT} restores the previous rules within {ROLLBACK_AFTER_SECONDS} s of the "
        f"apply, {RULESET_PATH} was not replaced, the rejected rules are in {CANDIDATE_PATH}. "
        "Check network.controllers (the controller's address as the host sees it)",
    )


def _fail_if(condition: str, message: str, cleanup: str = "") -> str:
    """Shell: when ``condition`` (a command) fails, run ``cleanup``, print ``message`` and
    nft's words to stderr, exit 1."""
    return (
        f"if ! out=$({condition} 2>&1); then {cleanup}"
        f'echo {shlex.quote(message)}": $out" >&2; exit 1; fi'
    )


@operation()
def firewall_rules(spec: FirewallInput) -> Generator[Any, None, None]:
    """plinth's nftables table on the host, loaded safely (see the module docstring).

    + spec: the host's rendered ruleset (None: remove plinth's table and file)

    Touches only ``table inet plinth``, its file and the rollback unit.
    """
    live_sha = host.get_fact(Sha1File, path=RULESET_PATH)
    table = host.get_fact(FirewallTable)
    if spec.ruleset is None:
        if live_sha is None and not table.loaded:
            host.noop("no plinth firewall (network.firewall: off)")
            return
        explain_change("network.firewall: off: remove plinth's table")
        yield StringCommand(
            f"nft delete table inet plinth 2>/dev/null || true; rm -f {RULESET_PATH}"
        )
        return
    if live_sha == sha1_text(spec.ruleset) and table.loaded:
        host.noop(f"{RULESET_PATH} already loaded")
        return
    if table.rollback_pending:
        # An earlier apply failed its probe moments ago: its rollback must land first,
        # or this apply would save the rejected rules as the ones to go back to.
        yield StringCommand(
            f"echo '{spec.host}: a firewall rollback ({ROLLBACK_UNIT}) is still pending from an "
            "earlier apply; nothing changed; deploy again when it has run' >&2; exit 1"
        )
        return
    explain_change(
        f"{RULESET_PATH}: "
        + ("content differs" if live_sha else "missing")
        + ("" if table.loaded else "; table inet plinth not loaded")
    )
    candidate = shlex.quote(CANDIDATE_PATH)
    yield StringCommand(f"mkdir -p {RULESET_DIR} {shlex.quote(ROLLBACK_PATH.rsplit('/', 1)[0])}")
    yield FileUploadCommand(StringIO(spec.ruleset), CANDIDATE_PATH)
    yield StringCommand(
        _fail_if(
            f"nft -c -f {candidate}",
            f"{spec.host}: nft refused the firewall rules; nothing applied",
            f"rm -f {candidate}; ",
        )
    )
    # The table as loaded now, behind a create-then-delete that makes loading it replace
    # whatever is there; with no table loaded, loading it removes ours.
    rollback = shlex.quote(ROLLBACK_PATH)
    yield StringCommand(
        "{ printf 'table inet plinth\\ndelete table inet plinth\\n'; "
        f"nft list table inet plinth 2>/dev/null || true; }} > {rollback}"
    )
    yield StringCommand(
        f"systemctl reset-failed {ROLLBACK_UNIT}.timer {ROLLBACK_UNIT}.service "
        ">/dev/null 2>&1 || true"
    )
    yield StringCommand(
        f"systemd-run --quiet --on-active={ROLLBACK_AFTER_SECONDS} --unit {ROLLBACK_UNIT} "
        f"--description 'plinth: restore the firewall rules of before the last apply' "
        f"/usr/sbin/nft -f {rollback}"
    )
    yield StringCommand(
        _fail_if(
            f"nft -f {candidate}",
            f"{spec.host}: nft could not load the firewall rules; nothing applied",
            f"systemctl stop {ROLLBACK_UNIT}.timer; rm -f {candidate}; ",
        )
    )
    yield FunctionCommand(_probe_ssh, (spec,), {})
    yield StringCommand(f"systemctl stop {ROLLBACK_UNIT}.timer")
    yield StringCommand("mv", "-f", CANDIDATE_PATH, RULESET_PATH)


@deploy("Host firewall")
def host_firewall(spec: FirewallInput) -> None:
    """nftables with plinth's table, persistent across reboots (``nftables.service``
    loads ``/etc/nftables.conf``, which includes ``/etc/nftables.d/*.nft``)."""
    if spec.ruleset is None:
        firewall_rules(name="No plinth firewall (network.firewall: off)", spec=spec)
        return
    apt.packages(name="nftables", packages=["nftables"])
    files.put(
        name="nftables.conf includes /etc/nftables.d (no flush ruleset)",
        src=StringIO(
            render_template(
                "firewall/etc/nftables.conf.j2",
                ruleset_path=RULESET_PATH,
                include_glob=f"{RULESET_DIR}/*.nft",
            )
        ),
        dest=NFTABLES_CONF,
        mode="755",
    )
    drop_in = files.put(
        name="nftables.service stops by removing plinth's table only",
        src=StringIO(
            render_template("firewall/etc/systemd/system/nftables.service.d/plinth.conf.j2")
        ),
        dest=SERVICE_DROP_IN,
        mode="644",
        create_remote_dir=True,
    )
    systemd.daemon_reload(name="Reload systemd units (nftables drop-in)", _if=drop_in.did_change)
    firewall_rules(name="Firewall rules (checked, applied with a rollback net)", spec=spec)
    # Enabled for the next boot, not started now: starting would load the file outside
    # the rollback net, and the rules are already loaded.
    systemd.service(
        name="nftables enabled at boot", service="nftables.service", running=None, enabled=True
    )
