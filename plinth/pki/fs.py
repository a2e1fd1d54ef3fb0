"""Crash-safe file writes for CA material, the issuance log and the secrets file.

A half-written CA key or CRL in the repository is worse than none, so every file is written
to a temporary sibling, fsynced and renamed over its target. Multi-file changes are staged
first and only renamed into place once every temporary file is safely on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # fchmod before writing: a secret must never exist with looser permissions, not even
        # for the moment between write and chmod.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new file."""
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def append_line(path: Path, line: str, mode: int = 0o644) -> None:
    """Append one line to an append-only log, durably.

    O_APPEND makes the single write land at the end even if another process appends too;
    the file is never truncated or rewritten.
    """
    if "\n" in line:
        raise ValueError("a log line must not contain a newline")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StagedWrites:
    """Collect several file writes and apply them together, or not at all.

    Nothing touches the disk until :meth:`commit`. If writing any temporary file fails, every
    temporary file and every directory created for them is removed again, so a failed
    operation leaves the tree exactly as it was.
    """

    files: dict[Path, tuple[bytes, int]] = field(default_factory=dict)

    def add(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = (data, mode)

    def commit(self) -> None:
        created_dirs: list[Path] = []
        temps: list[tuple[Path, Path]] = []
        try:
            for path, (data, mode) in self.files.items():
                created_dirs.extend(_make_dirs(path.parent))
                temps.append((_write_temp(path, data, mode), path))
            for tmp, path in temps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for directory in reversed(created_dirs):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
        for directory in {path.parent for path in self.files}:
            _fsync_dir(directory)


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents (0700); return what was created, outermost first."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    created: list[Path] = []
    for path in reversed(missing):
        path.mkdir(mode=0o700)
        created.append(path)
    return created


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the nearest existing directory at or above ``path``.

    Locking a directory instead of a lock file keeps the "nothing created on failure"
    promise: no stray ``.lock`` file appears next to the CA material.
    """
    target = path
    while not target.exists():
        target = target.parent
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
