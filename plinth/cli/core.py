"""Core commands: validate, inventory, preview, up, outputs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from plinth import outputs as outputs_module
from plinth import plan as plan_module
from plinth import progress
from plinth.at_rest import weak_protection
from plinth.cli.completion import complete_environments, complete_stacks
from plinth.cli.options import progress_option
from plinth.model import ModelError, load_environment
from plinth.passphrase import PassphraseMissing, WeakPassphrase
from plinth.pki import PkiError, PkiStore, crl_warnings
from plinth.provision import ensure_pki, ensure_secrets, refresh_due_crls, short_secrets
from plinth.secrets import SecretsError
from plinth.stacks import (
    Stack,
    StackError,
    environment_file,
    resolve,
    state_dir,
    write_inventory_files,
)
from plinth.versions import HostReading, UnreadHost, build_report

P = ParamSpec("P")
R = TypeVar("R")


class OperatorError(click.ClickException):
    """A one-line error for the operator, exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def operator_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors an operator can cause into clear messages, never tracebacks."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ModelError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except (
            StackError,
            plan_module.PlanError,
            PkiError,
            SecretsError,
            PassphraseMissing,
            WeakPassphrase,
        ) as error:
            raise OperatorError(str(error)) from None

    return wrapper


def _environment_path(target: str) -> Path:
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return environment_file(target)


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def validate(environment: str) -> None:
    """Check ENVIRONMENT (a name under inventory/ or a YAML path) without connecting anywhere.

    Every problem is listed with the file and field path; exit code 1 if any.
    """
    path = _environment_path(environment)
    env = load_environment(path)
    click.echo(
        f"ok: {path}: environment {env.name!r}, {len(env.datacenters)} datacenter(s), "
        f"{len(env.hosts)} host(s), {len(env.vips)} VIP(s); stacks: {', '.join(env.stack_names())}"
    )


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def inventory(environment: str) -> None:
    """Write the pyinfra inventory files (inventory/<env>-<dc>.py) of ENVIRONMENT."""
    path = _environment_path(environment)
    env = load_environment(path)
    for written in write_inventory_files(env, path):
        click.echo(f"wrote {written}")


def _plan_lines(plan: plan_module.StackPlan) -> str:
    lines = [f"stack {plan.stack}: {plan.change_count} change(s) ({plan.seconds:.1f} s)"]
    for host in plan.hosts:
        ops = plan.changes.get(host, [])
        # _if operations (restart after a change...) only run when what they follow
        # changes: a host with nothing else pending has no changes.
        if not ops or all(op.conditional for op in ops):
            lines.append(f"  {host}: no changes")
            continue
        lines.append(f"  {host}:")
        for op in ops:
            marker = "?" if op.conditional else "~"
            suffix = " (decided at apply time)" if op.conditional else ""
            lines.append(f"    {marker} {op.name}{suffix}")
            lines.extend(f"        reason: {reason}" for reason in op.reasons)
    return "\n".join(lines) + "\n"


def _print_plan(plan: plan_module.StackPlan) -> None:
    click.echo(_plan_lines(plan), nl=False)


PROGRESS_OPTION = progress_option("each operation while pyinfra runs, and what a roll waits for")


def _print_applied(stack: str, result: plan_module.ApplyResult, preview_skipped: bool) -> None:
    changed = sum(len(v) for v in result.changed.values())
    if preview_skipped:
        # No plan was shown: what changed is the only record the operator gets.
        for host, names in sorted(result.changed.items()):
            click.echo(f"  {host}:")
            for name in names:
                click.echo(f"    ~ {name}")
    click.echo(
        f"stack {stack}: applied, {changed} operation(s) changed a host "
        f"({result.seconds:.1f} s{', preview skipped' if preview_skipped else ''})"
    )


def _stacks(target: str, *, refresh_crls: bool = False) -> list[Stack]:
    """Resolve, write the inventories, and prepare the controller side (lab PKI; with
    ``refresh_crls``, for ``up``, the CRLs that are due)."""
    stacks = resolve(target)
    env = stacks[0].environment
    write_inventory_files(env, stacks[0].environment_file)
    for created in ensure_pki(env):
        click.echo(f"pki: created {created}", err=True)
    if refresh_crls:
        due = refresh_due_crls(env)
        for path in due.refreshed:
            click.echo(f"pki: re-signed {path} (inside its warning window): commit it", err=True)
        for warning in due.warnings:
            click.echo(f"warning: {warning}", err=True)
    else:
        for warning in crl_warnings(PkiStore(state_dir(env.name))):
            click.echo(f"warning: {warning}", err=True)
    for warning in weak_protection(state_dir(env.name), env.name):
        click.echo(f"warning: {warning}", err=True)
    return stacks


@click.command()
@click.argument("stack", shell_complete=complete_stacks)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (for CI).")
@click.option(
    "--expect-no-changes",
    is_flag=True,
    help="Exit 2 when anything would change (a drift check).",
)
@click.option(
    "--summary",
    "summary_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the readable plan to this file (with --json: a CI artifact beside it).",
)
@operator_errors
def preview(stack: str, as_json: bool, expect_no_changes: bool, summary_path: Path | None) -> None:
    """Show what `up` would change on STACK (an environment or <env>-<dc>), host by host."""
    plans = [plan_module.preview(s) for s in _stacks(stack)]
    if summary_path is not None:
        # One pass over the hosts gives both forms: CI keeps the JSON for machines and
        # this text for the people reviewing a merge request.
        summary_path.write_text("".join(_plan_lines(plan) for plan in plans))
    if as_json:
        click.echo(json.dumps({"stacks": [p.as_json() for p in plans]}, indent=2))
    else:
        for plan in plans:
            _print_plan(plan)
    if expect_no_changes and any(p.change_count for p in plans):
        if not as_json:
            click.echo("drift: changes pending (--expect-no-changes)", err=True)
        sys.exit(2)


