"""deploy.py's ordering point, on pyinfra itself: the squid hosts' base, packages and
squid run before any other host's base deploy (pyinfra CLI, @fake hosts, no target)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

INVENTORY = """
hosts = [
    ("@fake/db1", {"squid": False, "fake_delay": 0, "fake_delay_jitter": 0}),
    ("@fake/edge1", {"squid": True, "fake_delay": 0, "fake_delay_jitter": 0}),
]
"""

# The shape of deploy.py: one helper called from two places, the ordering point between.
DEPLOY = """
from pyinfra import host
from pyinfra.operations import server

from operations.squid import egress_ordering_point

is_squid = host.data.get("squid")


def base_and_packages() -> None:
    server.shell(name="base", commands=["echo base"])
    server.shell(name="packages", commands=["echo packages"])


if is_squid:
    base_and_packages()
    server.shell(name="squid", commands=["echo squid"])

egress_ordering_point(name="ordering point", is_squid_host=is_squid)

if not is_squid:
    base_and_packages()

server.shell(name="tls", commands=["echo tls"])
"""


def _executed(tmp_path: Path, deploy: str) -> list[tuple[str, str]]:
    (tmp_path / "inv.py").write_text(INVENTORY)
    (tmp_path / "deploy.py").write_text(deploy)
    proc = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inv.py", "deploy.py", "-y"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran: list[tuple[str, str]] = []
    operation = ""
    for line in (proc.stdout + proc.stderr).splitlines():
        if started := re.match(r"--> Starting operation: (.+?)\s*$", line):
            operation = started[1]
        elif done := re.match(r"\s+\[@fake/(\w+)\]\s+Success", line):
            ran.append((done[1], operation))
    return ran


def test_squid_hosts_are_deployed_before_the_others_start(tmp_path: Path) -> None:
    ran = _executed(tmp_path, DEPLOY)
    assert ran[:5] == [
        ("edge1", "base"),
        ("edge1", "packages"),
        ("edge1", "squid"),
        ("db1", "base"),
        ("db1", "packages"),
    ], ran
    # Both hosts then carry on together (within one operation, in no fixed order).
    assert sorted(ran[5:]) == [("db1", "tls"), ("edge1", "tls")], ran


def test_without_the_ordering_point_they_would_interleave(tmp_path: Path) -> None:
    # Why deploy.py needs it: pyinfra would run both hosts' base first.
    deploy = "\n".join(line for line in DEPLOY.splitlines() if "egress_ordering_point(" not in line)
    ran = _executed(tmp_path, deploy)
    assert ran.index(("db1", "base")) < ran.index(("edge1", "squid")), ran
