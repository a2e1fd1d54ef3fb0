"""Foundation in the small lab: up, idempotence, settings on the hosts, loud failures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from plinth.model import Role
from tests.lab.conftest import (
    DRIFT_ASIDE,
    DRIFT_FILE,
    Baseline,
    Lab,
    plinth,
    wait_status_healthy,
)

pytestmark = pytest.mark.lab


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
        assert f"deb {env.package_sources.apt_mirror} {env.release} main" in sources
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


def test_versions_shows_every_daemon_on_the_releases_line(deployed_small_lab: Lab) -> None:
    """What an operator checks after a deploy or an upgrade: every host runs the lines its
    release was proven with, and the Patroni/Airflow the model pins."""
    env = deployed_small_lab.environment
    result = plinth("versions", "lab", "--json", timeout=300)
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["differing_hosts"] == []
    assert report["release"]["codename"] == env.release
    daemons = {
        (host["name"], row["daemon"]): row
        for dc in report["datacenters"]
        for host in dc["hosts"]
        for row in host["daemons"]
    }
    for host_model in env.hosts_with(Role.ETCD):
        etcd = daemons[(host_model.name, "etcd-server")]
        line = env.debian.daemon_lines["etcd-server"]
        assert etcd["upstream"].startswith(line + "."), etcd
    for host_model in env.hosts_with(Role.POSTGRESQL):
        patroni = daemons[(host_model.name, "patroni")]
        assert patroni["installed"] == env.components.patroni.version
    # The table a person reads says the same, and the exit status is the verdict.
    table = plinth("versions", "lab", timeout=300).stdout
    assert f"all {len(env.hosts)} hosts run" in table


def test_unreachable_host_fails_loudly_and_applies_nothing(
    deployed_small_lab: Lab, undoable_lab: Baseline, tmp_path: Path
) -> None:
    env = deployed_small_lab.environment
    first, victim = env.hosts[0], env.hosts[-1]
    # Drift on a reachable host: a run that went ahead would repair it (moved back after).
    host = deployed_small_lab.host(first.name, tmp_path)
    host.run(f"mv {DRIFT_FILE} {DRIFT_ASIDE}")
    subprocess.run(["docker", "stop", "-t", "2", f"plinth-lab-{victim.name}"], check=True)
    result = plinth("up", "lab", "--yes", check=False, timeout=300)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: stack lab-dc1: unreachable host(s)")
    assert victim.name in message and str(victim.address) in message
    assert not host.file(DRIFT_FILE).exists
    # The undo: the file back, the host started again (a restarted host is not drift).
    assert host.run(f"mv {DRIFT_ASIDE} {DRIFT_FILE}").rc == 0
    subprocess.run(["docker", "start", f"plinth-lab-{victim.name}"], check=True)
    deployed_small_lab.wait_for_ssh(victim.name, tmp_path)
    wait_status_healthy()
    undoable_lab.undone()
