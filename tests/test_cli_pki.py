"""The pki and secrets commands on a production-like environment (no hosts contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth.cli import main

PASSPHRASE = "unit-test-passphrase-not-secret"


@pytest.fixture()
def project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared example project (tests/conftest.py), with a passphrase for the PKI."""
    monkeypatch.setenv("PLINTH_PASSPHRASE", PASSPHRASE)
    return project


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_production_needs_the_passphrase_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLINTH_PASSPHRASE")
    code, _, err = run("pki", "init", "example-prod")
    assert code == 1
    assert err.strip() == (
        "error: PLINTH_PASSPHRASE is not set: environment 'example-prod' needs it to decrypt "
        "its CA keys and secrets (export it, e.g. from your password manager)"
    )
    assert not (project / "inventory" / "example-prod").exists()


def test_init_is_idempotent_and_client_certificates_work(project: Path) -> None:
    code, out, _ = run("pki", "init", "example-prod")
    assert code == 0 and "created pki/dc2/intermediate.crt" in out
    code, out, _ = run("pki", "init", "example-prod")
    assert code == 0 and "already complete" in out
    code, out, _ = run(
        "pki", "client-cert", "example-prod", "--cn", "grid-etl", "--out", str(project / "client")
    )
    assert code == 0 and (project / "client" / "grid-etl.key").exists()
    code, _, err = run(
        "pki",
        "client-cert",
        "example-prod",
        "--cn",
        "x",
        "--dc",
        "dc9",
        "--out",
        str(project / "c2"),
    )
    assert code == 1 and err.startswith("error: unknown datacenter 'dc9'")


def test_wrong_passphrase_is_one_line_and_writes_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("pki", "init", "example-prod")
    log = project / "inventory" / "example-prod" / "pki" / "issued.jsonl"
    before = log.read_bytes() if log.exists() else b""
    monkeypatch.setenv("PLINTH_PASSPHRASE", "wrong")
    code, _, err = run(
        "pki", "client-cert", "example-prod", "--cn", "app", "--out", str(project / "c")
    )
    assert code == 1 and "wrong PLINTH_PASSPHRASE" in err and len(err.strip().splitlines()) == 1
    assert (log.read_bytes() if log.exists() else b"") == before
    assert not (project / "c" / "app.crt").exists()


def test_secrets_round_trip_without_values_on_the_command_line(project: Path) -> None:
    assert (
        run("secrets", "generate", "example-prod", "airflow-fernet-key", "--kind", "fernet")[0] == 0
    )
    assert run("secrets", "set", "example-prod", "partner-api-token", stdin="tok-123\n")[0] == 0
    code, out, _ = run("secrets", "list", "example-prod")
    assert out.split() == ["airflow-fernet-key", "partner-api-token"]
    assert run("secrets", "get", "example-prod", "partner-api-token")[1].strip() == "tok-123"
    stored = (project / "inventory" / "example-prod" / "secrets.json").read_text()
    assert "tok-123" not in stored
    code, _, err = run("secrets", "generate", "example-prod", "airflow-fernet-key")
    assert code == 1 and "already exists" in err
    code, _, err = run("secrets", "get", "example-prod", "nosuch")
    assert code == 1 and err.startswith("error: ")


def _state(project: Path) -> Path:
    return project / "inventory" / "example-prod"


