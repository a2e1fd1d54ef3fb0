"""Config files that are validated by their daemon before they replace the live one.

A broken haproxy, nginx, squid or keepalived configuration must never reach the
path the daemon reads: the candidate is uploaded beside it, checked with the
daemon's own parser, and only then moved into place.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Generator
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.facts.files import File, Sha1File

from plinth.reasons import explain_change

CANDIDATE_SUFFIX = ".plinth-candidate"


@operation()
def checked_file(
    path: str,
    src: StringIO,
    check: str,
    mode: str = "644",
    user: str = "root",
    group: str = "root",
) -> Generator[StringCommand | FileUploadCommand, None, None]:
    """``src`` at ``path``, after ``check`` accepted it.

    + path: the live configuration file
    + src: its wanted content
    + check: the daemon's config check with ``{path}`` standing for the file to check,
      e.g. ``haproxy -c -f {path}``; exit 0 means valid
    + mode, user, group: the live file's permissions

    When the check fails, the operation fails, the live file is untouched and the
    candidate is removed. Content is compared by sha1, so secrets in the file never
    appear in logs or plans.
    """
    wanted = src.getvalue()
    current_sha = host.get_fact(Sha1File, path=path)
    info = host.get_fact(File, path=path)
    content_changed = current_sha != hashlib.sha1(wanted.encode()).hexdigest()
    mode_changed = isinstance(info, dict) and (
        str(info.get("mode")) != mode.lstrip("0")
        or info.get("user") != user
        or info.get("group") != group
    )
    if not content_changed and not mode_changed:
        host.noop(f"{path} already up to date")
        return
    if not content_changed:
        explain_change(f"{path}: owner or mode differ")
        yield StringCommand("chown", f"{user}:{group}", path)
        yield StringCommand("chmod", mode, path)
        return
    explain_change(f"{path}: content differs" if current_sha else f"{path}: missing")
    if "{path}" not in check:
        raise OperationError(f"check command for {path} must contain {{path}}: {check!r}")
    candidate = path + CANDIDATE_SUFFIX
    yield FileUploadCommand(StringIO(wanted), candidate)
    yield StringCommand("chown", f"{user}:{group}", candidate)
    yield StringCommand("chmod", mode, candidate)
    q_candidate = shlex.quote(candidate)
    checked = check.replace("{path}", q_candidate)
    # On failure: remove the candidate, print the checker's verdict, fail the host.
    yield StringCommand(
        f"if ! out=$({checked} 2>&1); then rm -f {q_candidate}; "
        f'echo "config check failed for {path}: $out" >&2; exit 1; fi'
    )
    yield StringCommand("mv", "-f", candidate, path)
