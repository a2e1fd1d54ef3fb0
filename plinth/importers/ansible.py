"""Read an Ansible inventory without Ansible and build a plinth environment skeleton from it.

Reading (:func:`read_inventory`) follows what ``ansible-inventory --list`` does with the
INI and YAML inventory plugins:

- INI: ``[group]`` host lines (``host key=value ...``, ``host:port``, ranges such as
  ``db[01:03]`` or ``node-[a:c]``), ``[group:vars]`` and ``[group:children]``; host lines
  before any section are ``ungrouped``; values are Python literals when they parse as one,
  strings otherwise (Ansible's own rule).
- YAML: nested ``hosts`` / ``vars`` / ``children`` mappings under top-level groups.
- ``group_vars/<group>`` and ``host_vars/<host>`` beside the inventory file (a file with
  ``.yml``, ``.yaml``, ``.json`` or no extension, or a directory of them), as Ansible
  reads them; vault-encrypted files are skipped and reported.

Variables combine as Ansible combines them (:meth:`AnsibleInventory.host_variables`):
``all`` first, then the host's groups from the least to the most nested (a child group
overrides its parents; at the same depth ``ansible_group_priority``, then the name
decides), then the host's own variables. A value replaces, never merges.

Building (:func:`build_skeleton`) maps the resolved inventory onto the model: a host's
name (``hostname`` var, else its inventory name), its address (``ansible_host``), its
datacenter (by group or by subnet) and its roles (by a group -> roles mapping). What the
inventory cannot tell (VIP addresses, VRRP router ids, DNS domains...) is written as the
placeholder :data:`PLACEHOLDER` and listed as a :class:`Decision` with the field path
``plinth validate`` will name.
"""

from __future__ import annotations

import ast
import copy
import ipaddress
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from plinth.model import NAME_PATTERN, ModelError, Role, parse_environment

PLACEHOLDER = "DECIDE"
"""Written where the operator must choose a value; it fails validation on purpose."""

# Variables the skeleton reads; any other variable stays in the Ansible inventory.
ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
USER_VARS = ("ansible_user", "ansible_ssh_user")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_become_pass")

DEFAULT_GROUPS = ("all", "ungrouped")


class AnsibleImportError(Exception):
    """The inventory or the mapping cannot be read or used; the message names the file
    and line, or the host, and what to do."""


# ---- reading ----


@dataclass(frozen=True)
class Origin:
    """Where something was declared, for error messages."""

    file: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass
class InventoryGroup:
    name: str
    origin: Origin
    variables: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass
class InventoryHost:
    name: str
    origin: Origin
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnsibleInventory:
    """Groups and hosts as declared; :meth:`host_variables` resolves them."""

    source: Path
    groups: dict[str, InventoryGroup] = field(default_factory=dict)
    hosts: dict[str, InventoryHost] = field(default_factory=dict)
    skipped_files: list[Path] = field(default_factory=list)
    """group_vars/host_vars files that could not be read without Ansible (vault)."""

    def group(self, name: str, origin: Origin) -> InventoryGroup:
        if name not in self.groups:
            self.groups[name] = InventoryGroup(name, origin)
        return self.groups[name]

    def add_host(
        self, group: InventoryGroup, name: str, variables: dict[str, Any], origin: Origin
    ) -> None:
        host = self.hosts.setdefault(name, InventoryHost(name, origin))
        # A host declared again (in another group) adds to its variables, as in Ansible.
        host.variables.update(variables)
        if name not in group.hosts:
            group.hosts.append(name)

    def parents(self) -> dict[str, list[str]]:
        parents: dict[str, list[str]] = {name: [] for name in self.groups}
        for group in self.groups.values():
            for child in group.children:
                parents[child].append(group.name)
        return parents

    def ancestors(self, group: str) -> list[str]:
        """``group`` and every group above it."""
        parents = self.parents()
        found, pending = [group], [group]
        while pending:
            for parent in parents[pending.pop()]:
                if parent not in found:
                    found.append(parent)
                    pending.append(parent)
        return found

    def depths(self) -> dict[str, int]:
        """Nesting depth of every group: ``all`` 0, a top-level group 1, its children 2...
        A cycle in ``children`` is an error naming the groups in it."""
        parents = self.parents()
        depths: dict[str, int] = {"all": 0}

        def depth(name: str, seen: tuple[str, ...]) -> int:
            if name in seen:
                cycle = " -> ".join((*seen[seen.index(name) :], name))
                raise AnsibleImportError(
                    f"{self.groups[name].origin}: group {name!r} is its own descendant "
                    f"({cycle}); Ansible refuses such an inventory too"
                )
            if name not in depths:
                above = [p for p in parents[name] if p != "all"]
                depths[name] = 1 + max((depth(p, (*seen, name)) for p in above), default=0)
            return depths[name]

        for name in self.groups:
            depth(name, ())
        return depths

    def members(self, group: str) -> list[str]:
        """Hosts of ``group`` and of its descendants, in declaration order."""
        if group == "all":
            return list(self.hosts)
        found: dict[str, None] = {}
        pending, seen = [group], set()
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.add(current)
            found.update(dict.fromkeys(self.groups[current].hosts))
            pending.extend(self.groups[current].children)
        return [h for h in self.hosts if h in found]

    def groups_of(self, host: str) -> list[str]:
        """Every group ``host`` belongs to, directly or through a child group, ``all``
        included; in the order Ansible applies their variables."""
        depths = self.depths()
        direct = [g.name for g in self.groups.values() if host in g.hosts]
        parents = self.parents()
        found, pending = {"all"}, list(direct)
        while pending:
            current = pending.pop()
            if current not in found:
                found.add(current)
                pending.extend(parents[current])
        if "ungrouped" in self.groups and not set(found) - {"all", "ungrouped"}:
            found.add("ungrouped")

        def priority(name: str) -> tuple[int, int, str]:
            variables = self.groups[name].variables if name in self.groups else {}
            return depths.get(name, 1), int(variables.get("ansible_group_priority", 1)), name

        return sorted(found, key=priority)

    def host_variables(self, host: str) -> dict[str, Any]:
        """``host``'s variables after Ansible's precedence (see the module docstring)."""
        resolved: dict[str, Any] = {}
        for group in self.groups_of(host):
            if group in self.groups:
                resolved.update(self.groups[group].variables)
        resolved.update(self.hosts[host].variables)
        return resolved


_RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")


def expand_host_range(pattern: str, origin: Origin) -> list[str]:
    """``db[01:03]`` -> db01, db02, db03; ``node-[a:c]``; ``[1:9:2]`` steps by 2."""
    match = _RANGE.search(pattern)
    if match is None:
        if "[" in pattern or "]" in pattern:
            raise AnsibleImportError(
                f"{origin}: {pattern!r} is not a host range (write it as name[01:03] or name[a:c])"
            )
        return [pattern]
    start, end, step_text = match.groups()
    step = int(step_text or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() != end.isdigit():
        raise AnsibleImportError(f"{origin}: {pattern!r} mixes a number and a letter in a range")
    if start.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if width and len(end) != width:
            raise AnsibleImportError(
                f"{origin}: {pattern!r}: a zero-padded range needs ends of the same width"
            )
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    else:
        values = [chr(i) for i in range(ord(start), ord(end) + 1, step)]
    if not values:
        raise AnsibleImportError(f"{origin}: {pattern!r} is an empty range")
    return [
        expanded for value in values for expanded in expand_host_range(head + value + tail, origin)
    ]


_HOST_PORT = re.compile(r"^(?P<host>.+?)(?::(?P<port>[0-9]+))?$")


def _host_pattern(token: str, origin: Origin) -> tuple[list[str], dict[str, Any]]:
    """A host token with an optional ``:port`` (IPv4 and names; a range may hold colons)."""
    match = _HOST_PORT.match(token)
    assert match is not None  # the pattern matches any non-empty token
    variables: dict[str, Any] = {}
    if match["port"] is not None:
        variables["ansible_port"] = int(match["port"])
    return expand_host_range(match["host"], origin), variables


def _ini_value(text: str) -> Any:
    """Ansible's INI rule: a Python literal if it is one, else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


_SECTION = re.compile(r"^\[(?P<group>[^:\]\s]+)(?::(?P<kind>\w+))?\]\s*(?:[#;].*)?$")


def _read_ini(inventory: AnsibleInventory, path: Path, text: str) -> None:
    group = inventory.group("ungrouped", Origin(path))
    kind = "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        origin = Origin(path, number)
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = _SECTION.match(line)
            if section is None:
                raise AnsibleImportError(f"{origin}: {line!r} is not a section header")
            kind = section["kind"] or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise AnsibleImportError(
                    f"{origin}: section type {kind!r} is unknown (hosts, vars or children)"
                )
            group = inventory.group(section["group"], origin)
            continue
        if kind == "vars":
            key, equals, value = line.partition("=")
            if not equals or not key.strip():
                raise AnsibleImportError(
                    f"{origin}: expected key=value in [{group.name}:vars], got {line!r}"
                )
            group.variables[key.strip()] = _ini_value(value.strip())
        elif kind == "children":
            child = line.split()[0]
            inventory.group(child, origin)
            if child not in group.children:
                group.children.append(child)
        else:
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as error:
                raise AnsibleImportError(f"{origin}: cannot split {line!r}: {error}") from None
            if not tokens:
                continue
            names, variables = _host_pattern(tokens[0], origin)
            for token in tokens[1:]:
                key, equals, value = token.partition("=")
                if not equals or not key:
                    raise AnsibleImportError(
                        f"{origin}: expected key=value after host {tokens[0]!r}, got {token!r}"
                    )
                variables[key] = _ini_value(value)
            for name in names:
                inventory.add_host(group, name, dict(variables), origin)


def yaml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every mapping key, by its path of keys: errors can name it."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(*path, key.value)] = key.start_mark.line + 1
                    walk(value, (*path, key.value))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return lines


def _load_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = Origin(path, mark.line + 1 if mark is not None else None)
        raise AnsibleImportError(f"{where}: not valid YAML ({error})") from None


def _read_yaml(inventory: AnsibleInventory, path: Path, text: str) -> None:
    data = _load_yaml(path, text)
    lines = yaml_key_lines(text)

    def origin(*keys: str) -> Origin:
        return Origin(path, lines.get(keys))

    if not isinstance(data, dict):
        raise AnsibleImportError(f"{path}: expected a mapping of groups at the top level")

    def read_group(name: str, body: Any, keys: tuple[str, ...]) -> None:
        group = inventory.group(str(name), origin(*keys))
        if body is None:
            return
        if not isinstance(body, dict):
            raise AnsibleImportError(
                f"{origin(*keys)}: group {name!r} must be a mapping of hosts, vars, children"
            )
        for key in body:
            if key not in ("hosts", "vars", "children"):
                raise AnsibleImportError(
                    f"{origin(*keys, key)}: group {name!r} has {key!r}; a group holds only "
                    "hosts, vars and children"
                )
        for section in ("hosts", "vars", "children"):
            value = body.get(section)
            if value is not None and not isinstance(value, dict):
                raise AnsibleImportError(
                    f"{origin(*keys, section)}: {section} of group {name!r} must be a mapping"
                )
        for pattern, variables in (body.get("hosts") or {}).items():
            where = origin(*keys, "hosts", str(pattern))
            if variables is not None and not isinstance(variables, dict):
                raise AnsibleImportError(
                    f"{where}: variables of host {pattern!r} must be a mapping"
                )
            names, port = _host_pattern(str(pattern), where)
            for host in names:
                inventory.add_host(group, host, {**port, **(variables or {})}, where)
        group.variables.update(body.get("vars") or {})
        for child, child_body in (body.get("children") or {}).items():
            read_group(str(child), child_body, (*keys, "children", str(child)))
            if str(child) not in group.children:
                group.children.append(str(child))

    for name, body in data.items():
        read_group(str(name), body, (str(name),))


def _variable_files(base: Path) -> list[Path]:
    """``group_vars/NAME`` as Ansible finds it: the file with or without an extension, or
    every file of the directory of that name."""
    found = [base.with_name(base.name + ext) for ext in ("", ".yml", ".yaml", ".json")]
    files = [p for p in found if p.is_file()]
    if base.is_dir():
        files += sorted(
            p for p in base.rglob("*") if p.is_file() and p.suffix in ("", ".yml", ".yaml", ".json")
        )
    return files


def _read_variable_dirs(inventory: AnsibleInventory, folder: Path) -> None:
    for kind, owners in (("group_vars", inventory.groups), ("host_vars", inventory.hosts)):
        for name, owner in owners.items():
            for path in _variable_files(folder / kind / name):
                text = path.read_text()
                if text.startswith("$ANSIBLE_VAULT"):
                    inventory.skipped_files.append(path)
                    continue
                data = _load_yaml(path, text)
                if data is None:
                    continue
                if not isinstance(data, dict):
                    raise AnsibleImportError(f"{path}: expected a mapping of variables")
                owner.variables.update(data)


def read_inventory(path: Path) -> AnsibleInventory:
    """Read an INI or YAML (``.yml``/``.yaml``/``.json``) inventory file and the
    group_vars/host_vars beside it."""
    try:
        text = path.read_text()
    except OSError as error:
        raise AnsibleImportError(f"{path}: cannot read ({error.strerror})") from None
    inventory = AnsibleInventory(source=path)
    inventory.group("all", Origin(path))
    if path.suffix in (".yml", ".yaml", ".json"):
        _read_yaml(inventory, path, text)
    else:
        _read_ini(inventory, path, text)
    inventory.group("ungrouped", Origin(path))
    # Every group that is no other group's child hangs under all, as in Ansible.
    children = {c for g in inventory.groups.values() for c in g.children}
    for name in inventory.groups:
        if name != "all" and name not in children and name not in inventory.groups["all"].children:
            inventory.groups["all"].children.append(name)
    # Hosts listed under all itself belong to it directly; they are ungrouped if in no other.
    inventory.depths()  # a cycle is reported now, before anything is built on it
    _read_variable_dirs(inventory, path.parent)
    return inventory


# ---- the mapping ----


@dataclass
class ImportMapping:
    """How inventory groups become plinth roles and datacenters."""

    roles: dict[str, tuple[Role, ...]] = field(default_factory=dict)
    """group -> roles its hosts get (a host gets the roles of all its groups)."""
    datacenter_groups: dict[str, str] = field(default_factory=dict)
    """group -> datacenter of its hosts."""
    datacenter_subnets: dict[ipaddress.IPv4Network, str] = field(default_factory=dict)
    """subnet -> datacenter of the hosts whose address lies in it."""
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, key) -> where it was given (``--role``, ``map.yaml:4``), for error messages."""

    def datacenters(self) -> list[str]:
        """Datacenter names in the order given: the first is the active site."""
        names = [*self.datacenter_groups.values(), *self.datacenter_subnets.values()]
        return list(dict.fromkeys(names))


def _split_assignment(text: str, where: str, shape: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or not value.strip():
        raise AnsibleImportError(f"{where}: expected {shape}, got {text!r}")
    return key.strip(), value.strip()


def parse_roles(text: str, where: str) -> tuple[Role, ...]:
    """``etcd,postgresql`` -> roles; an unknown name is an error listing the known ones."""
    known = {r.value: r for r in Role}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise AnsibleImportError(
            f"{where}: unknown role(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known roles: {', '.join(sorted(known))}"
        )
    return tuple(known[n] for n in names)


def _datacenter_name(name: str, where: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise AnsibleImportError(
            f"{where}: {name!r} is not a datacenter name (lower case letters, digits and "
            "dashes, starting with a letter)"
        )
    return name


def _subnet(text: str, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as error:
        raise AnsibleImportError(f"{where}: {text!r} is not an IPv4 subnet ({error})") from None


def add_role_option(mapping: ImportMapping, text: str, where: str = "--role") -> None:
    group, roles = _split_assignment(text, where, "GROUP=ROLE[,ROLE]")
    mapping.roles[group] = parse_roles(roles, f"{where} {text}")
    mapping.sources[("role", group)] = f"{where} {text}"


def add_datacenter_option(mapping: ImportMapping, text: str, where: str = "--dc") -> None:
    group, name = _split_assignment(text, where, "GROUP=DC")
    mapping.datacenter_groups[group] = _datacenter_name(name, f"{where} {text}")
    mapping.sources[("dc", group)] = f"{where} {text}"


def add_subnet_option(mapping: ImportMapping, text: str, where: str = "--dc-by-subnet") -> None:
    cidr, name = _split_assignment(text, where, "CIDR=DC")
    subnet = _subnet(cidr, f"{where} {text}")
    mapping.datacenter_subnets[subnet] = _datacenter_name(name, f"{where} {text}")
    mapping.sources[("subnet", str(subnet))] = f"{where} {text}"


MAPPING_FILE_EXAMPLE = """\
roles:          # inventory group: plinth role(s)
  etcd_cluster: [etcd]
  postgres_cluster: [postgresql]
  balancers: [haproxy, keepalived]
datacenters:    # inventory group: datacenter (or, instead, subnets: {10.1.0.0/24: dc1})
  site_a: dc1
"""


def read_mapping_file(path: Path) -> ImportMapping:
    """A YAML file with ``roles`` (group: [roles]) and ``datacenters`` (group: dc) or
    ``subnets`` (cidr: dc); see :data:`MAPPING_FILE_EXAMPLE`."""
    try:
        text = path.read_text()
    except OSError as error:
        raise AnsibleImportError(f"{path}: cannot read ({error.strerror})") from None
    data = _load_yaml(path, text)
    lines = yaml_key_lines(text)
    mapping = ImportMapping()
    if not isinstance(data, dict):
        raise AnsibleImportError(f"{path}: expected a mapping with roles, datacenters, subnets")
    for key, section in data.items():
        where = Origin(path, lines.get((str(key),)))
        if key not in ("roles", "datacenters", "subnets"):
            raise AnsibleImportError(
                f"{where}: unknown key {key!r}; a mapping file has roles, datacenters, subnets"
            )
        if not isinstance(section, dict):
            raise AnsibleImportError(f"{where}: {key} must be a mapping")
        for entry, value in section.items():
            at = str(Origin(path, lines.get((str(key), str(entry)))))
            if key == "roles":
                listed = value if isinstance(value, list) else [value]
                add_role_option(mapping, f"{entry}={','.join(map(str, listed))}", at)
            elif key == "datacenters":
                add_datacenter_option(mapping, f"{entry}={value}", at)
            else:
                add_subnet_option(mapping, f"{entry}={value}", at)
    return mapping


# ---- building ----


@dataclass(frozen=True)
class Decision:
    """A placeholder in the skeleton: the operator must choose this value."""

    path: tuple[str | int, ...]
    """Field path in the environment (``("vips", 0, "address")``)."""
    subject: str
    """What it belongs to (a host, a datacenter, a VIP)."""
    what: str
    """What to write there."""
    stand_in: Any
    """A value of the right shape, used only to run the model's rules before the operator
    has decided (never written)."""

    @property
    def field(self) -> str:
        return field_path(self.path)


def field_path(path: Iterable[str | int]) -> str:
    """The path as the model's errors print it: ``vips[0].address``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass
class Skeleton:
    """The environment to write, with what the operator must still do."""

    name: str
    source: Path
    data: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    """Values the importer guessed or could not carry over: review them."""
    unmapped: list[str] = field(default_factory=list)
    """Groups and hosts the mapping did not cover."""

    def filled(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The data with every placeholder replaced: by ``values`` (field path -> value)
        where given, else by the decision's stand-in."""
        data = copy.deepcopy(self.data)
        values = values or {}
        for decision in self.decisions:
            target: Any = data
            for part in decision.path[:-1]:
                target = target[part]
            target[decision.path[-1]] = values.get(decision.field, decision.stand_in)
        return data


@dataclass
class _ImportedHost:
    inventory_name: str
    name: str | None
    address: ipaddress.IPv4Address | None
    ssh_address: str | None
    datacenter: str | None
    roles: tuple[Role, ...]
    variables: dict[str, Any]


def _as_ipv4(value: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        return None


def _host_name(inventory_name: str, variables: dict[str, Any]) -> str | None:
    """Ansible's ``hostname`` var (autobase renames hosts with it), else the inventory name;
    the first label of an FQDN, lower case, ``_`` as ``-``. None for a bare address."""
    candidate = str(variables.get("hostname") or "")
    if not candidate:
        if _as_ipv4(inventory_name) is not None:
            return None
        candidate = inventory_name
    name = candidate.split(".")[0].lower().replace("_", "-")
    return name if re.fullmatch(NAME_PATTERN, name) else None


def _domain_of(inventory_name: str, variables: dict[str, Any]) -> str | None:
    for candidate in (str(variables.get("hostname") or ""), inventory_name):
        if "." in candidate and _as_ipv4(candidate) is None:
            return candidate.split(".", 1)[1].lower()
    return None


def _check_mapping_groups(inventory: AnsibleInventory, mapping: ImportMapping) -> None:
    named = [("role", g) for g in mapping.roles] + [("dc", g) for g in mapping.datacenter_groups]
    known = sorted(set(inventory.groups) - set(DEFAULT_GROUPS))
    for kind, group in named:
        if group not in inventory.groups:
            raise AnsibleImportError(
                f"{mapping.sources[(kind, group)]}: {inventory.source} has no group {group!r}; "
                f"its groups: {', '.join(known) or '(none)'}"
            )


def _datacenter_by_group(
    inventory: AnsibleInventory, mapping: ImportMapping, host: str
) -> str | None:
    groups = set(inventory.groups_of(host))
    found = {g: dc for g, dc in mapping.datacenter_groups.items() if g in groups}
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{g} ({dc})" for g, dc in sorted(found.items()))
        raise AnsibleImportError(
            f"host {host!r} ({inventory.hosts[host].origin}) is in the datacenter groups "
            f"{listed}; a host sits in one datacenter: fix the inventory or the --dc mapping"
        )
    return next(iter(found.values()), None)


def _datacenter_by_subnet(
    mapping: ImportMapping, host: str, address: ipaddress.IPv4Address | None
) -> str | None:
    if address is None:
        return None
    found = {dc for subnet, dc in mapping.datacenter_subnets.items() if address in subnet}
    if len(found) > 1:
        raise AnsibleImportError(
            f"host {host!r}: its address {address} lies in the subnets of datacenters "
            f"{', '.join(sorted(found))}; give subnets that do not overlap"
        )
    return next(iter(found), None)


def _import_host(inventory: AnsibleInventory, mapping: ImportMapping, host: str) -> _ImportedHost:
    variables = inventory.host_variables(host)
    groups = set(inventory.groups_of(host))
    roles = {r for g, rs in mapping.roles.items() if g in groups for r in rs}
    name_address = _as_ipv4(host)
    dialled = next((variables[v] for v in ADDRESS_VARS if variables.get(v)), None)
    dialled_address = _as_ipv4(dialled) if dialled is not None else None
    ssh_address: str | None = None
    if dialled is None:
        address = name_address
    elif dialled_address is None:
        # A DNS name to dial: the controller keeps using it, the model still needs the IP.
        address, ssh_address = name_address, str(dialled)
    elif name_address is not None and name_address != dialled_address:
        # autobase's convention: the inventory name is the address the cluster listens
        # on, ansible_host the (public, NAT) one the controller dials.
        address, ssh_address = name_address, str(dialled_address)
    else:
        address = dialled_address
    if mapping.datacenter_subnets:
        datacenter = _datacenter_by_subnet(mapping, host, address)
    else:
        datacenter = _datacenter_by_group(inventory, mapping, host)
    return _ImportedHost(
        inventory_name=host,
        name=_host_name(host, variables),
        address=address,
        ssh_address=ssh_address,
        datacenter=datacenter,
        roles=tuple(r for r in Role if r in roles),
        variables=variables,
    )


def _enclosing_subnet(addresses: list[ipaddress.IPv4Address]) -> ipaddress.IPv4Network | None:
    """The smallest network of at least /24 holding every address (up to a /16)."""
    for prefix in range(24, 15, -1):
        network = ipaddress.IPv4Network(f"{addresses[0]}/{prefix}", strict=False)
        if all(a in network for a in addresses):
            return network
    return None


def _free_addresses(
    subnet: ipaddress.IPv4Network, used: set[ipaddress.IPv4Address]
) -> Iterator[str]:
    """Addresses of ``subnet`` nobody uses, from the top (where VIPs usually go)."""
    for candidate in reversed(list(subnet.hosts())):
        if candidate not in used:
            used.add(candidate)
            yield str(candidate)


def _uniform(hosts: list[_ImportedHost], names: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The value of the first of ``names`` set on the hosts if all agree, and per host."""
    values = {
        h.inventory_name: next((h.variables[n] for n in names if n in h.variables), None)
        for h in hosts
    }
    distinct = {str(v) for v in values.values()}
    return (next(iter(values.values())) if len(distinct) == 1 else None), values


def build_skeleton(inventory: AnsibleInventory, mapping: ImportMapping, name: str) -> Skeleton:
    """The environment ``name`` as far as ``inventory`` and ``mapping`` tell it.

    Raises :class:`AnsibleImportError` when the mapping names a group the inventory lacks,
    or when a host falls in two datacenters. Everything else the operator must decide is
    a placeholder with its :class:`Decision`.
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise AnsibleImportError(
            f"environment name {name!r}: lower case letters, digits and dashes, starting "
            "with a letter (it names the stacks <name>-<dc>)"
        )
    if not mapping.roles:
        raise AnsibleImportError(
            "no group is mapped to a role: give --role GROUP=ROLE[,ROLE] or --map FILE "
            f"(groups of {inventory.source}: "
            f"{', '.join(sorted(set(inventory.groups) - set(DEFAULT_GROUPS)))})"
        )
    if mapping.datacenter_groups and mapping.datacenter_subnets:
        raise AnsibleImportError(
            "datacenters by group (--dc) and by subnet (--dc-by-subnet) both given: choose one"
        )
    if not mapping.datacenters():
        raise AnsibleImportError(
            "no datacenter is mapped: give --dc GROUP=DC or --dc-by-subnet CIDR=DC (the "
            "first datacenter given is the active one)"
        )
    _check_mapping_groups(inventory, mapping)
    skeleton = Skeleton(name=name, source=inventory.source, data={})
    imported = [_import_host(inventory, mapping, h) for h in inventory.hosts]
    hosts = [h for h in imported if h.roles]
    for left_out in (h for h in imported if not h.roles):
        groups = [g for g in inventory.groups_of(left_out.inventory_name) if g != "all"]
        skeleton.unmapped.append(
            f"host {left_out.inventory_name} (groups: {', '.join(groups) or 'none'}): in no "
            "group mapped to a role, left out"
        )
    if not hosts:
        raise AnsibleImportError(
            f"no host of {inventory.source} is in a group mapped to a role "
            f"({', '.join(sorted(mapping.roles))}): every host would be left out"
        )
    used_groups = set(mapping.roles) | set(mapping.datacenter_groups)
    for group in inventory.groups.values():
        members = inventory.members(group.name)
        # A child of a mapped group (autobase's master and replica under postgres_cluster)
        # is covered by its parent.
        if (
            group.name not in DEFAULT_GROUPS
            and not used_groups & set(inventory.ancestors(group.name))
            and members
        ):
            skeleton.unmapped.append(
                f"group {group.name} ({len(members)} host(s)): mapped to no role and no datacenter"
            )

    datacenter_names = mapping.datacenters()
    order = {dc: i for i, dc in enumerate(datacenter_names)}
    hosts.sort(key=lambda h: order.get(h.datacenter or "", len(order)))
    datacenters = _datacenters(skeleton, mapping, hosts)
    # One set of taken addresses: a stand-in never collides with a host or another stand-in.
    used = {h.address for h in hosts if h.address is not None}
    host_entries = _hosts(skeleton, hosts, datacenters, used)
    vips = _vips(skeleton, hosts, datacenters, used)

    data: dict[str, Any] = {"name": name, "kind": "production"}
    data["datacenters"] = [
        {"name": dc, "subnet": str(subnet) if subnet else PLACEHOLDER, "domain": domain}
        for dc, (subnet, domain) in datacenters.items()
    ]
    data["hosts"] = host_entries
    if vips:
        data["vips"] = vips
    ssh = _ssh(skeleton, hosts)
    if ssh:
        data["ssh"] = ssh
    skeleton.data = data
    _notes(skeleton, inventory, hosts)
    return skeleton


def _datacenters(
    skeleton: Skeleton, mapping: ImportMapping, hosts: list[_ImportedHost]
) -> dict[str, tuple[ipaddress.IPv4Network | None, str]]:
    """Per datacenter: its subnet (None: to decide) and its domain (or the placeholder)."""
    found: dict[str, tuple[ipaddress.IPv4Network | None, str]] = {}
    by_subnet = {dc: net for net, dc in mapping.datacenter_subnets.items()}
    for index, dc in enumerate(mapping.datacenters()):
        members = [h for h in hosts if h.datacenter == dc]
        addresses = [h.address for h in members if h.address is not None]
        subnet = by_subnet.get(dc)
        if subnet is None and addresses:
            subnet = _enclosing_subnet(addresses)
            if subnet is not None:
                skeleton.checks.append(
                    f"datacenters[{index}].subnet: {subnet} is the smallest network (/24 or "
                    f"wider) holding {dc}'s host addresses: write the real subnet of {dc}"
                )
        if subnet is None:
            skeleton.decisions.append(
                Decision(
                    ("datacenters", index, "subnet"),
                    dc,
                    f"the IPv4 subnet of {dc}'s host network (CIDR)",
                    f"10.{200 + index}.0.0/16",
                )
            )
        domains = {_domain_of(h.inventory_name, h.variables) for h in members}
        domain = PLACEHOLDER
        if len(domains) == 1 and None not in domains:
            domain = str(next(iter(domains)))
            skeleton.checks.append(
                f"datacenters[{index}].domain: {domain}, taken from {dc}'s host names"
            )
        else:
            skeleton.decisions.append(
                Decision(
                    ("datacenters", index, "domain"),
                    dc,
                    f"the DNS domain of {dc} (a host's FQDN is <host>.<domain>)",
                    f"{dc}.decide.invalid",
                )
            )
        found[dc] = (subnet, domain)
    return found


def _hosts(
    skeleton: Skeleton,
    hosts: list[_ImportedHost],
    datacenters: dict[str, tuple[ipaddress.IPv4Network | None, str]],
    used: set[ipaddress.IPv4Address],
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for index, host in enumerate(hosts):
        label = host.name or host.inventory_name
        entry: dict[str, Any] = {"name": host.name or PLACEHOLDER}
        if host.name is None:
            skeleton.decisions.append(
                Decision(
                    ("hosts", index, "name"),
                    host.inventory_name,
                    "a host name (no usable hostname var or inventory name)",
                    f"host-{index + 1}",
                )
            )
        entry["address"] = str(host.address) if host.address else PLACEHOLDER
        if host.address is None:
            known = datacenters.get(host.datacenter or "")
            subnet = known[0] if known and known[0] else ipaddress.IPv4Network("10.199.0.0/16")
            skeleton.decisions.append(
                Decision(
                    ("hosts", index, "address"),
                    label,
                    "its IPv4 address (no ansible_host, and the inventory name is not one)",
                    next(_free_addresses(subnet, used)),
                )
            )
        entry["datacenter"] = host.datacenter or PLACEHOLDER
        if host.datacenter is None:
            skeleton.decisions.append(
                Decision(
                    ("hosts", index, "datacenter"),
                    label,
                    f"its datacenter ({', '.join(datacenters) or 'none is mapped yet'})",
                    next(iter(datacenters), None),
                )
            )
        entry["roles"] = [r.value for r in host.roles]
        if host.ssh_address:
            entry["ssh_address"] = host.ssh_address
        entries.append(entry)
    return entries


def _vips(
    skeleton: Skeleton,
    hosts: list[_ImportedHost],
    datacenters: dict[str, tuple[ipaddress.IPv4Network | None, str]],
    used: set[ipaddress.IPv4Address],
) -> list[dict[str, Any]]:
    """A ``pg`` VIP in each DC with PostgreSQL and keepalived hosts; an ``edge`` VIP where
    keepalived hosts and edge services (registry, squid, airflow) meet."""
    vips: list[dict[str, Any]] = []
    for dc, (subnet, _) in datacenters.items():
        members = [h for h in hosts if h.datacenter == dc]

        def has(role: Role, members: list[_ImportedHost] = members) -> bool:
            return any(role in h.roles for h in members)

        if not has(Role.KEEPALIVED):
            if has(Role.POSTGRESQL):
                skeleton.checks.append(
                    f"{dc} has PostgreSQL hosts but no keepalived host: no VIP was written "
                    "for it (clients and other datacenters reach PostgreSQL through one)"
                )
            continue
        wanted: list[tuple[str, list[str]]] = []
        if has(Role.POSTGRESQL):
            wanted.append(("pg", ["postgresql"]))
        edge = [
            service
            for service, role in (
                ("registry", Role.REGISTRY),
                ("airflow", Role.AIRFLOW_API),
                ("squid", Role.SQUID),
            )
            if has(role)
        ]
        if edge:
            wanted.append(("edge", edge))
        free = _free_addresses(subnet or ipaddress.IPv4Network("10.199.0.0/16"), used)
        cluster_vips = {
            str(h.variables["cluster_vip"])
            for h in members
            if Role.KEEPALIVED in h.roles and h.variables.get("cluster_vip")
        }
        for vip_name, services in wanted:
            index = len(vips)
            vip: dict[str, Any] = {"name": vip_name, "datacenter": dc}
            known = next(iter(cluster_vips)) if len(cluster_vips) == 1 else None
            if vip_name == "pg" and known and _as_ipv4(known):
                vip["address"] = known
                skeleton.checks.append(
                    f"vips[{index}].address: {known}, the inventory's cluster_vip for {dc}"
                )
            else:
                vip["address"] = PLACEHOLDER
                where = f"in {subnet}" if subnet else f"in {dc}'s subnet"
                skeleton.decisions.append(
                    Decision(
                        ("vips", index, "address"),
                        f"VIP {vip_name} of {dc}",
                        f"a free address {where}, used by no host",
                        next(free),
                    )
                )
            vip["router_id"] = PLACEHOLDER
            skeleton.decisions.append(
                Decision(
                    ("vips", index, "router_id"),
                    f"VIP {vip_name} of {dc}",
                    f"a VRRP router id 1-255 no other VRRP instance uses on {dc}'s network",
                    50 + len([v for v in vips if v["datacenter"] == dc]) + 1,
                )
            )
            vip["services"] = services
            vips.append(vip)
    return vips


def _ssh(skeleton: Skeleton, hosts: list[_ImportedHost]) -> dict[str, Any]:
    ssh: dict[str, Any] = {}
    for key, names in (("user", USER_VARS), ("port", PORT_VARS), ("key", KEY_VARS)):
        value, per_host = _uniform(hosts, names)
        if value is not None:
            if key == "port":
                try:
                    ssh["port"] = int(value)
                except ValueError:
                    skeleton.checks.append(f"ssh.port: {value!r} from the inventory is no port")
            else:
                ssh[key] = str(value)
        elif any(v is not None for v in per_host.values()):
            listed = ", ".join(f"{h}: {v}" for h, v in per_host.items())
            skeleton.checks.append(
                f"ssh.{key}: the hosts differ ({listed}); plinth has one for the environment"
            )
    if ssh.get("port") == 22:
        del ssh["port"]
    if "key" in ssh:
        skeleton.checks.append(
            f"ssh.key: {ssh['key']} from the inventory; plinth reads it relative to the "
            "environment file"
        )
    return ssh


def _notes(skeleton: Skeleton, inventory: AnsibleInventory, hosts: list[_ImportedHost]) -> None:
    for index, host in enumerate(hosts):
        if host.ssh_address and host.address:
            skeleton.checks.append(
                f"hosts[{index}] ({host.name}): address {host.address} (its inventory name), "
                f"ssh_address {host.ssh_address} (ansible_host)"
            )
        if str(host.variables.get("postgresql_exists", "")).lower() == "true":
            skeleton.checks.append(
                f"hosts[{index}] ({host.name}): postgresql_exists=true: a PostgreSQL already "
                "runs there; plinth bootstraps its own cluster, migrate its data first"
            )
    passwords = sorted({v for h in hosts for v in PASSWORD_VARS if h.variables.get(v)})
    if passwords:
        skeleton.checks.append(
            f"{', '.join(passwords)} not imported: plinth logs in with SSH keys only"
        )
    for path in inventory.skipped_files:
        skeleton.checks.append(f"{path}: vault-encrypted, not read")


def model_problems(skeleton: Skeleton) -> list[str]:
    """What the model's rules say about the skeleton with stand-ins in the placeholders:
    the problems that filling them will not solve."""
    data = skeleton.filled()
    # A host without a datacenter has no stand-in that would not raise problems of its own
    # (its address outside some subnet); such hosts are sorted last, so dropping them
    # leaves the other hosts' indices as written.
    homeless = {d.path[1] for d in skeleton.decisions if d.path[::2] == ("hosts", "datacenter")}
    data["hosts"] = [h for i, h in enumerate(data["hosts"]) if i not in homeless]
    try:
        parse_environment(data, f"inventory/{skeleton.name}.yaml")
    except ModelError as error:
        return error.problems
    return []


def render_skeleton(skeleton: Skeleton) -> str:
    """The environment file: a header saying what remains, then one line per datacenter,
    host and VIP (the shape of inventory/example-prod.yaml)."""

    def flow(item: Any) -> str:
        return str(yaml.safe_dump(item, default_flow_style=True, sort_keys=False, width=10**6))

    lines = [
        f"# Imported from the Ansible inventory {skeleton.source} by `plinth import ansible`.",
    ]
    if skeleton.decisions:
        lines.append(
            f"# Every {PLACEHOLDER} is a value still to choose; `plinth validate "
            f"{skeleton.name}` names each one until it is filled:"
        )
        lines += [f"#   {d.field} ({d.subject}): {d.what}" for d in skeleton.decisions]
    lines.append("")
    data = skeleton.data
    for key, value in data.items():
        if isinstance(value, list):
            if lines[-1]:
                lines.append("")
            lines.append(f"{key}:")
            lines += [f"  - {flow(item).strip()}" for item in value]
            lines.append("")
        else:
            lines.append(yaml.safe_dump({key: value}, sort_keys=False).rstrip())
            if isinstance(value, dict):
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"