def test_a_weak_first_passphrase_is_refused_and_nothing_is_written(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLINTH_PASSPHRASE", "hunter2")
    for command in (
        ("pki", "init", "example-prod"),
        ("secrets", "generate", "example-prod", "airflow-fernet-key"),
    ):
        code, _, err = run(*command)
        assert code == 1 and "at least 12 characters" in err and "hunter2" not in err
        assert not _state(project).exists()


def test_secrets_are_not_written_under_a_passphrase_the_ca_refuses(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("pki", "init", "example-prod")[0] == 0
    monkeypatch.setenv("PLINTH_PASSPHRASE", "another-long-passphrase-entirely")
    code, _, err = run("secrets", "generate", "example-prod", "airflow-fernet-key")
    assert code == 1 and "cannot decrypt pki/root.key.enc: wrong PLINTH_PASSPHRASE" in err
    assert not (_state(project) / "secrets.json").exists()
    code, _, err = run("secrets", "set", "example-prod", "token", stdin="value\n")
    assert code == 1 and not (_state(project) / "secrets.json").exists()


def test_the_ca_is_not_created_under_a_passphrase_the_secrets_refuse(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("secrets", "set", "example-prod", "token", stdin="value\n")[0] == 0
    monkeypatch.setenv("PLINTH_PASSPHRASE", "another-long-passphrase-entirely")
    code, _, err = run("pki", "init", "example-prod")
    assert code == 1 and "secrets.json" in err and "wrong PLINTH_PASSPHRASE" in err
    assert not (_state(project) / "pki").exists()


def test_rekey_command_rewrites_old_files_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization

    from plinth.pki import PkiStore

    assert run("pki", "init", "example-prod")[0] == 0
    store = PkiStore(_state(project))
    legacy = store.root_key(PASSPHRASE).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    store.root_key_path.write_bytes(legacy)
    code, out, _ = run("pki", "rekey", "example-prod")
    assert code == 0 and out.strip() == "rekeyed pki/root.key.enc"
    code, out, _ = run("pki", "rekey", "example-prod")
    assert code == 0 and out.startswith("nothing to rekey")


@pytest.mark.parametrize(
    ("cn", "why"),
    [
        ("airflow", "Airflow's identity (components.airflow.identity)"),
        ("AIRFLOW", "Airflow's identity"),
        ("registry-push", "write through the registry virtual host"),
        ("postgres", "a PostgreSQL role Patroni itself logs in as"),
        ("replicator", "the platform issues it to dc1-db1 (its pg-replicator certificate)"),
        ("rewind_user", "its pg-rewind certificate"),
        ("dc1-db1.dc1.grid.plinth.internal", "the platform issues it to dc1-db1 (its host"),
        ("dc2-edge1", "it is the name of host dc2-edge1"),
    ],
)
def test_client_cert_refuses_reserved_identities_and_writes_nothing(
    project: Path, cn: str, why: str
) -> None:
    assert run("pki", "init", "example-prod")[0] == 0
    log = _state(project) / "pki" / "issued.jsonl"
    code, _, err = run(
        "pki", "client-cert", "example-prod", "--cn", cn, "--out", str(project / "c")
    )
    assert code == 1
    assert err.startswith(f"error: client identity {cn!r} is reserved: ") and why in err
    assert "no certificate issued" in err
    assert not log.exists() and not (project / "c").exists()


def test_client_cert_refuses_a_datacenter_the_environment_lacks(project: Path) -> None:
    assert run("pki", "init", "example-prod")[0] == 0
    code, _, err = run(
        "pki",
        "client-cert",
        "example-prod",
        "--cn",
        "app",
        "--dc",
        "dc3",
        "--out",
        str(project / "c"),
    )
    assert code == 1
    assert err.strip() == (
        "error: unknown datacenter 'dc3': environment example-prod has dc1, dc2; no "
        "certificate issued"
    )
    assert not (project / "c").exists()


def test_a_reserved_identity_is_issued_only_when_asked_and_logged_as_such(project: Path) -> None:
    assert run("pki", "init", "example-prod")[0] == 0
    code, _, _ = run(
        "pki",
        "client-cert",
        "example-prod",
        "--cn",
        "registry-push",
        "--reserved-identity",
        "--out",
        str(project / "c"),
    )
    assert code == 0 and (project / "c" / "registry-push.crt").exists()
    log = (_state(project) / "pki" / "issued.jsonl").read_text()
    assert '"service":"client-reserved:registry-push"' in log


def test_reserved_identities_follow_the_model(project: Path) -> None:
    from plinth.certificates import reserved_client_identities
    from plinth.model import load_environment

    env = load_environment(project / "inventory" / "example-prod.yaml")
    reserved = reserved_client_identities(env)
    assert {"postgres", "replicator", "rewind_user", "airflow", "registry-push"} <= set(reserved)
    assert all(env.fqdn(h) in reserved and h.name in reserved for h in env.hosts)
    assert "grid-etl" not in reserved and "plinth_probe" not in reserved


def test_refresh_crl_re_signs_the_root_crl_only_where_the_root_key_is(project: Path) -> None:
    assert run("pki", "init", "example-prod")[0] == 0
    pki = project / "inventory" / "example-prod" / "pki"
    code, out, _ = run("pki", "refresh-crl", "example-prod")
    assert code == 0
    assert "root: CRL number 2" in out and "dc1: CRL number 2" in out
    # The root key kept offline: the DC CRLs are re-signed, the root's is left and said so.
    (pki / "root.key.enc").rename(project / "root.key.enc")
    root_crl = (pki / "root.crl.pem").read_bytes()
    code, out, err = run("pki", "refresh-crl", "example-prod")
    assert code == 0 and "dc2: CRL number 3" in out
    assert "root: not re-signed" in err and "offline" in err
    assert (pki / "root.crl.pem").read_bytes() == root_crl
    code, _, err = run("pki", "revoke-intermediate", "example-prod", "dc2")
    assert code == 1 and "pki/root.key.enc is not here" in err
    (project / "root.key.enc").rename(pki / "root.key.enc")
    code, out, _ = run("pki", "revoke-intermediate", "example-prod", "dc2")
    assert code == 0 and "revoked the intermediate of dc2" in out and "root CRL number 3" in out
