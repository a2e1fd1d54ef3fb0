"""Base host deploy without a host: fact parsing and rendered files."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.base import MISSING, ContainerRuntime, Ipv4Routes, ManagedBlock, SysctlValues
from operations.base import proxy_endpoint
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
        suite="trixie",
    )
    assert sources.startswith("# managed by plinth")
    assert "deb http://mirror.dc1/debian trixie-updates main" in sources
    assert "bookworm" not in sources
    sysctl = render_template("base/etc/sysctl.d/60-plinth.conf.j2", sysctl=BaseSettings().sysctl)
    assert "net.ipv4.ip_nonlocal_bind = 1" in sysctl
    routes = render_template(
        "base/etc/systemd/system/plinth-routes.service.j2",
        routes=(("10.231.2.0/24", "10.231.1.254"),),
    )
    assert "ExecStart=/sbin/ip route replace 10.231.2.0/24 via 10.231.1.254" in routes
    proxy = render_template("base/etc/apt/apt.conf.d/80plinth-proxy.j2", detect="/x/detect")
    assert 'Acquire::http::Proxy-Auto-Detect "/x/detect";' in proxy
    assert 'Acquire::https::Proxy-Auto-Detect "/x/detect";' in proxy


def _detect_script(tmp_path: Path, proxies: list[str]) -> Path:
    script = tmp_path / "apt-proxy-detect"
    script.write_text(
        render_template(
            "base/usr/local/lib/plinth/apt-proxy-detect.j2",
            proxies=[proxy_endpoint(p) for p in proxies],
        )
    )
    script.chmod(0o755)
    return script


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_proxy_detection_prints_the_first_proxy_that_answers(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        open_port = listener.getsockname()[1]
        closed = f"http://127.0.0.1:{_closed_port()}"
        answering = f"http://127.0.0.1:{open_port}"
        script = _detect_script(tmp_path, [closed, answering])
        out = subprocess.run(
            [str(script), "http://deb.debian.org/debian"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    assert out.stdout == answering + "\n"


def test_proxy_detection_names_the_first_when_none_answers(tmp_path: Path) -> None:
    first = f"http://127.0.0.1:{_closed_port()}"
    script = _detect_script(tmp_path, [first, f"http://127.0.0.1:{_closed_port()}"])
    out = subprocess.run([str(script)], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout == first + "\n"


def test_proxy_endpoint() -> None:
    assert proxy_endpoint("http://edge.dc1.example:3128") == (
        "http://edge.dc1.example:3128",
        "edge.dc1.example",
        3128,
    )
    assert proxy_endpoint("http://10.0.0.5")[1:] == ("10.0.0.5", 3128)
    with pytest.raises(ValueError, match="no host name"):
        proxy_endpoint("3128")
