"""The one edit a DC command makes to the environment file: ``active_datacenter: <dc>``.

Only that top-level line changes (its trailing comment kept); every other byte of the
file stays as the operator wrote it, comments and order included, so the diff to commit
is one line. A file without the key gets it after ``kind:`` (else ``name:``, else at the
top). The result is validated by loading it before it replaces the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from plinth.model import load_environment

_KEY = re.compile(r"^active_datacenter:[ \t]*(?P<value>[^#\n]*?)[ \t]*(?P<comment>#.*)?$", re.M)
_ANCHORS = (re.compile(r"^kind:.*$", re.M), re.compile(r"^name:.*$", re.M))


def with_active_datacenter(text: str, datacenter: str) -> str:
    """``text`` (an environment file) naming ``datacenter`` active."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", datacenter):
        raise ValueError(f"not a datacenter name: {datacenter!r}")
    matches = list(_KEY.finditer(text))
    if len(matches) > 1:
        raise ValueError("active_datacenter appears more than once at the top level")
    if matches:
        match = matches[0]
        comment = match.group("comment")
        line = f"active_datacenter: {datacenter}" + (f"  {comment}" if comment else "")
        return text[: match.start()] + line + text[match.end() :]
    line = f"active_datacenter: {datacenter}\n"
    for anchor in _ANCHORS:
        found = anchor.search(text)
        if found is not None:
            end = found.end() + 1 if found.end() < len(text) else found.end()
            prefix = text[:end] if text[:end].endswith("\n") else text[:end] + "\n"
            return prefix + line + text[end:]
    return line + text


def write_active_datacenter(path: Path, datacenter: str) -> bool:
    """Make ``path`` name ``datacenter`` active; False when it already does (untouched).
    The new text must load as a valid environment naming it, or nothing is written."""
    text = path.read_text()
    new = with_active_datacenter(text, datacenter)
    if new == text:
        return False
    fd, scratch = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(new)
        if load_environment(Path(scratch)).active_site != datacenter:
            raise ValueError(f"{path}: the edited file does not name {datacenter} active")
        os.chmod(scratch, path.stat().st_mode & 0o777)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return True
