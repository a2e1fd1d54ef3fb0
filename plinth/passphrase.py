"""Where the passphrase protecting CA keys and secrets comes from."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PASSPHRASE_VARIABLE = "PLINTH_PASSPHRASE"
MINIMUM_LENGTH = 12
MINIMUM_DISTINCT_CHARACTERS = 6

# Passphrases a guesser tries first, compared after lower-casing and dropping everything but
# letters and digits ("Correct-Horse battery staple!" is "correcthorsebatterystaple").
_WELL_KNOWN = frozenset(
    {
        "correcthorsebatterystaple",
        "passwordpassword",
        "password1234",
        "password12345",
        "password123456",
        "passphrase123",
        "changemechangeme",
        "letmeinletmein",
        "iloveyouiloveyou",
        "trustno1trustno1",
        "administrator",
        "administrator1",
        "plinthplinth",
        "plinthpassphrase",
        "plinthpassword",
        "secretpassphrase",
        "mysecretpassphrase",
        "thisismypassphrase",
        "qwertyuiopasdfghjkl",
    }
)
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890123456789",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiopasdfghjklyxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
)


class PassphraseMissing(Exception):
    """No passphrase for a non-lab environment."""


class WeakPassphrase(Exception):
    """A passphrase chosen for new encrypted material does not meet the minimum."""


def check_new_passphrase(passphrase: str, environment: str) -> None:
    """Refuse a passphrase that is too weak to protect a new environment's CA and secrets.

    Applied only when the passphrase is first chosen, i.e. when ``environment`` has no CA key
    and no ``secrets.json`` yet; opening existing material never checks it. The rule: at
    least :data:`MINIMUM_LENGTH` characters, at least :data:`MINIMUM_DISTINCT_CHARACTERS`
    different ones, not a well-known passphrase, not a run of the alphabet, digits or a
    keyboard row, and not the environment's name. The message names the rule, never the
    passphrase.
    """
    problem = _weakness(passphrase, environment)
    if problem:
        raise WeakPassphrase(
            f"{PASSPHRASE_VARIABLE} is too weak to protect the new CA keys and secrets of "
            f"{environment!r}: {problem}. Choose another (a random one from your password "
            "manager); nothing was written"
        )


def _weakness(passphrase: str, environment: str) -> str:
    if len(passphrase) < MINIMUM_LENGTH:
        return f"it must have at least {MINIMUM_LENGTH} characters"
    if len(set(passphrase)) < MINIMUM_DISTINCT_CHARACTERS:
        return f"it must use at least {MINIMUM_DISTINCT_CHARACTERS} different characters"
    folded = "".join(c for c in passphrase.lower() if c.isalnum())
    if folded in _WELL_KNOWN:
        return "it is a well-known passphrase"
    if len(folded) >= MINIMUM_LENGTH // 2 and any(
        folded in s or folded in s[::-1] for s in _SEQUENCES
    ):
        return "it is a run of the alphabet, digits or a keyboard row"
    name = "".join(c for c in environment.lower() if c.isalnum())
    if name and folded.strip("0123456789") == name:
        return "it is the environment's name"
    return ""


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
