"""``plinth import ...``: start an environment file from another tool's inventory."""

from __future__ import annotations

from pathlib import Path

import click

from plinth.cli.core import OperatorError
from plinth.importers.ansible import (
    MAPPING_FILE_EXAMPLE,
    PLACEHOLDER,
    AnsibleImportError,
    ImportMapping,
    add_datacenter_option,
    add_role_option,
    add_subnet_option,
    build_skeleton,
    model_problems,
    read_inventory,
    read_mapping_file,
    render_skeleton,
)
from plinth.stacks import environment_file


@click.group(name="import")
def import_group() -> None:
    """Start an environment file from another tool's inventory of the same hosts."""


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is below it (shorter to read)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _section(title: str, lines: list[str]) -> None:
    if lines:
        click.echo(f"{title}:")
        for line in lines:
            click.echo(f"  {line}")


# "\b" keeps click from re-flowing the example's lines.
@import_group.command("ansible", epilog="A mapping file (--map):\n\n\b\n" + MAPPING_FILE_EXAMPLE)
@click.argument("inventory_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Environment file to write (default: inventory/<name>.yaml).",
)
@click.option("--name", help="Environment name (default: the --out file's name).")
@click.option(
    "--map",
    "map_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file mapping groups to roles and datacenters (see below).",
)
@click.option(
    "--role",
    "role_options",
    multiple=True,
    metavar="GROUP=ROLE[,ROLE]",
    help="Hosts of GROUP (and its child groups) get these roles; repeatable, adds to --map.",
)
@click.option(
    "--dc",
    "dc_options",
    multiple=True,
    metavar="GROUP=DC",
    help="Hosts of GROUP sit in datacenter DC; repeatable, the first DC is the active one.",
)
@click.option(
    "--dc-by-subnet",
    "subnet_options",
    multiple=True,
    metavar="CIDR=DC",
    help="Hosts whose address is in CIDR sit in DC (instead of --dc); repeatable.",
)
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
def import_ansible(
    inventory_file: Path,
    out: Path | None,
    name: str | None,
    map_file: Path | None,
    role_options: tuple[str, ...],
    dc_options: tuple[str, ...],
    subnet_options: tuple[str, ...],
    force: bool,
) -> None:
    """Write a plinth environment skeleton from the Ansible inventory INVENTORY_FILE (INI,
    or YAML with a .yml/.yaml suffix; group_vars/ and host_vars/ beside it are read).

    Hosts keep their names (the `hostname` var, else the inventory name) and addresses
    (`ansible_host`); groups give each host its datacenter and roles. What the inventory
    cannot tell (VIP addresses, VRRP router ids, DNS domains...) is written as DECIDE and
    listed; the model's rules are run with stand-ins for them, so every other problem is
    listed now too. Ansible is not needed.
    """
    if name is None and out is None:
        raise OperatorError("give the environment's --name ENV, or --out inventory/ENV.yaml")
    env_name = name or (out.stem if out is not None else "")
    target = out or _shown(environment_file(env_name))
    if target.exists() and not force:
        raise OperatorError(f"{target} exists: not replaced (pass --force to replace it)")
    try:
        mapping = read_mapping_file(map_file) if map_file else ImportMapping()
        for option in role_options:
            add_role_option(mapping, option)
        for option in dc_options:
            add_datacenter_option(mapping, option)
        for option in subnet_options:
            add_subnet_option(mapping, option)
        inventory = read_inventory(inventory_file)
        skeleton = build_skeleton(inventory, mapping, env_name)
    except AnsibleImportError as error:
        raise OperatorError(f"{error}; nothing was written") from None

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_skeleton(skeleton))
    data = skeleton.data
    datacenters = [dc["name"] for dc in data["datacenters"]]
    click.echo(
        f"wrote {target}: environment {env_name!r}, {len(data['hosts'])} host(s) in "
        f"{len(datacenters)} datacenter(s) ({', '.join(datacenters)}), "
        f"{len(data.get('vips', []))} VIP(s)"
    )
    _section(
        f"still to decide ({len(skeleton.decisions)}, written as {PLACEHOLDER})",
        [f"{d.field} ({d.subject}): {d.what}" for d in skeleton.decisions],
    )
    _section(f"to check ({len(skeleton.checks)})", skeleton.checks)
    _section(f"not imported ({len(skeleton.unmapped)})", skeleton.unmapped)
    problems = model_problems(skeleton)
    if problems:
        _section(
            f"the model's rules, placeholders aside: {len(problems)} problem(s) that filling "
            "them will not solve",
            problems,
        )
    else:
        click.echo("the model's rules, placeholders aside: no problem")
    click.echo(
        "then: export PLINTH_PASSPHRASE (from your vault; it encrypts the CA keys and the "
        "service secrets, which plinth generates itself), "
        f"`plinth validate {target}`, `plinth pki init {env_name}`"
    )
