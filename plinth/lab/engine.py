"""Find a Docker engine, or install and start one (DESIGN.md: one may not be running)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from plinth import progress
from plinth.lab import LabError

DOCKERD_LOG = Path("/var/log/plinth-dockerd.log")
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_TIMEOUT = 30.0


# Pinging fails fast, but real calls can legitimately take long on a busy 2-core
# machine: force-removing a container waits for its systemd to stop.
API_TIMEOUT = 300


def _try_client(timeout: int = 10) -> docker.DockerClient | None:
    """A client whose engine answered a ping (within ``timeout``), or None."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError):
        return None
    client.api.timeout = API_TIMEOUT
    return client


def _install_docker() -> None:
    if shutil.which("apt-get") is None:
        raise LabError("dockerd is not installed and apt-get is missing: install a Docker engine")
    progress.note("engine", "dockerd missing, installing docker.io with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "docker.io"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise LabError(f"`{' '.join(cmd)}` failed ({last}); install docker.io by hand")


def _start_dockerd() -> docker.DockerClient:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        _install_docker()
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise LabError("docker.io was installed but dockerd is not on PATH")
    progress.note("engine", f"no Docker engine answers, starting {dockerd} (log: {DOCKERD_LOG})")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        # Own session: the engine must outlive this command and not get our Ctrl-C.
        proc = subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        client = _try_client(timeout=5)
        if client is not None:
            return client
        if proc.poll() is not None:
            tail = _log_tail()
            raise LabError(
                f"dockerd exited with status {proc.returncode} ({tail}); see {DOCKERD_LOG}"
            )
        time.sleep(0.5)
    raise LabError(
        f"dockerd (pid {proc.pid}) did not answer on {DEFAULT_SOCKET} within "
        f"{START_TIMEOUT:.0f}s; see {DOCKERD_LOG}"
    )


def _log_tail() -> str:
    try:
        lines = DOCKERD_LOG.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][-200:] if lines else "empty log"


def ensure_engine(start: bool = True) -> docker.DockerClient:
    """A client for an engine that answers; start one locally if allowed and needed.

    An engine that answers is never restarted or killed. With ``DOCKER_HOST`` set we
    never start anything: the user chose a remote or non-default engine.
    """
    client = _try_client()
    if client is not None:
        return client
    docker_host = os.environ.get("DOCKER_HOST")
    if docker_host:
        raise LabError(
            f"no Docker engine answers at DOCKER_HOST={docker_host}: start it, or unset "
            "DOCKER_HOST to use (and if needed start) the local engine"
        )
    if not start:
        raise LabError(
            f"no Docker engine answers on {DEFAULT_SOCKET}: start dockerd "
            "(or let `plinth lab up` start it)"
        )
    if os.geteuid() != 0:
        raise LabError(
            f"no Docker engine answers on {DEFAULT_SOCKET} and starting dockerd needs root"
        )
    return _start_dockerd()
