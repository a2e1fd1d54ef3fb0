"""Progress of a pyinfra run while it applies: events from inside it, views outside.

``plinth up`` runs pyinfra as a child process. Inside it, ``deploy.py`` registers
:class:`ProgressEvents` (pyinfra's own state callbacks) when ``PLINTH_PROGRESS_FILE``
names a file; each event is one JSON line appended to that file. Gates and rolls add
``note`` events (what they wait for). Outside, :class:`ProgressTail` follows the file
and hands each event to a view: a live line on a terminal, plain lines in a CI log, or
JSON lines for machines. Events carry names and counts only, never command text or file
contents (those may hold secrets).

The lab (``plinth lab up``, ``snapshot``, ``restore``) runs in the command's own process,
in threads: :func:`reporting` gives it a progress file and a tail for the block, and its
code emits ``phase_start``/``phase_end`` (what the command does, and how long it took),
``step`` (one thing done: a network created, a container started), ``wait``/``wait_end``
(:class:`Waiting`: what a long wait waits for, and how it ended) and ``warning`` events.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

PROGRESS_FILE_VARIABLE = "PLINTH_PROGRESS_FILE"

Event = dict[str, Any]


def _progress_file() -> str | None:
    return os.environ.get(PROGRESS_FILE_VARIABLE) or None


def emit(event: Event) -> None:
    """Append ``event`` to the progress file, if this run has one (else nothing)."""
    path = _progress_file()
    if path is None:
        return
    line = json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True) + "\n"
    # O_APPEND: one small write per event, whole lines even from several greenlets.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def note(host: str, text: str) -> None:
    """A gate or roll says what it does or waits for (``host``: where it runs, or the
    cluster's name when it is not one host's; in the lab, the phase's when no host's)."""
    emit({"event": "note", "host": host, "text": text})


def step(host: str, text: str) -> None:
    """One thing done on the way (a network created, a container started): a line of its
    own in a CI log, only the current activity on the live line."""
    emit({"event": "step", "host": host, "text": text})


def warning(host: str, text: str) -> None:
    """Something the operator should know even if the command succeeds. Without a
    progress file (``--progress off``, or a caller that shows none) it goes to stderr."""
    if _progress_file() is None:
        print(f"warning: {host}: {text}", file=sys.stderr, flush=True)
        return
    emit({"event": "warning", "host": host, "text": text})


def phase_start(name: str, text: str = "") -> None:
    emit({"event": "phase_start", "phase": name, "text": text})


def phase_end(name: str, seconds: float) -> None:
    emit({"event": "phase_end", "phase": name, "seconds": round(seconds, 1)})


class Waiting:
    """A long wait that says what it waits for: a ``wait`` event when what it waits on
    changes (``update(text)``), and again every ``every`` seconds while it lasts, so a CI
    log shows it is still waiting; ``end(text)`` says how it ended. A live view counts
    the seconds itself between events."""

    def __init__(self, host: str, every: float = 15.0) -> None:
        self.host = host
        self.every = every
        self.started = time.monotonic()
        self._text: str | None = None
        self._emitted: float | None = None

    @property
    def waited(self) -> float:
        return time.monotonic() - self.started

    def update(self, text: str, changed: bool = True) -> None:
        """``changed=False``: ``text`` is detail that changes all the time (a package
        being unpacked): shown at the next periodic event, not on its own."""
        now = time.monotonic()
        due = self._emitted is None or now - self._emitted >= self.every
        if due or (changed and text != self._text):
            self._text, self._emitted = text, now
            emit({"event": "wait", "host": self.host, "text": text, "waited": round(self.waited)})

    def end(self, text: str) -> None:
        emit({"event": "wait_end", "host": self.host, "text": text, "waited": round(self.waited)})


def _operation_name(state: Any, op_hash: str) -> str:
    meta = state.op_meta[op_hash]
    return ", ".join(sorted(meta.names)) or op_hash


def _operation_fields(state: Any, op_hash: str) -> Event:
    """The operation's name and its place in the run, as every operation event carries."""
    order = state.get_op_order()
    return {
        "operation": _operation_name(state, op_hash),
        "index": order.index(op_hash) + 1,
        "total": len(order),
    }


