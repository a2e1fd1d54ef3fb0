"""Foundation in the small lab: up, idempotence, settings on the hosts, loud failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.lab.conftest import REPO, Lab, plinth

pytestmark = pytest.mark.lab


def test_second_preview_detects_no_drift(deployed_small_lab: Lab) -> None:
    result = plinth("preview", "lab", "--expect-no-changes", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads(plinth("preview", "lab", "--json").stdout)
    assert [s["change_count"] for s in plan["stacks"]] == [0]


def test_plain_pyinfra_run_sees_nothing_to_do(deployed_small_lab: Lab) -> None:
    """`pyinfra inventory/lab-dc1.py deploy.py` works without the CLI, and is a no-op now."""
    proc = subprocess.run(
        ["pyinfra", "inventory/lab-dc1.py", "deploy.py", "--dry", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    changing = [op["name"] for op in plan["plan"] if op["hosts_with_change"]]
    assert changing == []


def test_base_settings_are_on_every_host(deployed_small_lab: Lab, tmp_path: Path) -> None:
    env = deployed_small_lab.environment
    for host_model in env.hosts:
        host = deployed_small_lab.host(host_model.name, tmp_path)
        assert host.check_output("hostname") == host_model.name
        hosts_file = host.file("/etc/hosts").content_string
        for other in env.hosts:
            assert f"{other.address}\t{env.fqdn(other)} {other.name}" in hosts_file
        for vip in env.vips:
            assert f"{vip.address}\t{env.vip_fqdn(vip)}" in hosts_file
        # names resolve through the managed block
        other = env.hosts[-1]
        assert host.check_output(f"getent hosts {env.fqdn(other)}").split()[0] == str(other.address)
        sources = host.file("/etc/apt/sources.list").content_string
        assert "managed by plinth" in sources
        assert f"deb {env.package_sources.apt_mirror} bookworm main" in sources
        for package in env.base.packages:
            assert host.package(package).is_installed, package
        assert host.service("chrony").is_enabled
        journald = host.file("/etc/systemd/journald.conf.d/60-plinth.conf").content_string
        assert "Storage=persistent" in journald
        assert host.file("/var/log/journal").is_directory
        # journald has switched to the persistent journal
        assert host.run("journalctl --header | grep -q /var/log/journal").rc == 0
        sysctl_file = host.file("/etc/sysctl.d/60-plinth.conf").content_string
        for key, value in env.base.sysctl.items():
            assert f"{key} = {value}" in sysctl_file
        # writable (network) settings are applied for real inside containers
        assert host.check_output("cat /proc/sys/net/ipv4/tcp_keepalive_time") == "60"
        assert host.check_output("cat /proc/sys/net/ipv4/ip_nonlocal_bind") == "1"
        assert host.check_output("readlink /etc/localtime") == "/usr/share/zoneinfo/UTC"
        # trust: the platform root and the extra bundle are in the system store
        assert host.file("/usr/local/share/ca-certificates/plinth-lab-root.crt").exists
        if env.package_sources.extra_ca_bundle:
            assert host.file("/usr/local/share/ca-certificates/plinth-extra-ca.crt").exists
            # the package index is reachable over verified TLS through that bundle
            assert host.run("curl -sf -o /dev/null https://pypi.org/simple/pip/").rc == 0


def test_unreachable_host_fails_loudly_and_applies_nothing(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    env = deployed_small_lab.environment
    first, victim = env.hosts[0], env.hosts[-1]
    # Drift on a reachable host: a run that went ahead would repair it.
    host = deployed_small_lab.host(first.name, tmp_path)
    host.run("rm -f /etc/systemd/journald.conf.d/60-plinth.conf")
    subprocess.run(["docker", "stop", "-t", "2", f"plinth-lab-{victim.name}"], check=True)
    try:
        result = plinth("up", "lab", "--yes", check=False, timeout=300)
        assert result.returncode == 1
        message = result.stderr.strip().splitlines()[-1]
        assert message.startswith("error: stack lab-dc1: unreachable host(s)")
        assert victim.name in message and str(victim.address) in message
        assert not host.file("/etc/systemd/journald.conf.d/60-plinth.conf").exists
    finally:
        subprocess.run(["docker", "start", f"plinth-lab-{victim.name}"], check=True)
    deployed_small_lab.wait_for_ssh(victim.name, tmp_path)
    plinth("up", "lab", "--yes", timeout=900)
    assert host.file("/etc/systemd/journald.conf.d/60-plinth.conf").exists
    assert plinth("preview", "lab", "--expect-no-changes", check=False).returncode == 0
