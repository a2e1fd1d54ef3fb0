"""Generated secrets, stored encrypted in the repository (``inventory/<env>/secrets.json``).

Format::

    {"version": 1,
     "kdf": {"name": "scrypt", "salt": "<b64>", "n": 131072, "r": 8, "p": 1},
     "check": {"nonce": "<b64>", "ciphertext": "<b64>"},
     "secrets": {"<name>": {"nonce": "<b64>", "ciphertext": "<b64>"}}}

Each value is AES-256-GCM encrypted with a key derived from the passphrase by scrypt (the
cost rule of :mod:`plinth.pki.kdf`, shared with the CA keys); the secret's name is the
associated data, so a ciphertext copied under another name fails to decrypt instead of
silently handing one service another's password. Names stay in clear so diffs show which
secret changed, never its value. ``check`` encrypts nothing under the same key, so even a
file without secrets proves the passphrase (older files lack it; earlier plinth versions
ignore it). Files written with n=32768 by earlier versions still open; ``plinth pki rekey``
rewrites them at the strong cost.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets as _random
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from plinth.pki.fs import atomic_write
from plinth.pki.kdf import SALT_LENGTH, STRONG, ScryptCost, derive_key

FORMAT_VERSION = 1
_CHECK_AAD = b"plinth secrets.json passphrase check"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")

Alphabet = Literal["urlsafe", "hex", "fernet"]


class SecretsError(Exception):
    """The secrets file cannot be used; the message names the file, never a value."""


class SecretValue:
    """A secret string that does not leak through ``str()``, ``repr()`` or f-strings.

    Call :meth:`reveal` exactly where the clear value is needed (rendering a config file).
    """

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        return self._name

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"<secret {self._name}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SecretValue)
            and other._name == self._name
            and _random.compare_digest(other._value, self._value)
        )

    def __hash__(self) -> int:
        return hash(self._name)

    def __reduce__(self) -> Any:
        raise TypeError("a SecretValue is not picklable")


class SecretStore:
    """Encrypted name -> value store backed by one JSON file (written 0600, atomically).

    Opening an existing file with the wrong passphrase raises :class:`SecretsError` at once
    (every entry's GCM tag is checked), so a typo never leads to a half-rewritten file.
    """

    def __init__(self, path: Path, passphrase: str) -> None:
        if not passphrase:
            raise SecretsError(f"{path}: empty passphrase")
        self.path = Path(path)
        self._entries: dict[str, dict[str, str]] = {}
        check: dict[str, str] | None = None
        if self.path.exists():
            data = self._load()
            kdf = data["kdf"]
            self._salt = _b64decode(kdf["salt"], self.path)
            try:
                self._cost = ScryptCost(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
                self._cost.check_plausible()
            except (KeyError, TypeError, ValueError):
                raise SecretsError(f"{self.path}: damaged key derivation parameters") from None
            self._entries = data["secrets"]
            check = data.get("check")
        else:
            self._salt = os.urandom(SALT_LENGTH)
            self._cost = STRONG
        self._aead = AESGCM(derive_key(passphrase, self._salt, self._cost))
        if check is not None:
            self._open_check(check)
        for name in self._entries:
            self._decrypt(name)

    @property
    def exists(self) -> bool:
        """Whether the file is on disk (a store for a new file holds nothing yet)."""
        return self.path.exists()

    @property
    def cost(self) -> ScryptCost:
        """The scrypt cost the file's key is derived with (weak ones: ``plinth pki rekey``)."""
        return self._cost

    def rekeyed(self, passphrase: str) -> bytes:
        """The file's content re-encrypted under a fresh salt at the strong cost (not written:
        the caller stages it with the CA keys). ``passphrase`` must be the one that opened it."""
        fresh = SecretStore.__new__(SecretStore)
        fresh.path = self.path
        fresh._salt = os.urandom(SALT_LENGTH)
        fresh._cost = STRONG
        fresh._aead = AESGCM(derive_key(passphrase, fresh._salt, fresh._cost))
        fresh._entries = {}
        for name in self._entries:
            fresh._entries[name] = fresh._encrypt(name, self._decrypt(name))
        fresh._open_check(fresh._new_check())  # the passphrase given is the one just used
        return fresh._serialized()

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> SecretValue:
        if name not in self._entries:
            raise SecretsError(f"{self.path}: no secret named {name!r}")
        return SecretValue(name, self._decrypt(name))

    def set(self, name: str, value: str | SecretValue) -> None:
        """Store ``value`` under ``name`` (replacing any previous value) and save the file."""
        _check_name(name, self.path)
        clear = value.reveal() if isinstance(value, SecretValue) else value
        self._entries[name] = self._encrypt(name, clear)
        self._save()

    def generate(self, name: str, nbytes: int = 32, alphabet: Alphabet = "urlsafe") -> SecretValue:
        """Generate, store and return a random secret.

        ``urlsafe`` and ``hex`` use ``nbytes`` of randomness; ``fernet`` is always the
        url-safe base64 of 32 random bytes, the format Airflow's ``fernet_key`` requires.
        """
        value = random_secret(nbytes, alphabet)
        self.set(name, value)
        return SecretValue(name, value)

    def ensure(self, name: str, kind: Alphabet = "urlsafe", nbytes: int = 32) -> bool:
        """Generate ``name`` if it does not exist yet; return whether it was created."""
        if name in self._entries:
            return False
        self.generate(name, nbytes, kind)
        return True

    def _encrypt(self, name: str, clear: str) -> dict[str, str]:
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, clear.encode(), name.encode())
        return {"nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}

    def _new_check(self) -> dict[str, str]:
        nonce = os.urandom(12)
        return {
            "nonce": _b64(nonce),
            "ciphertext": _b64(self._aead.encrypt(nonce, b"", _CHECK_AAD)),
        }

    def _open_check(self, check: object) -> None:
        try:
            if not isinstance(check, dict):
                raise TypeError
            nonce = _b64decode(check["nonce"], self.path)
            self._aead.decrypt(nonce, _b64decode(check["ciphertext"], self.path), _CHECK_AAD)
        except (InvalidTag, KeyError, TypeError):
            raise SecretsError(
                f"cannot open {self.path}: wrong PLINTH_PASSPHRASE (its passphrase check fails)"
            ) from None

    def _decrypt(self, name: str) -> str:
        entry = self._entries[name]
        try:
            nonce = _b64decode(entry["nonce"], self.path)
            ciphertext = _b64decode(entry["ciphertext"], self.path)
            return self._aead.decrypt(nonce, ciphertext, name.encode()).decode()
        except (InvalidTag, KeyError, TypeError, UnicodeDecodeError):
            raise SecretsError(
                f"cannot decrypt secret {name!r} in {self.path}: wrong PLINTH_PASSPHRASE, "
                "or the entry was edited or copied from another name"
            ) from None

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise SecretsError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise SecretsError(f"{self.path}: unsupported format (expected version 1)")
        kdf = data.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
            raise SecretsError(f"{self.path}: unsupported key derivation (expected scrypt)")
        if not isinstance(data.get("secrets"), dict):
            raise SecretsError(f"{self.path}: 'secrets' must be an object")
        return data

    def _serialized(self) -> bytes:
        data = {
            "version": FORMAT_VERSION,
            "kdf": {
                "name": "scrypt",
                "salt": _b64(self._salt),
                "n": self._cost.n,
                "r": self._cost.r,
                "p": self._cost.p,
            },
            "check": self._new_check(),
            "secrets": {k: self._entries[k] for k in sorted(self._entries)},
        }
        return (json.dumps(data, indent=2) + "\n").encode()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(self.path, self._serialized(), 0o600)
        except OSError as exc:
            raise SecretsError(f"cannot write {self.path}: {exc.strerror}") from None


def stored_cost(path: Path) -> ScryptCost | None:
    """The scrypt cost ``path`` was written with (read without the passphrase), or None when
    there is no file; a damaged file is an error naming it."""
    if not path.exists():
        return None
    try:
        kdf = json.loads(path.read_text())["kdf"]
        return ScryptCost(int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise SecretsError(f"{path}: damaged key derivation parameters") from None


def random_secret(nbytes: int = 32, alphabet: Alphabet = "urlsafe") -> str:
    if alphabet == "fernet":
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    if nbytes < 16:
        raise SecretsError(f"refusing to generate a secret of {nbytes} bytes (minimum 16)")
    if alphabet == "hex":
        return _random.token_hex(nbytes)
    if alphabet == "urlsafe":
        return _random.token_urlsafe(nbytes)
    raise SecretsError(f"unknown alphabet {alphabet!r}; use urlsafe, hex or fernet")


def _check_name(name: str, path: Path) -> None:
    if not _NAME.match(name):
        raise SecretsError(
            f"{path}: invalid secret name {name!r} (lowercase letters, digits, '_', '.', '-')"
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64decode(text: object, path: Path) -> bytes:
    if not isinstance(text, str):
        raise SecretsError(f"{path}: damaged entry (base64 text expected)")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise SecretsError(f"{path}: damaged entry (invalid base64)") from None


__all__ = ["SecretStore", "SecretValue", "SecretsError", "random_secret", "stored_cost"]