class ProgressEvents:
    """pyinfra state callbacks (duck-typed like ``BaseStateCallback``) writing events."""

    @staticmethod
    def host_before_connect(state: Any, host: Any) -> None:
        pass

    @staticmethod
    def host_connect(state: Any, host: Any) -> None:
        pass

    @staticmethod
    def host_connect_error(state: Any, host: Any, error: Any) -> None:
        emit({"event": "host_error", "host": host.name, "text": f"cannot connect: {error}"})

    @staticmethod
    def host_disconnect(state: Any, host: Any) -> None:
        pass

    @staticmethod
    def operation_start(state: Any, op_hash: str) -> None:
        emit({"event": "operation_start", **_operation_fields(state, op_hash)})

    @staticmethod
    def operation_host_start(state: Any, host: Any, op_hash: str) -> None:
        pass

    @staticmethod
    def operation_host_success(state: Any, host: Any, op_hash: str, retry_count: int = 0) -> None:
        pass

    @staticmethod
    def operation_host_error(
        state: Any, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        emit(
            {
                "event": "host_error",
                "host": host.name,
                "text": f"{_operation_name(state, op_hash)} failed",
            }
        )

    @staticmethod
    def operation_host_retry(
        state: Any, host: Any, op_hash: str, retry_num: int, max_retries: int
    ) -> None:
        pass

    @staticmethod
    def operation_end(state: Any, op_hash: str) -> None:
        changed, failed = [], []
        for host in state.inventory.iter_activated_hosts():
            if op_hash not in state.ops[host]:
                continue
            meta = state.ops[host][op_hash].operation_meta
            if not meta.is_complete():
                continue
            if not meta.did_succeed():
                failed.append(host.name)
            elif meta.did_change():
                changed.append(host.name)
        emit(
            {
                "event": "operation_end",
                **_operation_fields(state, op_hash),
                "changed": sorted(changed),
                "failed": sorted(failed),
            }
        )


def register(state: Any, host_name: str) -> None:
    """Called by deploy.py for each host while pyinfra prepares: add the callbacks once
    (deploy.py runs once per host) and say that this host's facts are being read."""
    if _progress_file() is None:
        return
    if not any(isinstance(h, ProgressEvents) for h in state.callback_handlers):
        state.callback_handlers.append(ProgressEvents())
    emit({"event": "prepare", "host": host_name})


# ---- the controller's side: follow the file, show the events ----


class View(Protocol):
    def show(self, event: Event, status: RunStatus) -> None: ...

    def tick(self, status: RunStatus) -> None:
        """Called every poll without an event: a live view keeps its clock moving while an
        operation runs for minutes (packages installing, a roll waiting)."""

    def close(self, status: RunStatus) -> None: ...


@dataclass
class RunStatus:
    """What the events so far add up to: counts, elapsed time and an estimate of the rest."""

    stack: str
    started: float = field(default_factory=time.monotonic)
    executing_since: float | None = None
    done: int = 0
    total: int = 0
    changed: int = 0
    current: str = ""
    prepared_hosts: list[str] = field(default_factory=list)
    last_note: str = ""
    phase: str = ""
    """The lab's phase under way ("" between phases, and in a pyinfra run)."""
    phases: dict[str, float] = field(default_factory=dict)
    waits: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Waits under way: who waits -> (for what, since when on the monotonic clock)."""

    def update(self, event: Event) -> None:
        kind = event.get("event")
        if kind == "phase_start":
            self.phase = str(event.get("phase", ""))
            self.last_note = ""
        elif kind == "phase_end":
            self.phases[str(event.get("phase"))] = float(event.get("seconds", 0.0))
            self.phase = ""
            self.last_note = ""
            self.waits.clear()
        elif kind == "wait":
            since = time.monotonic() - float(event.get("waited", 0.0))
            self.waits[str(event.get("host"))] = (str(event.get("text")), since)
        elif kind == "wait_end":
            self.waits.pop(str(event.get("host")), None)
            self.last_note = self._about(event)
        elif kind == "step":
            self.last_note = self._about(event)
        elif kind == "prepare":
            self.prepared_hosts.append(str(event.get("host")))
        elif kind == "operation_start":
            if self.executing_since is None:
                self.executing_since = time.monotonic()
            self.total = int(event.get("total", self.total))
            self.current = str(event.get("operation", ""))
            self.last_note = ""
        elif kind == "operation_end":
            self.done = int(event.get("index", self.done))
            self.total = int(event.get("total", self.total))
            self.changed += len(event.get("changed", []))
        elif kind == "note":
            self.last_note = f"{event.get('host')}: {event.get('text')}"

    def _about(self, event: Event) -> str:
        """``host: text``, or the text alone when it is about the phase under way."""
        host, text = event.get("host"), event.get("text")
        return str(text) if host == self.phase else f"{host}: {text}"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left, from the pace of the operations so far (None before any ended).
        Operations differ a lot in cost (a roll waits, a file write does not), so this is
        a pace, not a promise."""
        if self.executing_since is None or self.done == 0 or self.total == 0:
            return None
        pace = (time.monotonic() - self.executing_since) / self.done
        return pace * (self.total - self.done)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def _waits(status: RunStatus) -> str:
    """``waiting for dc1-n2: systemd starting (12 s), ...``: the longest wait first."""
    now = time.monotonic()
    parts = [
        f"{who}: {text} ({now - since:.0f} s)"
        for who, (text, since) in sorted(status.waits.items(), key=lambda item: item[1][1])
    ]
    return "waiting for " + ", ".join(parts)


def _position(status: RunStatus) -> str:
    eta = status.eta()
    left = f", ETA {_clock(eta)}" if eta is not None else ""
    return f"[{status.done:>3}/{status.total or '?':>3}] {_clock(status.elapsed)}{left}"


class PlainLines:
    """One line per finished operation and per note: for CI logs (no cursor tricks)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.prepare_announced = False

    def show(self, event: Event, status: RunStatus) -> None:
        kind = event.get("event")
        line = None
        if kind == "prepare" and not self.prepare_announced:
            self.prepare_announced = True
            line = f"{status.stack}: reading facts and preparing operations"
        elif kind == "operation_end":
            changed = event.get("changed") or []
            failed = event.get("failed") or []
            what = "no change"
            if changed:
                what = f"changed on {', '.join(changed)}"
            if failed:
                what = f"FAILED on {', '.join(failed)}" + (f"; {what}" if changed else "")
            line = f"{status.stack} {_position(status)} {event.get('operation')}: {what}"
        elif kind in ("note", "host_error", "step"):
            where = f"{status.stack} {_clock(status.elapsed)} {event.get('host')}"
            line = f"{where}: {event.get('text')}"
        elif kind == "warning":
            where = f"{status.stack} {_clock(status.elapsed)} {event.get('host')}"
            line = f"{where}: warning: {event.get('text')}"
        elif kind == "phase_start":
            text = event.get("text") or "started"
            line = f"{status.stack} {_clock(status.elapsed)} {event.get('phase')}: {text}"
        elif kind == "phase_end":
            where = f"{status.stack} {_clock(status.elapsed)} {event.get('phase')}"
            line = f"{where}: done in {float(event.get('seconds', 0.0)):.1f} s"
        elif kind == "wait":
            where = f"{status.stack} {_clock(status.elapsed)} waiting for {event.get('host')}"
            line = f"{where}: {event.get('text')} ({event.get('waited')} s)"
        elif kind == "wait_end":
            where = f"{status.stack} {_clock(status.elapsed)} {event.get('host')}"
            line = f"{where}: {event.get('text')} (after {event.get('waited')} s)"
        if line is not None:
            print(line, file=self.out, flush=True)

    def tick(self, status: RunStatus) -> None:
        pass

    def close(self, status: RunStatus) -> None:
        pass


class LiveLine:
    """One line rewritten in place on a terminal; notes and failures stay above it."""

    def __init__(self, out: TextIO, width: int = 118) -> None:
        self.out = out
        self.width = width

    def show(self, event: Event, status: RunStatus) -> None:
        kind = event.get("event")
        if kind in ("note", "host_error", "warning"):
            self._clear()
            warn = "warning: " if kind == "warning" else ""
            print(f"  {event.get('host')}: {warn}{event.get('text')}", file=self.out)
        self.tick(status)

    def tick(self, status: RunStatus) -> None:
        if status.total:
            doing = status.current + (f" — {status.last_note}" if status.last_note else "")
            text = f"{status.stack} {_position(status)} {doing}"
        elif status.phase:
            doing = _waits(status) if status.waits else status.last_note
            text = f"{status.stack} {_clock(status.elapsed)} {status.phase}"
            text += f" — {doing}" if doing else ""
        elif status.phases:  # between two of the lab's phases
            name, seconds = list(status.phases.items())[-1]
            text = f"{status.stack} {_clock(status.elapsed)} {name} done in {seconds:.1f} s"
        else:
            hosts = len(status.prepared_hosts)
            text = f"{status.stack} {_clock(status.elapsed)} preparing ({hosts} host(s))"
        self.out.write("\r\x1b[K" + text[: self.width])
        self.out.flush()

    def _clear(self) -> None:
        self.out.write("\r\x1b[K")

    def close(self, status: RunStatus) -> None:
        self._clear()
        self.out.flush()


class JsonLines:
    """Each event as one JSON line, with the run's counts and estimate added."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def show(self, event: Event, status: RunStatus) -> None:
        eta = status.eta()
        enriched = {
            **event,
            "stack": status.stack,
            "done": status.done,
            "total": status.total,
            "elapsed": round(status.elapsed, 1),
            "eta": None if eta is None else round(eta, 1),
        }
        print(json.dumps(enriched, sort_keys=True), file=self.out, flush=True)

    def tick(self, status: RunStatus) -> None:
        pass

    def close(self, status: RunStatus) -> None:
        pass


def make_view(mode: str, out: TextIO | None = None) -> View | None:
    """``auto``: a live line on a terminal, plain lines otherwise; ``off``: nothing."""
    stream = out or sys.stderr
    if mode == "off":
        return None
    if mode == "json":
        return JsonLines(stream)
    if mode == "plain" or (mode == "auto" and not stream.isatty()):
        return PlainLines(stream)
    return LiveLine(stream)


@contextmanager
def reporting(view: View | None, status: RunStatus) -> Iterator[None]:
    """Show on ``view`` the events this process emits while the block runs (the lab's
    phases run here, in threads, not in a pyinfra child): they go through a progress file
    and a :class:`ProgressTail` as a child's do, so one thread draws the view. No view
    (``--progress off``): no file, and the block's events go nowhere."""
    if view is None:
        yield
        return
    previous = os.environ.get(PROGRESS_FILE_VARIABLE)
    with tempfile.TemporaryDirectory(prefix="plinth-progress-") as scratch:
        path = Path(scratch) / "events.jsonl"
        os.environ[PROGRESS_FILE_VARIABLE] = str(path)
        try:
            with ProgressTail(path, view, status):
                yield
        finally:
            if previous is None:
                os.environ.pop(PROGRESS_FILE_VARIABLE, None)
            else:
                os.environ[PROGRESS_FILE_VARIABLE] = previous


class ProgressTail:
    """Follow the progress file of a running child on a thread and feed the view."""

    def __init__(self, path: Path, view: View, status: RunStatus, interval: float = 0.2) -> None:
        self.path = path
        self.view = view
        self.status = status
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._offset = 0
        self._partial = b""

    def __enter__(self) -> ProgressTail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()  # what was written between the last poll and the child's exit
        self.view.close(self.status)

    def _follow(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self.view.tick(self.status)
            self._stop.wait(self.interval)

    def _drain(self) -> bool:
        """Show what was appended since the last read; whether there was anything."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return False
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for raw in lines:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a line cut by a crash of the child: nothing to show
            self.status.update(event)
            self.view.show(event, self.status)
        return bool(chunk)
