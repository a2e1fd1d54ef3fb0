"""squid's allowlist from the model, and config checking before replacement (@local, real)."""

from __future__ import annotations

import getpass
import grp
import os
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any, cast

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops

from operations.checked import checked_file
from operations.squid import allowed_domains, client_proxies, render_config, squid_input
from plinth.model import PackageSources, SquidSettings, load_environment

REPO = Path(__file__).resolve().parents[1]

# pyinfra's Inventory and Config constructors are unannotated: called through their types.
new_inventory = cast("Callable[[tuple[list[str], dict[str, Any]]], Inventory]", Inventory)
new_config = cast("Callable[[], Config]", Config)


def test_allowlist_comes_from_the_package_sources() -> None:
    sources = PackageSources(apt_mirror="http://mirror.dc1.example/debian")
    domains = allowed_domains(sources, SquidSettings(allowed_domains=(".artifacts.example",)))
    assert domains == (
        "mirror.dc1.example",
        "deb.debian.org",
        "pypi.org",
        "files.pythonhosted.org",
        ".artifacts.example",
    )


def test_rendered_config_allows_platform_subnets_to_listed_destinations_only() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    edge = next(h for h in env.hosts if h.name == "dc2-edge1")
    config = render_config(squid_input(env, edge))
    assert config.startswith("# managed by plinth")
    assert "acl platform src 10.40.1.0/24 10.40.2.0/24" in config
    assert "acl allowed_destinations dstdomain deb.debian.org pypi.org files.pythonhosted.org" in (
        config
    )
    lines = [ln for ln in config.splitlines() if ln.startswith("http_access")]
    assert lines[-2:] == [
        "http_access allow platform allowed_destinations",
        "http_access deny all",
    ]
    assert "http_port 3128" in config and "visible_hostname dc2-edge1.dc2.grid.plinth.internal" in (
        config
    )


def _apply(path: Path, content: str, check: str) -> tuple[bool, bool]:
    """Run checked_file on @local: (succeeded, changed)."""
    inventory = new_inventory((["@local"], {}))
    state = State(inventory, new_config())
    connect_all(state)
    meta = add_op(
        state, checked_file, name="checked", path=str(path), src=StringIO(content), check=check,
        user=getpass.getuser(), group=grp.getgrgid(os.getgid()).gr_name,
    )  # fmt: skip
    try:
        run_ops(state)
    except PyinfraError:  # raised once the only host failed
        return False, False
    (op_meta,) = meta.values()
    return not state.failed_hosts, op_meta.did_change()


def test_checked_file_replaces_only_valid_configs(tmp_path: Path) -> None:
    live = tmp_path / "daemon.conf"
    check = "grep -q '^valid' {path}"
    assert _apply(live, "valid config 1\n", check) == (True, True)
    assert live.read_text() == "valid config 1\n"
    # an invalid candidate fails the host and leaves the live file untouched
    assert _apply(live, "broken config\n", check) == (False, False)
    assert live.read_text() == "valid config 1\n"
    assert not list(tmp_path.glob("*.plinth-candidate"))
    # same content: nothing to do
    assert _apply(live, "valid config 1\n", check) == (True, False)


def test_client_proxies_in_an_isolated_lab() -> None:
    from plinth.lab import topology as topo
    from plinth.model import parse_environment

    env = parse_environment(topo.build_environment("full", isolated=True))
    hosts = {h.name: h for h in env.hosts}
    # The VIP first (it serves once keepalived runs), then every squid host of the DC.
    assert client_proxies(env, hosts["dc2-db1"]) == (
        "http://edge.dc2.lab.plinth.internal:3128",
        "http://dc2-edge1.dc2.lab.plinth.internal:3128",
        "http://dc2-edge2.dc2.lab.plinth.internal:3128",
    )
    assert client_proxies(env, hosts["dc1-app2"])[0] == "http://edge.dc1.lab.plinth.internal:3128"
    # The way out goes direct.
    assert client_proxies(env, hosts["dc1-edge1"]) == ()
    # No proxy in the model: direct.
    connected = parse_environment(topo.build_environment("full"))
    assert client_proxies(connected, connected.hosts[0]) == ()


def test_client_proxies_only_a_proxy_that_is_not_a_squid_vip() -> None:
    from plinth.lab import topology as topo
    from plinth.model import parse_environment

    data = topo.build_environment("full", isolated=True)
    data["datacenters"][0]["package_sources"]["http_proxy"] = "http://proxy.corp.example:8080"
    env = parse_environment(data)
    db1 = next(h for h in env.hosts if h.name == "dc1-db1")
    assert client_proxies(env, db1) == ("http://proxy.corp.example:8080",)
