"""Progress events and their views (plinth/progress.py): our own logic, on fake events.

That the events come out of a real pyinfra run while it applies is shown on the lab
(`plinth up lab --progress plain`, in the issue's note); here: what the views make of a
sequence of events, and that the tail follows a file written while it reads.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from plinth import progress


def _events() -> list[progress.Event]:
    return [
        {"event": "prepare", "host": "dc1-n1"},
        {"event": "prepare", "host": "dc1-n2"},
        {"event": "operation_start", "operation": "Install packages", "index": 1, "total": 4},
        {
            "event": "operation_end",
            "operation": "Install packages",
            "index": 1,
            "total": 4,
            "changed": ["dc1-n1"],
            "failed": [],
        },
        {"event": "operation_start", "operation": "Roll Patroni", "index": 2, "total": 4},
        {"event": "note", "host": "roll", "text": "waiting up to 60 s: dc1-n2 is not streaming"},
        {
            "event": "operation_end",
            "operation": "Roll Patroni",
            "index": 2,
            "total": 4,
            "changed": [],
            "failed": ["dc1-n2"],
        },
    ]


def test_plain_lines_say_what_each_operation_did_and_what_a_roll_waits_for() -> None:
    out = io.StringIO()
    view = progress.PlainLines(out)
    status = progress.RunStatus("lab-dc1")
    for event in _events():
        status.update(event)
        view.show(event, status)
    lines = out.getvalue().splitlines()
    assert lines[0] == "lab-dc1: reading facts and preparing operations"
    assert len(lines) == 4  # one prepare line, two operations, one note
    assert lines[1].startswith("lab-dc1 [  1/  4] 00:00")
    assert lines[1].endswith("Install packages: changed on dc1-n1")
    assert lines[2].endswith("roll: waiting up to 60 s: dc1-n2 is not streaming")
    assert lines[3].endswith("Roll Patroni: FAILED on dc1-n2")
    assert status.changed == 1 and status.done == 2


def test_the_estimate_follows_the_pace_of_the_operations_done() -> None:
    status = progress.RunStatus("lab-dc1")
    assert status.eta() is None
    status.update({"event": "operation_start", "operation": "a", "index": 1, "total": 10})
    assert status.eta() is None  # nothing finished yet: no pace
    assert status.executing_since is not None
    status.executing_since -= 20.0  # as if the first two operations took 20 s
    status.update({"event": "operation_end", "operation": "a", "index": 2, "total": 10})
    eta = status.eta()
    assert eta is not None and 79 < eta < 81  # 10 s each, 8 left


def test_json_lines_carry_the_counts_and_the_estimate() -> None:
    out = io.StringIO()
    view = progress.JsonLines(out)
    status = progress.RunStatus("lab-dc1")
    for event in _events():
        status.update(event)
        view.show(event, status)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == len(_events())
    assert records[-1]["event"] == "operation_end" and records[-1]["done"] == 2
    assert all(r["stack"] == "lab-dc1" and r["total"] in (0, 4) for r in records)


def test_the_live_line_rewrites_itself_and_keeps_notes_above() -> None:
    out = io.StringIO()
    view = progress.LiveLine(out)
    status = progress.RunStatus("lab-dc1")
    for event in _events():
        status.update(event)
        view.show(event, status)
    view.close(status)
    text = out.getvalue()
    assert "preparing (2 host(s))" in text
    assert "  roll: waiting up to 60 s: dc1-n2 is not streaming\n" in text
    assert "\n" not in text.replace("  roll: waiting up to 60 s: dc1-n2 is not streaming\n", "")
    assert text.endswith("\r\x1b[K")


def test_auto_is_plain_lines_when_not_a_terminal() -> None:
    assert isinstance(progress.make_view("auto", io.StringIO()), progress.PlainLines)
    assert progress.make_view("off", io.StringIO()) is None
    assert isinstance(progress.make_view("json", io.StringIO()), progress.JsonLines)


def test_the_tail_shows_events_written_while_it_follows_and_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.PROGRESS_FILE_VARIABLE, str(path))
    shown: list[str] = []

    class Recorder:
        def show(self, event: progress.Event, status: progress.RunStatus) -> None:
            shown.append(str(event["event"]))

        def tick(self, status: progress.RunStatus) -> None:
            pass

        def close(self, status: progress.RunStatus) -> None:
            shown.append("closed")

    def child() -> None:
        for event in _events():
            progress.emit(event)
            time.sleep(0.01)

    with progress.ProgressTail(path, Recorder(), progress.RunStatus("s"), interval=0.01):
        writer = threading.Thread(target=child)
        writer.start()
        writer.join()
    assert shown == [str(e["event"]) for e in _events()] + ["closed"]


def test_no_events_without_a_progress_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.PROGRESS_FILE_VARIABLE, raising=False)
    state = SimpleNamespace(callback_handlers=[])
    progress.register(state, "dc1-n1")
    progress.emit({"event": "note"})  # nowhere to go: nothing, no error
    assert state.callback_handlers == []


class _Host:
    def __init__(self, name: str) -> None:
        self.name = name


class _Meta:
    def __init__(self, changed: bool, succeeded: bool = True) -> None:
        self.changed, self.succeeded = changed, succeeded

    def is_complete(self) -> bool:
        return True

    def did_succeed(self) -> bool:
        return self.succeeded

    def did_change(self) -> bool:
        return self.changed


def test_the_callbacks_report_changed_and_failed_hosts_once_per_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.PROGRESS_FILE_VARIABLE, str(path))
    hosts = [_Host(n) for n in ("dc1-n1", "dc1-n2", "dc1-n3")]
    metas = {"dc1-n1": _Meta(True), "dc1-n2": _Meta(False), "dc1-n3": _Meta(False, False)}
    ops: dict[Any, Any] = {h: {"op1": SimpleNamespace(operation_meta=metas[h.name])} for h in hosts}
    state = SimpleNamespace(
        callback_handlers=[],
        op_meta={"op1": SimpleNamespace(names={"Configure Patroni"})},
        ops=ops,
        inventory=SimpleNamespace(iter_activated_hosts=lambda: hosts),
        get_op_order=lambda: ["op0", "op1"],
    )
    progress.register(state, "dc1-n1")
    progress.register(state, "dc1-n2")
    assert len(state.callback_handlers) == 1  # deploy.py runs per host; one handler
    handler = state.callback_handlers[0]
    handler.operation_start(state, "op1")
    handler.operation_end(state, "op1")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in events] == [
        "prepare",
        "prepare",
        "operation_start",
        "operation_end",
    ]
    end = events[-1]
    assert (end["index"], end["total"], end["operation"]) == (2, 2, "Configure Patroni")
    assert end["changed"] == ["dc1-n1"] and end["failed"] == ["dc1-n3"]


def test_the_live_line_keeps_its_clock_moving_between_events() -> None:
    out = io.StringIO()
    view = progress.LiveLine(out)
    status = progress.RunStatus("lab-dc1")
    status.update({"event": "operation_start", "operation": "Install packages", "total": 4})
    status.started -= 75.0  # an operation running for over a minute, no event since
    view.tick(status)
    assert out.getvalue().endswith("lab-dc1 [  0/  4] 01:15 Install packages")
