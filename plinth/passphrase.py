"""Where the passphrase protecting CA keys and secrets comes from."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PASSPHRASE_VARIABLE = "PLINTH_PASSPHRASE"


class PassphraseMissing(Exception):
    """No passphrase for a non-lab environment."""


def get_passphrase(environment: str, is_lab: bool, lab_state_dir: Path) -> str:
    """The passphrase for ``environment``.

    ``PLINTH_PASSPHRASE`` wins when set. A lab environment otherwise gets a random passphrase
    kept in ``lab_state_dir/passphrase`` (created 0600 on first use): the lab is disposable
    and must work without setup. Any other environment without the variable is an error,
    never a silently generated passphrase that would lock the team out of its own secrets.
    """
    value = os.environ.get(PASSPHRASE_VARIABLE)
    if value:
        return value
    if not is_lab:
        raise PassphraseMissing(
            f"{PASSPHRASE_VARIABLE} is not set: environment {environment!r} needs it to "
            "decrypt its CA keys and secrets (export it, e.g. from your password manager)"
        )
    path = lab_state_dir / "passphrase"
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    lab_state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    generated = secrets.token_urlsafe(32)
    try:
        # O_EXCL: if two lab commands start at once, the loser reads the winner's file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(generated + "\n")
    return generated


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise PassphraseMissing(f"{path} is empty: delete it to generate a new lab passphrase")
    return value
