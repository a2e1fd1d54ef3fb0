"""``plinth lab ...``: the containerised test inventory (owned by plinth.lab).

Heavy imports (docker, paramiko) happen inside the commands so ``plinth --help`` and the
other command groups stay fast and work without them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import click

from plinth import progress
from plinth.cli.options import progress_option


class LabCommandError(click.ClickException):
    """A LabError, shown as one ``error: ...`` line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", file=file or sys.stderr)


@contextmanager
def _lab_errors() -> Iterator[None]:
    from plinth.lab import LabError

    try:
        yield
    except LabError as error:
        raise LabCommandError(str(error).splitlines()[0] if str(error) else "lab failed") from None


@contextmanager
def _lab_exclusive() -> Iterator[None]:
    """One command that changes the lab at a time: two restores (or a restore and a
    `lab down`) interleaved remove each other's containers and leave a lab neither made."""
    import fcntl
    import os

    from plinth.lab import lab_dir

    lab_dir().mkdir(parents=True, exist_ok=True)
    with open(lab_dir() / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise LabCommandError(
                f"another lab command is running ({holder}); wait for it or end that process"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: plinth {' '.join(sys.argv[1:])}\n")
        lock.flush()
        yield


PROGRESS_OPTION = progress_option("the phases, each container, what each host's boot waits for")


def _progress(mode: str) -> AbstractContextManager[None]:
    """Show the lab's progress events on stderr while the block runs (as `plinth up`)."""
    return progress.reporting(progress.make_view(mode), progress.RunStatus("lab"))


def _dc_pair(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.argument("dc_b")(func)
    return click.argument("dc_a")(func)


@click.group()
def lab() -> None:
    """The lab: the platform on local systemd containers reached over SSH."""


@lab.command()
@click.option(
    "--profile",
    type=click.Choice(["small", "full"]),
    default="small",
    show_default=True,
    help="small: one DC, 3 all-roles nodes; full: two DCs, separate tiers, a router.",
)
@click.option(
    "--isolated/--connected",
    default=None,
    help="isolated: DC networks internal (no route out, like an OT network), only the "
    "squid hosts reach the outside, everything else installs through squid. "
    "Default: isolated for full, connected for small.",
)
@PROGRESS_OPTION
def up(profile: str, isolated: bool | None, progress_mode: str) -> None:
    """Create a fresh lab (removes any earlier one) and write inventory/lab.yaml."""
    from plinth.lab.containers import lab_up
    from plinth.lab.topology import Profile

    started = time.monotonic()
    with _lab_exclusive(), _lab_errors(), _progress(progress_mode):
        info = lab_up(cast(Profile, profile), isolated=isolated)
    for host in info.hosts:
        failed = f" (failed: {', '.join(host.failed_units)})" if host.failed_units else ""
        click.echo(f"  {host.name:<12} {host.address:<15} {host.system_state}{failed}")
    phases = ", ".join(f"{name} {secs:.1f}s" for name, secs in info.timings.items())
    mode = "isolated" if info.isolated else "connected"
    click.echo(f"lab up ({info.profile}, {mode}) in {time.monotonic() - started:.1f}s: {phases}")
    click.echo(f"environment: {info.env_file}")
    for path in info.inventory_files:
        click.echo(f"inventory:   {path}")
    first = info.hosts[0]
    click.echo(
        "ssh:         ssh -i .lab/ssh/id_ed25519 -o UserKnownHostsFile=.lab/ssh/known_hosts "
        f"root@{first.address}"
    )


@lab.command()
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also remove every snapshot (images and .lab/snapshots). CI uses it.",
)
def down(everything: bool) -> None:
    """Remove the lab's containers, networks and generated inventory.

    Keeps the base image, the controller key (.lab/ssh) and, without --all, the
    snapshots: they exist to come back to a deployed lab without deploying again.
    """
    from plinth.lab.containers import lab_down

    started = time.monotonic()
    with _lab_exclusive(), _lab_errors():
        removed = lab_down(snapshots=everything)
    for item in removed:
        click.echo(f"  removed {item}")
    kept = "base image and .lab/ssh kept" + ("" if everything else ", snapshots kept")
    click.echo(
        f"lab down in {time.monotonic() - started:.1f}s: nothing of the lab remains "
        f"(containers, networks, mounts, inventory{', snapshots' if everything else ''}); {kept}"
    )


@lab.command()
@click.argument("name")
@PROGRESS_OPTION
def snapshot(name: str, progress_mode: str) -> None:
    """Stop the lab cleanly, keep it as snapshot NAME, and bring it back from it.

    The hosts are committed as images (labelled plinth.lab.snapshot=NAME) and the
    controller's side (inventory, PKI and secrets, known_hosts, /etc/hosts files) is kept
    in .lab/snapshots/NAME. An existing snapshot NAME is replaced.
    """
    from plinth.lab.snapshot import take_snapshot

    started = time.monotonic()
    with _lab_exclusive(), _lab_errors(), _progress(progress_mode):
        result = take_snapshot(name)
    phases = ", ".join(f"{phase} {secs:.1f}s" for phase, secs in result.timings.items())
    verb = "replaced" if result.replaced else "taken"
    click.echo(
        f"snapshot {name} {verb} in {time.monotonic() - started:.1f}s "
        f"({len(result.images)} images): {phases}"
    )


@lab.command()
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Restore even if the snapshot was taken at another commit or from another model.",
)
@click.option(
    "--healthy-within",
    type=click.IntRange(0, 3600),
    default=300,
    show_default=True,
    help="Seconds to wait until `plinth status lab` is healthy (a deployed lab); 0: don't.",
)
@PROGRESS_OPTION
def restore(name: str, force: bool, healthy_within: int, progress_mode: str) -> None:
    """Replace the lab that is up (if any) by snapshot NAME: same hosts, addresses, keys;
    then wait until the platform on it is healthy again, as `plinth status lab` sees it."""
    with _lab_exclusive():
        _restore(name, force, healthy_within, progress_mode)


def _restore(name: str, force: bool, healthy_within: int, progress_mode: str) -> None:
    from plinth.lab import ENV_NAME
    from plinth.lab.snapshot import restore_snapshot
    from plinth.stacks import state_dir

    started = time.monotonic()
    with _progress(progress_mode):
        with _lab_errors():
            timings = restore_snapshot(name, force=force)
        # `plinth up` generated the secrets: without them nothing was deployed to wait for.
        if healthy_within and (state_dir(ENV_NAME) / "secrets.json").exists():
            timings["healthy"] = _wait_healthy(name, ENV_NAME, healthy_within)
    phases = ", ".join(f"{phase} {secs:.1f}s" for phase, secs in timings.items())
    click.echo(f"snapshot {name} restored in {time.monotonic() - started:.1f}s: {phases}")


HEALTHY_POLL = 15.0
"""Seconds between two "still waiting" lines while the restored platform gets healthy."""


def _wait_healthy(name: str, env: str, within: int) -> float:
    """Run `plinth status ENV --wait WITHIN` and say on the progress view that the restore
    waits for it; the seconds it took."""
    started = time.monotonic()
    progress.phase_start("healthy", f"waiting up to {within} s for `plinth status {env}`")
    waiting = progress.Waiting("the platform", every=HEALTHY_POLL)
    # A fresh process: pyinfra's gevent must not meet the threads the restore started.
    child = subprocess.Popen(
        [sys.executable, "-m", "plinth", "status", env, "--wait", str(within)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while True:
        waiting.update(f"`plinth status {env}` to say healthy (cold start of every host)")
        try:
            # communicate again after a timeout loses no output (subprocess docs)
            stdout, stderr = child.communicate(timeout=HEALTHY_POLL)
            break
        except subprocess.TimeoutExpired:
            continue
    if child.returncode != 0:
        waiting.end(f"not healthy within {within} s")
        raise LabCommandError(
            f"snapshot {name} restored, but the platform was not healthy within "
            f"{within} s:\n{stdout}{stderr}"
        )
    waiting.end("healthy")
    seconds = time.monotonic() - started
    progress.phase_end("healthy", seconds)
    return seconds


@lab.command()
@click.option(
    "--remove", "remove", metavar="NAME", default=None, help="Remove snapshot NAME instead."
)
def snapshots(remove: str | None) -> None:
    """List snapshots: name, profile, size added, created, commit (+: uncommitted
    changes), model digest."""
    from plinth.lab.engine import ensure_engine
    from plinth.lab.snapshot import format_listing, lab_store, listing, remove_snapshots

    if remove is not None:
        with _lab_exclusive(), _lab_errors():
            removed = remove_snapshots(remove)
        if not removed:
            raise LabCommandError(f"no snapshot {remove!r} (`plinth lab snapshots` lists them)")
        for item in removed:
            click.echo(f"  removed {item}")
        return
    with _lab_errors():
        rows = listing(ensure_engine(start=False), lab_store())
    if not rows:
        click.echo("no snapshot (take one with `plinth lab snapshot NAME`)")
        return
    for line in format_listing(rows):
        click.echo(line)


@lab.command()
def status() -> None:
    """Hosts: container state, address, systemd state; and the inter-DC link."""
    from plinth.lab.containers import lab_status

    with _lab_errors():
        result = lab_status()
    if not result.hosts:
        click.echo("no lab (run `plinth lab up`)")
        return
    click.echo(f"{'HOST':<12} {'DC':<5} {'CONTAINER':<10} {'ADDRESS':<26} {'MEMORY':<14} SYSTEMD")
    for host in result.hosts:
        failed = f" (failed: {', '.join(host.failed_units)})" if host.failed_units else ""
        click.echo(
            f"{host.name:<12} {host.datacenter:<5} {host.state:<10} {host.address:<26} "
            f"{host.memory:<14} {host.system_state}{failed}"
        )
    click.echo(f"link: {result.link}")
    click.echo("memory: working set / limit (cgroup); free(1) inside shows the whole machine")


@lab.command()
@_dc_pair
def partition(dc_a: str, dc_b: str) -> None:
    """Cut the link between two DCs at the router (idempotent)."""
    from plinth.lab.engine import ensure_engine
    from plinth.lab.network import partition as cut

    with _lab_errors():
        click.echo(cut(ensure_engine(start=False), dc_a, dc_b))


@lab.command()
def heal() -> None:
    """Restore the inter-DC link: remove partitions and added latency."""
    from plinth.lab.engine import ensure_engine
    from plinth.lab.network import heal as restore

    with _lab_errors():
        click.echo(restore(ensure_engine(start=False)))


@lab.command()
@_dc_pair
@click.option(
    "--ms", type=click.IntRange(0, 10000), required=True, help="One-way delay; 0 removes."
)
def latency(dc_a: str, dc_b: str, ms: int) -> None:
    """Add a one-way delay between two DCs at the router (tc netem)."""
    from plinth.lab.engine import ensure_engine
    from plinth.lab.network import set_latency

    with _lab_errors():
        click.echo(set_latency(ensure_engine(start=False), dc_a, dc_b, ms))
