"""Progress of `plinth lab up` (and snapshot/restore): the events our lab code emits and
what the views make of them.

Docker and SSH are fakes at the boundaries the lab module already has (``ensure_engine``
gives the Docker client, paramiko's ``SSHClient`` the hosts): this checks our own
sequencing and wording only. That a real lab says the same is checked on the lab.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import paramiko
import pytest
from click.testing import CliRunner

from plinth import progress
from plinth.cli import main
from plinth.lab import LabError, containers
from plinth.lab import network as net
from plinth.lab import snapshot as snap

# ---- fakes at the boundary ----


class FakeContainer:
    def __init__(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.name = name
        self.id = name
        self.labels = labels or {}
        self.attrs: dict[str, Any] = {"State": {"ExitCode": 0}}
        self.started = False

    def put_archive(self, path: str, data: bytes) -> bool:
        return True

    def start(self) -> None:
        self.started = True

    def exec_run(self, cmd: list[str]) -> tuple[int, bytes]:
        return 0, b""

    def remove(self, force: bool = False, v: bool = False) -> None:
        pass

    def stop(self, timeout: int = 0) -> None:
        pass

    def reload(self) -> None:
        pass


class FakeCollection:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def list(self, **filters: Any) -> list[Any]:
        return list(self.items)

    def create(self, *args: Any, **kwargs: Any) -> Any:
        item = FakeContainer(kwargs.get("name") or args[0], kwargs.get("labels"))
        self.items.append(item)
        return item

    def get(self, name: str) -> Any:
        return FakeContainer(name)


class FakeApi:
    def create_endpoint_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs


class FakeDocker:
    """What ``lab_up`` asks of a Docker client for a small, connected lab whose base
    image was built before (a cache hit), with one container of an earlier lab left."""

    def __init__(self) -> None:
        self.containers = FakeCollection()
        self.containers.items.append(FakeContainer("plinth-lab-dc1-n1"))
        self.networks = FakeCollection()
        self.images = FakeCollection()
        self.api = FakeApi()


BOOTS: dict[str, list[str]] = {}
"""Per address, what connecting and then ``systemctl is-system-running`` give, in order:
``refused`` (no sshd yet) or a systemd state."""


class FakeSSH:
    blocking_waits: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.address = ""

    def load_host_keys(self, path: str) -> None:
        pass

    def set_missing_host_key_policy(self, policy: Any) -> None:
        pass

    def connect(self, address: str, **kwargs: Any) -> None:
        self.address = address
        script = BOOTS.setdefault(address, ["running"])
        if script[0] == "refused":
            script.pop(0)
            raise ConnectionRefusedError(111, "Connection refused")

    def exec_command(self, command: str, timeout: float = 0) -> tuple[None, Any, None]:
        script = BOOTS[self.address]
        if command == "systemctl is-system-running":
            output = script.pop(0) if len(script) > 1 else script[0]
        elif command.startswith("timeout ") and command.endswith("is-system-running --wait"):
            self.blocking_waits.append(command)
            output = ""  # cut by `timeout`: the boot goes on
        elif command.startswith("systemctl list-jobs"):
            output = "12 rabbitmq-server.service start running\n13 x.service start waiting\n"
        else:
            output = "postgresql@15-main.service loaded failed failed\n"
        return None, io.BytesIO(output.encode() + b"\n"), None

    def close(self) -> None:
        pass


@pytest.fixture()
def events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.PROGRESS_FILE_VARIABLE, str(path))
    yield path


def _read(path: Path) -> list[progress.Event]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def fake_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    root = tmp_path / "root"
    (root / "inventory").mkdir(parents=True)
    monkeypatch.setenv("PLINTH_ROOT", str(root))
    client = FakeDocker()
    monkeypatch.setattr(containers, "ensure_engine", lambda: client)
    monkeypatch.setattr(net, "_local_routes", dict)  # this machine's routes: not ours
    monkeypatch.setattr(paramiko, "SSHClient", FakeSSH)
    monkeypatch.setattr(containers, "READY_POLL", 0.0)
    BOOTS.clear()
    FakeSSH.blocking_waits.clear()
    # dc1-n2: sshd not up at first, then systemd starting with RabbitMQ holding the boot
    BOOTS["10.231.1.12"] = ["refused", "starting", "starting", "running"]
    # dc1-n3: boots degraded
    BOOTS["10.231.1.13"] = ["degraded"]
    return client


# ---- lab up ----


def test_lab_up_says_each_phase_each_container_and_what_each_host_waits_for(
    fake_lab: FakeDocker, events_file: Path
) -> None:
    info = containers.lab_up("small")
    assert [h.state for h in info.hosts] == ["ready"] * 3
    events = _read(events_file)

    phases = [e["phase"] for e in events if e["event"] == "phase_start"]
    assert phases == [
        "engine", "cleanup", "image", "network", "containers", "ssh-ready", "inventory",
    ]  # fmt: skip
    assert [e["phase"] for e in events if e["event"] == "phase_end"] == phases
    assert all(e["text"] for e in events if e["event"] == "phase_start")
    assert list(info.timings) == phases

    def between(name: str) -> list[progress.Event]:
        """The events inside phase ``name`` (threads: in any order across hosts)."""
        start = next(i for i, e in enumerate(events) if e.get("phase") == name)
        end = next(i for i, e in enumerate(events) if i > start and e.get("phase") == name)
        return events[start + 1 : end]

    assert [(e["event"], e["host"], e["text"]) for e in between("cleanup")] == [
        ("step", "cleanup", "removed leftover container plinth-lab-dc1-n1")
    ]
    (image,) = between("image")
    assert image["event"] == "step" and image["text"].startswith("reusing plinth-lab-base:")
    assert [e["text"] for e in between("network")] == ["plinth-lab-dc1 (10.231.1.0/24, connected)"]
    started = sorted((e["host"], e["text"]) for e in between("containers"))
    assert started == [
        ("dc1-n1", "container started (10.231.1.11)"),
        ("dc1-n2", "container started (10.231.1.12)"),
        ("dc1-n3", "container started (10.231.1.13)"),
    ]

    ready = between("ssh-ready")
    n2 = [(e["event"], e["text"]) for e in ready if e.get("host") == "dc1-n2"]
    assert n2 == [
        ("wait", "sshd to answer (ConnectionRefusedError)"),
        ("wait", "systemd starting, boot held by rabbitmq-server.service"),
        ("wait_end", "ready, systemd running"),
    ]
    # while it boots, systemd's own --wait blocks (ends with the boot), at most BOOT_POLL s
    assert FakeSSH.blocking_waits == ["timeout 5 systemctl is-system-running --wait"] * 2
    n1 = [(e["event"], e["text"]) for e in ready if e.get("host") == "dc1-n1"]
    assert n1 == [("wait_end", "ready, systemd running")]
    n3 = [(e["event"], e["text"]) for e in ready if e.get("host") == "dc1-n3"]
    assert n3 == [
        ("wait_end", "ready, systemd degraded (failed: postgresql@15-main.service)"),
        ("warning", "degraded, failed units: postgresql@15-main.service"),
    ]
    (inventory,) = between("inventory")
    assert inventory["text"].endswith("inventory/lab.yaml and 1 stack file(s)")


def test_plain_lines_of_a_lab_up_read_as_a_ci_log(fake_lab: FakeDocker, events_file: Path) -> None:
    containers.lab_up("small")
    out = io.StringIO()
    view = progress.PlainLines(out)
    status = progress.RunStatus("lab")
    for event in _read(events_file):
        status.update(event)
        view.show(event, status)
    lines = out.getvalue().splitlines()
    assert lines[0] == "lab 00:00 engine: finding the Docker engine"
    assert lines[1].startswith("lab 00:00 engine: done in ")
    assert "lab 00:00 cleanup: removed leftover container plinth-lab-dc1-n1" in lines
    assert "lab 00:00 waiting for dc1-n2: sshd to answer (ConnectionRefusedError) (0 s)" in lines
    assert (
        "lab 00:00 waiting for dc1-n2: systemd starting, boot held by rabbitmq-server.service (0 s)"
    ) in lines
    assert "lab 00:00 dc1-n2: ready, systemd running (after 0 s)" in lines
    assert "lab 00:00 dc1-n3: warning: degraded, failed units: postgresql@15-main.service" in lines
    assert lines[-1].startswith("lab 00:00 inventory: done in ")
    assert status.phases.keys() == {
        "engine", "cleanup", "image", "network", "containers", "ssh-ready", "inventory",
    }  # fmt: skip


def test_a_host_that_never_boots_is_named_with_what_held_it(
    fake_lab: FakeDocker, events_file: Path, tmp_path: Path
) -> None:
    BOOTS["10.231.1.12"] = ["starting"]
    host = containers.HostInfo("dc1-n2", "plinth-lab-dc1-n2", "dc1", "10.231.1.12")
    with pytest.raises(LabError) as caught:
        containers.wait_ready(host, tmp_path / "key", tmp_path / "known_hosts", within=0.05)
    assert "dc1-n2 (10.231.1.12) not ready within 0s: systemd starting, boot held by " in str(
        caught.value
    )
    assert "rabbitmq-server.service" in str(caught.value)
    waits = [e for e in _read(events_file) if e["event"] == "wait"]
    # the same reason, polled many times: said once (again only every Waiting.every)
    assert [e["text"] for e in waits] == ["systemd starting, boot held by rabbitmq-server.service"]


# ---- snapshot / restore pieces ----


def test_stopping_a_host_for_a_snapshot_says_what_it_waits_for(events_file: Path) -> None:
    container = FakeContainer("plinth-lab-dc1-n1", {"plinth.lab.host": "dc1-n1"})
    snap.stop_cleanly(container, timeout=180)
    assert [(e["event"], e["host"], e["text"]) for e in _read(events_file)] == [
        ("wait", "dc1-n1", "systemd to shut its units down (up to 180 s, then killed)"),
        ("wait_end", "dc1-n1", "stopped cleanly"),
    ]


def test_a_forced_restore_warns_on_stderr_without_a_progress_view(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(progress.PROGRESS_FILE_VARIABLE, raising=False)
    progress.warning("restore", "forced although it was taken at commit abc")
    assert capsys.readouterr().err == (
        "warning: restore: forced although it was taken at commit abc\n"
    )


# ---- the views and the helpers ----


def test_waiting_says_a_new_reason_at_once_and_detail_only_every_few_seconds(
    events_file: Path,
) -> None:
    waiting = progress.Waiting("debootstrap", every=3600)
    waiting.update("Retrieving libc6", changed=False)  # first: shown
    waiting.update("Retrieving bash", changed=False)  # detail, too soon: not shown
    waiting.update("sshd to answer")  # a new reason: shown
    waiting.update("sshd to answer")  # the same: not shown
    waiting.end("exited with status 0")
    assert [(e["event"], e["text"]) for e in _read(events_file)] == [
        ("wait", "Retrieving libc6"),
        ("wait", "sshd to answer"),
        ("wait_end", "exited with status 0"),
    ]


def test_the_live_line_counts_the_seconds_of_each_wait_itself() -> None:
    out = io.StringIO()
    view = progress.LiveLine(out, width=200)
    status = progress.RunStatus("lab")
    events: list[progress.Event] = [
        {"event": "phase_start", "phase": "ssh-ready", "text": "waiting for every host"},
        {"event": "wait", "host": "dc1-n2", "text": "systemd starting", "waited": 12},
        {"event": "wait", "host": "dc1-n3", "text": "sshd to answer (OSError)", "waited": 2},
    ]
    for event in events:
        status.update(event)
        view.show(event, status)
    last = out.getvalue().rsplit("\r\x1b[K", 1)[-1]
    assert last == (
        "lab 00:00 ssh-ready — waiting for dc1-n2: systemd starting (12 s), "
        "dc1-n3: sshd to answer (OSError) (2 s)"
    )
    status.update({"event": "wait_end", "host": "dc1-n2", "text": "ready", "waited": 14})
    status.update({"event": "wait_end", "host": "dc1-n3", "text": "ready", "waited": 3})
    view.tick(status)
    assert out.getvalue().rsplit("\r\x1b[K", 1)[-1] == "lab 00:00 ssh-ready — dc1-n3: ready"
    view.show({"event": "warning", "host": "dc1-n3", "text": "degraded"}, status)
    assert "\r\x1b[K  dc1-n3: warning: degraded\n" in out.getvalue()
    status.update({"event": "phase_end", "phase": "ssh-ready", "seconds": 14.04})
    view.tick(status)
    assert out.getvalue().rsplit("\r\x1b[K", 1)[-1] == "lab 00:00 ssh-ready done in 14.0 s"


def test_reporting_shows_this_process_events_and_puts_the_environment_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(progress.PROGRESS_FILE_VARIABLE, raising=False)
    out = io.StringIO()
    with progress.reporting(progress.PlainLines(out), progress.RunStatus("lab")):
        progress.phase_start("image", "the base image")
        progress.step("image", "reusing plinth-lab-base:bookworm-x")
        progress.phase_end("image", 0.04)
    assert progress.PROGRESS_FILE_VARIABLE not in os.environ
    assert out.getvalue().splitlines() == [
        "lab 00:00 image: the base image",
        "lab 00:00 image: reusing plinth-lab-base:bookworm-x",
        "lab 00:00 image: done in 0.0 s",
    ]
    with progress.reporting(None, progress.RunStatus("lab")):  # --progress off
        assert progress.PROGRESS_FILE_VARIABLE not in os.environ


def test_lab_up_progress_option_puts_the_events_on_stderr(
    fake_lab: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(progress.PROGRESS_FILE_VARIABLE, raising=False)
    result = CliRunner().invoke(main, ["lab", "up", "--progress", "json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[0]["event"] == "phase_start" and records[0]["phase"] == "engine"
    assert all(r["stack"] == "lab" for r in records)
    assert any(r["event"] == "wait" and r["host"] == "dc1-n2" for r in records)
    assert "lab up (small, connected)" in result.stdout
    plain = CliRunner().invoke(main, ["lab", "up", "--progress", "off"])
    assert plain.exit_code == 0, plain.output
    # off: no progress; the degraded host still warns, the summary still lists it
    assert plain.stderr.splitlines() == [
        "warning: dc1-n3: degraded, failed units: postgresql@15-main.service"
    ]
    assert "(failed: postgresql@15-main.service)" in plain.stdout


def test_a_restore_says_it_waits_for_the_platform_to_be_healthy(
    events_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.cli import lab as lab_cli

    class FakeStatus:
        """`plinth status lab --wait 300`: still waiting at the first look, then healthy."""

        returncode = 0

        def __init__(self, command: list[str], **kwargs: Any) -> None:
            assert command[-4:] == ["status", "lab", "--wait", "300"]
            self.looks = 0

        def communicate(self, timeout: float) -> tuple[str, str]:
            self.looks += 1
            if self.looks == 1:
                raise subprocess.TimeoutExpired("plinth", timeout)
            return "healthy\n", ""

    monkeypatch.setattr(subprocess, "Popen", FakeStatus)
    monkeypatch.setattr(lab_cli, "HEALTHY_POLL", 0.0)
    lab_cli._wait_healthy("deployed", "lab", 300)
    assert [(e["event"], e.get("phase") or e.get("host")) for e in _read(events_file)] == [
        ("phase_start", "healthy"),
        ("wait", "the platform"),
        ("wait", "the platform"),  # again after a poll: still waiting, in a CI log too
        ("wait_end", "the platform"),
        ("phase_end", "healthy"),
    ]
