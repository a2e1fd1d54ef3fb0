"""One passphrase per environment protects everything it keeps encrypted in the repository:
the CA keys (``pki/root.key.enc``, ``pki/<dc>/intermediate.key.enc``) and ``secrets.json``.

Every command that writes any of them first calls :func:`prove_passphrase`: the passphrase
must open every one that already exists, otherwise the command stops before writing, so a
typo can never leave an environment with files under two passphrases. When nothing exists
yet the passphrase is being chosen now, and only then must it meet the strength rule
(:func:`plinth.passphrase.check_new_passphrase`).

Files written by earlier plinth versions (CA keys under PBKDF2 with 2,048 iterations,
``secrets.json`` under scrypt n=2^15) keep opening; :func:`weak_protection` names them and
:func:`rekey` (``plinth pki rekey ENV``) rewrites them at the strong cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from plinth.passphrase import check_new_passphrase
from plinth.pki import PkiError, PkiStore, pkcs8
from plinth.pki.fs import StagedWrites, locked
from plinth.pki.kdf import STRONG
from plinth.pki.store import encrypt_key
from plinth.secrets import SecretStore, stored_cost

SECRETS_FILE = "secrets.json"

KeyOpener = Callable[[str], ec.EllipticCurvePrivateKey]


def prove_passphrase(state_dir: Path, environment: str, passphrase: str) -> list[str]:
    """Open every CA key and ``secrets.json`` of the environment with ``passphrase``.

    Raises :class:`~plinth.pki.PkiError` or :class:`~plinth.secrets.SecretsError` naming the
    first file that does not open, and :class:`~plinth.passphrase.WeakPassphrase` when there
    is nothing to open and the passphrase is too weak to be chosen. Returns the files opened
    (relative to ``state_dir``). Reads only; the scrypt keys it derives are cached, so the
    write that follows pays nothing more.
    """
    store = PkiStore(state_dir)
    opened: list[str] = []
    for path, open_key in _ca_keys(store):
        open_key(passphrase)
        opened.append(store.rel(path))
    secrets = state_dir / SECRETS_FILE
    if secrets.exists():
        SecretStore(secrets, passphrase)
        opened.append(SECRETS_FILE)
    if not opened:
        check_new_passphrase(passphrase, environment)
    return opened


def weak_protection(state_dir: Path, environment: str) -> list[str]:
    """One warning per file encrypted more cheaply than the rule asks (no passphrase needed)."""
    store = PkiStore(state_dir)
    weak: list[tuple[str, str]] = []
    for path, _ in _ca_keys(store):
        protection = store.key_protection(path)
        if protection.weak:
            weak.append((store.rel(path), protection.description))
    cost = stored_cost(state_dir / SECRETS_FILE)
    if cost is not None and cost.weak:
        weak.append((SECRETS_FILE, cost.describe()))
    return [
        f"{shown} is encrypted with {how}, weaker than {STRONG.describe()}: run "
        f"`plinth pki rekey {environment}` and commit the result"
        for shown, how in weak
    ]


def rekey(state_dir: Path, environment: str, passphrase: str) -> list[str]:
    """Rewrite every weakly encrypted CA key and ``secrets.json`` at the strong cost.

    Everything is opened first (a wrong passphrase or a damaged file stops it before any
    write), re-encrypted in memory under fresh salts, checked to decrypt back to the same key,
    then written together: each file goes to a 0600 temporary sibling, is fsynced, and only
    then renamed over the old one. A crash leaves every file either old or new, and both
    open with the same passphrase. Returns the files rewritten (relative to ``state_dir``).
    """
    store = PkiStore(state_dir)
    staged = StagedWrites()
    with locked(store.pki_dir):
        prove_passphrase(state_dir, environment, passphrase)
        for path, open_key in _ca_keys(store):
            if not store.key_protection(path).weak:
                continue
            key = open_key(passphrase)
            sealed = encrypt_key(key, passphrase)
            again = pkcs8.unseal(sealed, passphrase)
            if again.private_numbers() != key.private_numbers():
                raise PkiError(
                    f"re-encrypting {store.rel(path)} did not round-trip; nothing written"
                )
            staged.add(path, sealed, 0o600)
        secrets_path = state_dir / SECRETS_FILE
        if secrets_path.exists():
            secrets = SecretStore(secrets_path, passphrase)
            if secrets.cost.weak:
                staged.add(secrets_path, secrets.rekeyed(passphrase), 0o600)
        try:
            staged.commit()
        except OSError as exc:
            raise PkiError(f"cannot write under {state_dir}: {exc.strerror}") from None
    return [store.rel(path) for path in staged.files]


def _ca_keys(store: PkiStore) -> list[tuple[Path, KeyOpener]]:
    """Every CA key file present, with the function that opens it and checks it against its
    certificate: the root's (absent when kept offline), then each datacenter's."""
    keys: list[tuple[Path, KeyOpener]] = []
    if store.root_key_path.exists():
        keys.append((store.root_key_path, store.root_key))
    for dc in store.datacenters():
        path = store.intermediate_key_path(dc)
        if path.exists():
            keys.append((path, functools.partial(_intermediate_key, store, dc)))
    return keys


def _intermediate_key(store: PkiStore, dc: str, passphrase: str) -> ec.EllipticCurvePrivateKey:
    return store.intermediate_key(dc, passphrase)
