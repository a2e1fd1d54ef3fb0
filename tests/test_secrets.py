from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from plinth.passphrase import PassphraseMissing, get_passphrase
from plinth.secrets import SecretsError, SecretStore, SecretValue

PASSPHRASE = "s3cret passphrase"


@pytest.fixture(scope="module")
def secrets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("env") / "secrets.json"
    store = SecretStore(path, PASSPHRASE)
    store.set("postgres.superuser", "hunter2-correct")
    store.set("redis.acl", "redis-value")
    return path


def test_round_trip_and_format(secrets_file: Path, tmp_path: Path) -> None:
    store = SecretStore(secrets_file, PASSPHRASE)
    assert store.names() == ["postgres.superuser", "redis.acl"]
    assert store.get("postgres.superuser").reveal() == "hunter2-correct"
    data = json.loads(secrets_file.read_text())
    assert data["version"] == 1
    assert data["kdf"] | {"salt": None} == {
        "name": "scrypt",
        "salt": None,
        "n": 2**17,
        "r": 8,
        "p": 1,
    }
    assert set(data["check"]) == set(data["secrets"]["redis.acl"]) == {"nonce", "ciphertext"}
    assert "hunter2" not in secrets_file.read_text()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert not list(secrets_file.parent.glob("*.tmp"))


def test_wrong_passphrase(secrets_file: Path) -> None:
    before = secrets_file.read_bytes()
    with pytest.raises(SecretsError, match="wrong PLINTH_PASSPHRASE") as info:
        SecretStore(secrets_file, "not it")
    assert str(secrets_file) in str(info.value)
    assert secrets_file.read_bytes() == before


def test_swapped_ciphertexts_detected(secrets_file: Path, tmp_path: Path) -> None:
    data = json.loads(secrets_file.read_text())
    entries = data["secrets"]
    entries["redis.acl"], entries["postgres.superuser"] = (
        entries["postgres.superuser"],
        entries["redis.acl"],
    )
    swapped = tmp_path / "secrets.json"
    swapped.write_text(json.dumps(data))
    with pytest.raises(SecretsError, match="copied from another name"):
        SecretStore(swapped, PASSPHRASE)


def test_tampered_ciphertext_detected(secrets_file: Path, tmp_path: Path) -> None:
    data = json.loads(secrets_file.read_text())
    raw = bytearray(base64.b64decode(data["secrets"]["redis.acl"]["ciphertext"]))
    raw[0] ^= 1
    data["secrets"]["redis.acl"]["ciphertext"] = base64.b64encode(raw).decode()
    tampered = tmp_path / "secrets.json"
    tampered.write_text(json.dumps(data))
    with pytest.raises(SecretsError, match=r"redis\.acl"):
        SecretStore(tampered, PASSPHRASE)


def test_value_never_leaks_through_formatting(secrets_file: Path) -> None:
    value = SecretStore(secrets_file, PASSPHRASE).get("postgres.superuser")
    for text in (
        repr(value),
        str(value),
        f"{value}",
        f"{value!r}",
        "{}".format(value),  # noqa: UP032 - str.format is a separate path
        str([value]),
    ):
        assert "hunter2" not in text
    assert repr(value) == "<secret postgres.superuser>"
    assert value == SecretValue("postgres.superuser", "hunter2-correct")


def test_generate_and_ensure(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json", PASSPHRASE)
    fernet = store.generate("airflow.fernet_key", alphabet="fernet").reveal()
    assert len(base64.urlsafe_b64decode(fernet)) == 32
    assert len(store.generate("h", nbytes=16, alphabet="hex").reveal()) == 32
    assert store.ensure("minio.root", "urlsafe") is True
    first = store.get("minio.root").reveal()
    assert store.ensure("minio.root", "urlsafe") is False
    reopened = SecretStore(tmp_path / "s.json", PASSPHRASE)
    assert reopened.get("minio.root").reveal() == first
    assert reopened.get("airflow.fernet_key").reveal() == fernet


def test_errors(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.json", PASSPHRASE)
    with pytest.raises(SecretsError, match=r"no secret named 'nope'"):
        store.get("nope")
    with pytest.raises(SecretsError, match="invalid secret name"):
        store.set("../x", "v")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SecretsError, match="cannot read"):
        SecretStore(tmp_path / "bad.json", PASSPHRASE)


def test_passphrase_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLINTH_PASSPHRASE", "from-env")
    assert get_passphrase("prod", False, tmp_path) == "from-env"
    assert get_passphrase("lab", True, tmp_path) == "from-env"
    assert not (tmp_path / "passphrase").exists()


def test_passphrase_missing_outside_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PLINTH_PASSPHRASE", raising=False)
    with pytest.raises(PassphraseMissing, match=r"PLINTH_PASSPHRASE.*'prod'"):
        get_passphrase("prod", False, tmp_path)


def test_lab_passphrase_created_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PLINTH_PASSPHRASE", raising=False)
    state = tmp_path / ".lab"
    first = get_passphrase("lab", True, state)
    assert len(first) >= 40
    assert stat.S_IMODE((state / "passphrase").stat().st_mode) == 0o600
    assert get_passphrase("lab", True, state) == first
