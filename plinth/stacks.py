"""Stacks: what is deployed together.

Each datacenter of an environment is a stack named ``<env>-<dc>``; the bare
environment name means all of its datacenters, one after the other in the
order the environment lists them. Every stack has a pyinfra inventory file,
``inventory/<stack>.py``, whose groups are derived from the model here, so
``pyinfra inventory/<stack>.py deploy.py`` works without the plinth CLI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plinth.model import Environment, Role, load_environment


class StackError(Exception):
    """An unknown stack or environment, with what is known instead."""


def project_root() -> Path:
    """The plinth checkout: ``PLINTH_ROOT``, else the working directory if it holds
    ``deploy.py``, else the checkout this package was imported from."""
    if env_root := os.environ.get("PLINTH_ROOT"):
        return Path(env_root).resolve()
    cwd = Path.cwd()
    if (cwd / "deploy.py").is_file() and (cwd / "inventory").is_dir():
        return cwd
    return Path(__file__).resolve().parents[1]


def inventory_dir() -> Path:
    return project_root() / "inventory"


def environment_file(environment: str) -> Path:
    return inventory_dir() / f"{environment}.yaml"


def state_dir(environment: str) -> Path:
    """Where an environment's PKI, secrets and issuance log live (beside its YAML)."""
    return inventory_dir() / environment


def known_environments() -> list[str]:
    return sorted(p.stem for p in inventory_dir().glob("*.yaml"))


@dataclass(frozen=True)
class Stack:
    """One datacenter of one environment."""

    environment: Environment
    environment_file: Path
    datacenter: str

    @property
    def name(self) -> str:
        return f"{self.environment.name}-{self.datacenter}"

    @property
    def inventory_file(self) -> Path:
        return self.environment_file.parent / f"{self.name}.py"


def resolve(target: str) -> list[Stack]:
    """``lab`` -> every DC stack of ``lab``; ``lab-dc1`` -> that one. Validates the model."""
    candidates = [target]
    if "-" in target:
        candidates.append(target.rsplit("-", 1)[0])
    for env_name in candidates:
        path = environment_file(env_name)
        if not path.is_file():
            continue
        env = load_environment(path)
        if env_name == target:
            return [Stack(env, path, dc.name) for dc in env.datacenters]
        dc_name = target[len(env_name) + 1 :]
        if dc_name in env.datacenters_by_name:
            return [Stack(env, path, dc_name)]
        raise StackError(
            f"unknown stack {target!r}: environment {env_name!r} ({path}) has stacks "
            f"{', '.join(env.stack_names())}"
        )
    raise StackError(
        f"unknown stack or environment {target!r}: no {environment_file(candidates[-1])}; "
        f"known environments: {', '.join(known_environments()) or '(none)'}"
    )


def role_group(role: Role) -> str:
    """pyinfra group name of a role (Python identifiers: group_data/<group>.py works)."""
    return role.value.replace("-", "_")


def pyinfra_groups(inventory_file: str | Path) -> dict[str, Any]:
    """Groups for a pyinfra inventory file named ``<env>-<dc>.py`` beside ``<env>.yaml``.

    ``all`` carries the data every host needs to find its model again; each host
    carries its connection settings; each role is a group of the hosts having it.
    """
    path = Path(inventory_file).resolve()
    stack_name = path.stem
    env_name, _, dc_name = stack_name.rpartition("-")
    env_file = path.parent / f"{env_name}.yaml"
    env = load_environment(env_file)
    if dc_name not in env.datacenters_by_name:
        raise StackError(
            f"{path}: datacenter {dc_name!r} is not in {env_file} "
            f"(stacks: {', '.join(env.stack_names())})"
        )
    base = env_file.parent
    ssh = env.ssh

    def host_entry(name: str) -> tuple[str, dict[str, Any]]:
        host = next(h for h in env.hosts if h.name == name)
        data: dict[str, Any] = {
            "ssh_hostname": host.ssh_address or str(host.address),
            "ssh_user": ssh.user,
            "ssh_port": ssh.port,
            "ssh_strict_host_key_checking": ssh.strict_host_key_checking,
            # Unreachable hosts must fail fast and loudly, not hang the run.
            "ssh_connect_retries": 1,
            "plinth_host": host.name,
        }
        if ssh.key:
            data["ssh_key"] = str((base / ssh.key).resolve())
        if ssh.known_hosts:
            data["ssh_known_hosts_file"] = str((base / ssh.known_hosts).resolve())
        if ssh.user != "root":
            data["_sudo"] = True
        return host.name, data

    hosts = [h.name for h in env.hosts_in(dc_name)]
    groups: dict[str, Any] = {
        "all": (
            [host_entry(n) for n in hosts],
            {
                "plinth_environment_file": str(env_file),
                "plinth_stack": stack_name,
                "plinth_datacenter": dc_name,
            },
        )
    }
    for role in Role:
        members = [h.name for h in env.hosts_with(role, dc_name)]
        if members:
            groups[role_group(role)] = members
    return groups


INVENTORY_FILE_TEMPLATE = '''\
"""pyinfra inventory of stack {stack}.

Derived from {env_file}: edit the YAML, not this file.

Usage: pyinfra inventory/{stack}.py deploy.py
"""

from plinth.stacks import pyinfra_groups

globals().update(pyinfra_groups(__file__))
'''


def write_inventory_files(env: Environment, env_file: Path) -> list[Path]:
    """Write ``<env>-<dc>.py`` for every DC (content depends only on names: stable)."""
    written = []
    for stack in env.stack_names():
        target = env_file.parent / f"{stack}.py"
        text = INVENTORY_FILE_TEMPLATE.format(stack=stack, env_file=env_file.name)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written
