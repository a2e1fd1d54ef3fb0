"""CA keys and secrets at rest: scrypt for new files, the old ones still open, `rekey`
rewrites them, and a passphrase must open what exists before anything new is written."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from plinth import at_rest
from plinth.passphrase import WeakPassphrase, check_new_passphrase
from plinth.pki import PkiError, PkiStore, pkcs8
from plinth.pki.kdf import STRONG, ScryptCost
from plinth.secrets import SecretsError, SecretStore
from tests.pki.conftest import Pki

LEGACY_SECRETS_COST = ScryptCost(2**15, 8, 1)


def _legacy_copy(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pki:
    """The module PKI as an earlier plinth left it: CA keys under PBKDF2 (2,048 iterations,
    cryptography's BestAvailableEncryption) and secrets.json under scrypt n=2^15."""
    target = tmp_path / "legacy"
    shutil.copytree(pki.dir, target)
    store = PkiStore(target)
    for path, key in [
        (store.root_key_path, store.root_key(pki.passphrase)),
        *(
            (store.intermediate_key_path(dc), store.intermediate_key(dc, pki.passphrase))
            for dc in ("dc1", "dc2")
        ),
    ]:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(pki.passphrase.encode()),
            )
        )
    with monkeypatch.context() as patched:
        patched.setattr("plinth.secrets.STRONG", LEGACY_SECRETS_COST)
        secrets = SecretStore(target / "secrets.json", pki.passphrase)
        secrets.set("postgresql-superuser-password", "kept-across-rekey")
    return Pki(target, store)


def test_new_ca_keys_are_standard_pkcs8_with_scrypt(pki: Pki) -> None:
    data = pki.store.root_key_path.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pkcs8.protection(data) == pkcs8.Protection("scrypt n=2^17 r=8 p=1", weak=False)
    # cryptography's own loader reads it: the file is plain PKCS#8 (PBES2, RFC 7914 scrypt)
    key = serialization.load_pem_private_key(data, pki.passphrase.encode())
    assert key.public_key() == pki.root().public_key()
    assert at_rest.weak_protection(pki.dir, "test") == []


