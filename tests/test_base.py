"""Base host deploy without a host: fact parsing and rendered files."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.base import MISSING, ContainerRuntime, Ipv4Routes, ManagedBlock, SysctlValues
from plinth.model import BaseSettings, PackageSources
from plinth.render import render_template


def test_sysctl_fact_reads_values_and_writability() -> None:
    values = SysctlValues().process(
        [
            "net.ipv4.ip_nonlocal_bind\t1\t0",
            "vm.swappiness\t0\t60",
            f"net.nosuch\t0\t{MISSING}",
            "net.ipv4.ip_local_port_range\t1\t32768\t60999",
        ]
    )
    assert values["net.ipv4.ip_nonlocal_bind"].writable
    assert values["vm.swappiness"].value == "60" and not values["vm.swappiness"].writable
    assert values["net.nosuch"].value is None
    assert values["net.ipv4.ip_local_port_range"].value == "32768 60999"


def test_sysctl_fact_rejects_garbage() -> None:
    with pytest.raises(FactProcessError, match="unexpected sysctl fact line"):
        SysctlValues().process(["sh: 1: cannot open"])


def test_missing_marker_is_not_a_shell_comment() -> None:
    # A marker starting with "#" once turned half of a fact command into a comment.
    assert "#" not in MISSING
    assert "#" not in SysctlValues().command(keys=("vm.swappiness",))


def test_managed_block_fact() -> None:
    fact = ManagedBlock()
    assert fact.process([MISSING]) is None
    assert (
        fact.process(["10.0.0.1\ta.b c", "10.0.0.2\td.e f"]) == "10.0.0.1\ta.b c\n10.0.0.2\td.e f"
    )
    assert fact.process([]) == ""


def test_container_runtime_fact() -> None:
    assert ContainerRuntime().process(["docker"]) == "docker"
    assert ContainerRuntime().process(["none"]) == "none"
    assert ContainerRuntime().process([]) == "none"


def test_routes_fact() -> None:
    routes = Ipv4Routes().process(
        [
            "default via 10.231.2.1 dev eth0",
            "10.231.1.0/24 via 10.231.2.254 dev eth0",
            "10.231.2.0/24 dev eth0 proto kernel scope link src 10.231.2.31",
        ]
    )
    assert routes == {
        "default": "10.231.2.1",
        "10.231.1.0/24": "10.231.2.254",
        "10.231.2.0/24": None,
    }


def test_rendered_files_carry_the_managed_header_and_the_model_values() -> None:
    sources = render_template(
        "base/etc/apt/sources.list.j2",
        sources=PackageSources(apt_mirror="http://mirror.dc1/debian"),
    )
    assert sources.startswith("# managed by plinth")
    assert "deb http://mirror.dc1/debian bookworm-updates main" in sources
    sysctl = render_template("base/etc/sysctl.d/60-plinth.conf.j2", sysctl=BaseSettings().sysctl)
    assert "net.ipv4.ip_nonlocal_bind = 1" in sysctl
    routes = render_template(
        "base/etc/systemd/system/plinth-routes.service.j2",
        routes=(("10.231.2.0/24", "10.231.1.254"),),
    )
    assert "ExecStart=/sbin/ip route replace 10.231.2.0/24 via 10.231.1.254" in routes
    proxy = render_template("base/etc/apt/apt.conf.d/80plinth-proxy.j2", proxy="http://sq:3128")
    assert 'Acquire::http::Proxy "http://sq:3128";' in proxy
