"""``plinth audit`` on the deployed small lab (issue 16): every listener of every host is
one the model declares; every TLS listener the firewall admits the controller to refuses
a client without a certificate (where the model says mTLS), one from a foreign CA, TLS 1.1
and plaintext, serving a certificate of the platform that names the address or name
clients dial; every other one cannot be reached from the controller at all. Then a
listener nobody declared, opened on one host, is the one finding and makes the audit exit 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from plinth.topology.flows import Protocol, Security, listeners
from tests.lab.conftest import Baseline, Lab, plinth

pytestmark = pytest.mark.lab

STRAY_UNIT = "plinth-audit-stray"
STRAY_PORT = 8099


def declared_tls_listeners(lab: Lab) -> set[str]:
    """``address:port/tcp name`` of every TLS listener the model declares, as the audit
    names them (a VIP bind once)."""
    env = lab.environment
    addresses = {h.name: str(h.address) for h in env.hosts}
    return {
        f"{addresses[item.host] if item.bind == '*' else item.bind}:{item.port}/tcp {item.name}"
        for item in listeners(env)
        if item.protocol is Protocol.TCP
        and item.security in (Security.MUTUAL_TLS, Security.TLS)
        and not item.transient  # the CLI tools' own listeners: not a service
    }


def test_the_deployed_lab_passes_the_audit(deployed_small_lab: Lab) -> None:
    result = plinth("audit", "lab", "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["findings"]
    assert report["findings"] == []
    probes = {p["listener"]: p for p in report["probes"]}
    # Nothing declared went unprobed (a daemon down would also be a finding above).
    assert set(probes) == declared_tls_listeners(deployed_small_lab)
    filtered = 0
    for name, found in probes.items():
        answers = {check: a["outcome"] for check, a in found["answers"].items()}
        if "firewall" in answers:
            # No flow admits the controller here: the host firewall drops the connect.
            assert answers == {"firewall": "refused"}, (name, found)
            filtered += 1
            continue
        assert answers["TLS 1.1"] == "refused", name
        assert answers["plaintext"] == "refused", name
        if found["security"] == str(Security.MUTUAL_TLS):
            assert answers["no client certificate"] == "refused", name
            assert answers["foreign CA"] == "refused", name
        assert "valid for" in found["certificate"], (name, found["certificate"])
    if deployed_small_lab.environment.network.firewall == "enforce":
        # etcd, the members' PostgreSQL, the registry instances, the api-servers and the
        # Erlang distribution are for peers and upstream proxies only.
        assert filtered > 0


def test_a_listener_nobody_declared_is_a_finding(
    deployed_small_lab: Lab, undoable_lab: Baseline, tmp_path: Path
) -> None:
    host = deployed_small_lab.environment.hosts[1]
    remote = deployed_small_lab.host(host.name, tmp_path)
    remote.check_output(
        f"systemd-run --unit {STRAY_UNIT} python3 -m http.server {STRAY_PORT} --bind 0.0.0.0"
    )
    try:
        deadline = time.monotonic() + 20
        while f":{STRAY_PORT} " not in remote.check_output("ss -H -l -n -t"):
            assert time.monotonic() < deadline, "the stray listener did not start"
            time.sleep(0.5)
        result = plinth("audit", "lab", "--json", check=False)
        report = json.loads(result.stdout)
        assert result.returncode == 1, result.stdout[-2000:]
        assert report["findings"] == [
            {
                "host": host.name,
                "subject": f"0.0.0.0:{STRAY_PORT}/tcp ({STRAY_UNIT}.service)",
                "problem": "listening, but no listener of the model has this port",
            }
        ]
    finally:
        remote.run(f"systemctl stop {STRAY_UNIT}")
    undoable_lab.undone()
