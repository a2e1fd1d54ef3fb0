"""The lab: the platform on local systemd containers, reached over SSH like real hosts.

Everything the lab creates in Docker carries the label ``plinth.lab=1``; cleanup finds
its objects by that label only, so nothing else on the engine is ever touched.
"""

from __future__ import annotations

from pathlib import Path

from plinth.stacks import project_root

LABEL = "plinth.lab"
"""Label key on every container and network of the lab (value ``1``)."""
LABELS = {LABEL: "1"}
NAME_PREFIX = "plinth-lab-"
ENV_NAME = "lab"


class LabError(Exception):
    """The lab cannot do what was asked; the message is one line: cause and what to do."""


def lab_dir() -> Path:
    """Local, git-ignored lab state: SSH key, known_hosts, image build scratch."""
    return project_root() / ".lab"


def ssh_dir() -> Path:
    return lab_dir() / "ssh"


def hosts_dir() -> Path:
    """Each host's ``/etc/hosts``, owned by the lab and bind-mounted into its container."""
    return lab_dir() / "hosts"