@click.command()
@click.argument("stack", shell_complete=complete_stacks)
@click.option("--yes", "-y", is_flag=True, help="Apply without asking for confirmation.")
@click.option(
    "--skip-preview",
    is_flag=True,
    help="Apply without computing the plan first (needs --yes); what changed is listed after.",
)
@PROGRESS_OPTION
@operator_errors
def up(stack: str, yes: bool, skip_preview: bool, progress_mode: str) -> None:
    """Preview, confirm and apply STACK (an environment means each of its DCs in turn).

    --skip-preview (Pulumi's flag) saves the preview's own pass over every host's facts,
    about a minute on three hosts: every safety gate (quorum, replication, refusals of a
    roll) is decided while applying, from live state, so the preview adds information,
    not protection. It is refused without --yes: there would be nothing to confirm.
    """
    if skip_preview and not yes:
        raise OperatorError(
            "--skip-preview applies without showing a plan to confirm: pass --yes as well"
        )
    view = progress.make_view(progress_mode)
    stacks = _stacks(stack, refresh_crls=True)
    for name in ensure_secrets(stacks[0].environment):
        click.echo(f"secrets: generated {name}", err=True)
    for warning in short_secrets(stacks[0].environment):
        click.echo(f"warning: {warning}", err=True)
    for current in stacks:
        if skip_preview:
            result = plan_module.apply(current, view=view)
            _print_applied(current.name, result, preview_skipped=True)
            continue
        plan = plan_module.preview(current, view=view)
        _print_plan(plan)
        # Conditional operations follow a change of an earlier one (restart after a
        # config change): with no unconditional change, none of them can run.
        if plan.change_count == 0:
            click.echo(f"stack {current.name}: nothing to do")
            continue
        if not yes and not click.confirm(f"Apply these changes to {current.name}?"):
            raise OperatorError(f"stack {current.name}: not applied (declined)")
        result = plan_module.apply(current, view=view)
        _print_applied(current.name, result, preview_skipped=False)
    env = stacks[0].environment
    click.echo("")
    click.echo(outputs_module.render_text(outputs_module.collect(env, stacks[0].environment_file)))


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable outputs.")
@operator_errors
def outputs(environment: str, as_json: bool) -> None:
    """The endpoints an application needs, per datacenter."""
    path = _environment_path(environment)
    env = load_environment(path)
    data = outputs_module.collect(env, path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(outputs_module.render_text(data))


@click.command()
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def wheelhouse(environment: str) -> None:
    """Build (or find) the Airflow wheelhouse ENVIRONMENT's model asks for.

    `plinth up` builds it when missing; a pipeline can build it in an earlier stage.
    """
    import time

    from plinth.wheelhouse import WheelhouseError, airflow_wheelhouse

    env = load_environment(_environment_path(environment))
    started = time.monotonic()
    try:
        built = airflow_wheelhouse(env)
    except WheelhouseError as error:
        raise OperatorError(f"{environment}: {error}") from None
    size = built.tarball.stat().st_size / 2**20
    click.echo(
        f"{built.requirement}: {len(built.lock)} wheels, {size:.0f} MiB, sha256 {built.sha256}"
        f" ({built.tarball}, {time.monotonic() - started:.1f} s)"
    )


def _read_versions(stack: Stack) -> dict[str, HostReading]:
    """Every host of ``stack``: its Debian packages and its wheelhouse daemons' releases.
    A host that cannot be connected to or read is an error naming it."""
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.facts.deb import DebPackages

    from facts.versions import WHEELHOUSE_VENVS, WheelhouseReleases
    from plinth.remote import connected, fact_by_host

    venvs = tuple((daemon, *where) for daemon, where in WHEELHOUSE_VENVS.items())
    names = [h.name for h in stack.environment.hosts_in(stack.datacenter)]
    with connected(stack) as state:
        try:
            packages = fact_by_host(state, DebPackages)
            wheelhouse = fact_by_host(state, WheelhouseReleases, venvs=venvs)
        except PyinfraError as error:
            failed = ", ".join(sorted(h.name for h in state.failed_hosts)) or "a host"
            raise OperatorError(f"stack {stack.name}: cannot read {failed}: {error}") from None
        unread = [n for n in names if packages.get(n) is None or wheelhouse.get(n) is None]
        if unread:
            raise OperatorError(f"stack {stack.name}: cannot read {', '.join(unread)}")
    return {n: HostReading(packages[n], wheelhouse[n]) for n in names}


@click.command()
@click.argument("environment", shell_complete=complete_stacks)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@operator_errors
def versions(environment: str, as_json: bool) -> None:
    """What each host of ENVIRONMENT (a name, <env>-<dc> or a YAML path) runs: every
    daemon its roles install, against the Debian release's table and the model's Patroni
    and Airflow releases. Exit 1 when anything differs or is missing."""
    path = Path(environment)
    if path.suffix in (".yaml", ".yml"):
        env = load_environment(path)
        stacks = [Stack(env, path, dc.name) for dc in env.datacenters]
    else:
        stacks = resolve(environment)
    env = stacks[0].environment
    write_inventory_files(env, stacks[0].environment_file)
    readings: dict[str, HostReading] = {}
    for stack in stacks:
        readings |= _read_versions(stack)
    try:
        report = build_report(env, readings, [s.datacenter for s in stacks])
    except UnreadHost as error:
        raise OperatorError(str(error)) from None
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.render())
    sys.exit(report.exit_code)


def register(group: click.Group) -> None:
    """Attach the core commands to the top-level group."""
    for command in (validate, inventory, preview, up, outputs, wheelhouse, versions):
        group.add_command(command)
