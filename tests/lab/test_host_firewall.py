"""The host firewall on the small lab (issue 16): plinth's nftables table is loaded and
survives as the boot configuration, and a ruleset that would lock the controller out is
never kept: the deploy fails naming the host, and the rollback timer brings the previous
rules back, after which SSH opens again and the next preview finds nothing to do.

That the rules admit exactly the flows is proven from outside by ``plinth audit``
(tests/lab/test_network_audit.py: every listener the controller is not admitted to cannot be
reached from it) and by every other lab test, which runs with the firewall on.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from operations.firewall import ROLLBACK_AFTER_SECONDS, RULESET_PATH
from tests.lab.conftest import DEPLOY, Baseline, Lab, plinth

pytestmark = pytest.mark.lab

NOT_THE_CONTROLLER = "192.0.2.1/32"
"""TEST-NET-1: an address nobody has, as the model's only controller."""


def ssh_opens(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def test_the_table_is_loaded_and_kept_for_the_next_boot(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    assert deployed_small_lab.environment.network.firewall == "enforce"
    for host in deployed_small_lab.environment.hosts:
        remote = deployed_small_lab.host(host.name, tmp_path)
        table = remote.check_output("nft list table inet plinth")
        assert "policy drop" in table, host.name
        assert "SSH from the controller" in table, host.name
        assert remote.check_output("systemctl is-enabled nftables.service") == "enabled"
        assert remote.check_output(f"grep -c 'chain input' {RULESET_PATH}") == "1"


def test_rules_that_would_lock_the_controller_out_are_rolled_back(
    deployed_small_lab: Lab, lab_model: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    victim = lab.environment.hosts[0]
    address = str(victim.address)
    remote = lab.host(victim.name, tmp_path)
    before = remote.check_output("nft list table inet plinth")
    live_file = remote.check_output(f"sha1sum {RULESET_PATH}")
    original = lab_model.read_text()
    data = yaml.safe_load(original)
    data["network"]["controllers"] = [NOT_THE_CONTROLLER]
    lab_model.write_text(yaml.safe_dump(data, sort_keys=False))

    started = time.monotonic()
    try:
        result = plinth(*DEPLOY, check=False)
        assert result.returncode != 0, result.stdout[-2000:]
        output = result.stdout + result.stderr
        # pyinfra reports the refusal of one host and "executed N commands" for the
        # others: every host got the same rules, any of them names the cause.
        cut = "the new firewall rules cut SSH"
        refused = [h.name for h in lab.environment.hosts if f"{h.name}: {cut}" in output]
        assert refused, output[-3000:]
        assert not ssh_opens(address), "the bad rules were not loaded: the drill proves nothing"
    finally:
        # Whatever failed above, the hosts answer again only once the rollback timer
        # fired (ROLLBACK_AFTER_SECONDS after the apply): wait for it, so that the next
        # test does not find the lab unreachable.
        deadline = started + ROLLBACK_AFTER_SECONDS + 120
        for host in lab.environment.hosts:
            while not ssh_opens(str(host.address)):
                assert time.monotonic() < deadline, f"SSH to {host.name} did not come back"
                time.sleep(2)
    remote = lab.host(victim.name, tmp_path)
    assert remote.check_output("nft list table inet plinth") == before
    assert remote.check_output(f"sha1sum {RULESET_PATH}") == live_file

    # The model back: the previous rules are what the hosts have, nothing to change.
    lab_model.write_text(original)
    preview = plinth("preview", "lab", "--expect-no-changes", check=False)
    assert preview.returncode == 0, preview.stdout[-3000:]
    undoable_lab.undone()