def test_legacy_keys_still_open_and_are_reported_weak(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = _legacy_copy(pki, tmp_path, monkeypatch)
    assert pkcs8.protection(legacy.store.root_key_path.read_bytes()) == pkcs8.Protection(
        "PBKDF2 2048 iterations", weak=True
    )
    assert legacy.store.intermediate_key("dc1", pki.passphrase).public_key() == (
        legacy.intermediate().public_key()
    )
    warnings = at_rest.weak_protection(legacy.dir, "test")
    assert warnings[0] == (
        "pki/root.key.enc is encrypted with PBKDF2 2048 iterations, weaker than scrypt "
        "n=2^17 r=8 p=1: run `plinth pki rekey test` and commit the result"
    )
    assert [w.split(" ")[0] for w in warnings] == [
        "pki/root.key.enc",
        "pki/dc1/intermediate.key.enc",
        "pki/dc2/intermediate.key.enc",
        "secrets.json",
    ]
    assert "scrypt n=2^15 r=8 p=1" in warnings[-1]


def test_rekey_rewrites_every_weak_file_and_keeps_what_it_holds(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = _legacy_copy(pki, tmp_path, monkeypatch)
    rewritten = at_rest.rekey(legacy.dir, "test", pki.passphrase)
    assert rewritten == [
        "pki/root.key.enc",
        "pki/dc1/intermediate.key.enc",
        "pki/dc2/intermediate.key.enc",
        "secrets.json",
    ]
    for shown in rewritten:
        path = legacy.dir / shown
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for shown in rewritten[:3]:
        protection = pkcs8.protection((legacy.dir / shown).read_bytes())
        assert protection.description == STRONG.describe() and not protection.weak
    assert legacy.store.root_key(pki.passphrase).public_key() == pki.root().public_key()
    secrets = SecretStore(legacy.dir / "secrets.json", pki.passphrase)
    assert secrets.cost == STRONG
    assert secrets.get("postgresql-superuser-password").reveal() == "kept-across-rekey"
    assert at_rest.weak_protection(legacy.dir, "test") == []
    assert not list(legacy.dir.rglob("*.tmp"))
    assert at_rest.rekey(legacy.dir, "test", pki.passphrase) == []


def test_rekey_with_a_wrong_passphrase_writes_nothing(
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unchanged: Callable[[Path], Callable[[], None]],
) -> None:
    legacy = _legacy_copy(pki, tmp_path, monkeypatch)
    check = unchanged(legacy.dir)
    with pytest.raises(PkiError, match=r"cannot decrypt pki/root.key.enc: wrong PLINTH_PASSPHRASE"):
        at_rest.rekey(legacy.dir, "test", "not the passphrase at all")
    check()


def test_rekey_that_fails_half_way_leaves_every_file_as_it_was(
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unchanged: Callable[[Path], Callable[[], None]],
) -> None:
    legacy = _legacy_copy(pki, tmp_path, monkeypatch)
    check = unchanged(legacy.dir)
    import plinth.pki.fs as fs

    real = fs._write_temp
    calls: list[Path] = []

    def full_disk_on_the_third(path: Path, data: bytes, mode: int) -> Path:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path, data, mode)

    monkeypatch.setattr(fs, "_write_temp", full_disk_on_the_third)
    with pytest.raises(PkiError, match="No space left on device"):
        at_rest.rekey(legacy.dir, "test", pki.passphrase)
    check()


def test_implausible_scrypt_parameters_are_damage_not_a_long_wait(
    pki_copy: Pki,
) -> None:
    key = pki_copy.store.root_key(pki_copy.passphrase)
    sealed = pkcs8.seal(key, pki_copy.passphrase, ScryptCost(2**10, 8, 1))
    assert pkcs8.protection(sealed) == pkcs8.Protection("scrypt n=2^10 r=8 p=1", weak=True)
    body = b"".join(sealed.splitlines()[1:-1])
    der = base64.b64decode(body)
    n_r_p = b"\x02\x02\x04\x00\x02\x01\x08\x02\x01\x01"  # INTEGER 1024, 8, 1
    assert der.count(n_r_p) == 1
    forged = der.replace(n_r_p, b"\x02\x02\x04\x01\x02\x01\x08\x02\x01\x01")  # n=1025
    pem = b"\n".join(
        [sealed.splitlines()[0], base64.b64encode(forged), sealed.splitlines()[-1], b""]
    )
    pki_copy.store.root_key_path.write_bytes(pem)
    with pytest.raises(PkiError, match=r"pki/root.key.enc is damaged"):
        pki_copy.store.root_key(pki_copy.passphrase)
    with pytest.raises(ValueError, match="implausible scrypt parameters"):
        ScryptCost(2**22, 8, 1).check_plausible()


WEAK = [
    ("short-one", "at least 12 characters"),
    ("aaaaaaaaaaaaaaaa", "at least 6 different characters"),
    ("Correct Horse Battery Staple", "well-known"),
    ("abcdefghijklmnop", "run of the alphabet"),
    ("abcabcabcabc", "at least 6 different characters"),
    ("123456789012", "run of the alphabet, digits or a keyboard row"),
    ("987654321098", "run of the alphabet, digits or a keyboard row"),
    ("QWERTYUIOPASDF", "keyboard row"),
    ("example-prod2024", "environment's name"),
]


@pytest.mark.parametrize(("passphrase", "rule"), WEAK)
def test_weak_passphrases_are_refused_naming_the_rule(passphrase: str, rule: str) -> None:
    with pytest.raises(WeakPassphrase, match=rule) as info:
        check_new_passphrase(passphrase, "example-prod")
    assert passphrase not in str(info.value)
    assert "PLINTH_PASSPHRASE" in str(info.value) and "nothing was written" in str(info.value)


@pytest.mark.parametrize(
    "passphrase",
    ["unit-test-passphrase-not-secret", "tundra-violet-73-anchor", "Xq3-pLm9_vR2zK8w"],
)
def test_reasonable_passphrases_pass(passphrase: str) -> None:
    check_new_passphrase(passphrase, "example-prod")


def test_strength_is_only_asked_when_the_passphrase_is_first_chosen(
    pki: Pki, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"
    with pytest.raises(WeakPassphrase):
        at_rest.prove_passphrase(fresh, "test", "short")
    assert not fresh.exists()
    # An environment made before the rule, under a passphrase that would fail it, still opens.
    old = tmp_path / "old"
    SecretStore(old / "secrets.json", "short").set("x", "value")
    assert at_rest.prove_passphrase(old, "test", "short") == ["secrets.json"]
    assert at_rest.prove_passphrase(pki.dir, "test", pki.passphrase) == [
        "pki/root.key.enc",
        "pki/dc1/intermediate.key.enc",
        "pki/dc2/intermediate.key.enc",
    ]


def test_a_passphrase_that_does_not_open_the_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(PkiError, match=r"cannot decrypt pki/root.key.enc"):
        at_rest.prove_passphrase(pki.dir, "test", "a perfectly strong other passphrase")


def test_an_empty_secrets_file_still_proves_its_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    store = SecretStore(path, "first-passphrase-for-this")
    store.set("x", "v")
    data = json.loads(path.read_text())
    data["secrets"] = {}
    path.write_text(json.dumps(data))
    with pytest.raises(SecretsError, match=r"wrong PLINTH_PASSPHRASE \(its passphrase check"):
        SecretStore(path, "another-passphrase-for-this")
    assert SecretStore(path, "first-passphrase-for-this").names() == []
