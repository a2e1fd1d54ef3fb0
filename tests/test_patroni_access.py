"""Who may change Patroni's state through its REST API (issue 15): the rendered
config.yml, plinth's own state-changing calls (the password read from the root-only
curlrc, never part of a command), the secret, and the access statement docs/security.md
carries. No Docker: the lab half is tests/lab/test_access.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import operations.patroni.converge as converge
import operations.patroni.rest as rest
from operations.patroni.settings import SECRET_NAMES, patroni_input, render, render_curlrc
from plinth.certificates import host_certificates
from plinth.context import HostContext
from plinth.model import Environment, Role, load_environment
from plinth.provision import required_secrets
from plinth.secrets import SecretStore
from plinth.topology.patroni import (
    RESTAPI_CURLRC,
    RESTAPI_USER,
    access_rows,
    unsafe_call,
)
from tests.test_patroni import spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"
PASSWORD = "Rest-API_pw0-not-in-commands"
PASSWORDS = {"superuser": "s", "replication": "r", "rewind": "w", "restapi": PASSWORD}


def example() -> Environment:
    return load_environment(EXAMPLE)


def test_a_change_needs_the_password_and_a_members_address_a_read_only_a_certificate() -> None:
    config = yaml.safe_load(render(spec(), PASSWORDS))
    api = config["restapi"]
    assert api["verify_client"] == "required"
    assert api["authentication"] == {"username": RESTAPI_USER, "password": PASSWORD}
    assert api["allowlist"] == ["10.0.0.11/32", "10.0.0.12/32", "10.0.0.13/32"]
    assert api["allowlist_include_members"] is True
    # patronictl on a member authenticates with the same user (ctl.authentication)
    assert config["ctl"]["authentication"] == api["authentication"]
    assert config["ctl"]["certfile"] == api["certfile"]


def test_the_allowlist_is_the_datacenters_members_and_nobody_else() -> None:
    env = example()
    host = next(h for h in env.hosts if h.name == "dc2-db1")
    certs = {c.service: c for c in host_certificates(env, host)}
    context = HostContext(env, EXAMPLE, host, env.datacenters_by_name["dc2"])
    patroni = patroni_input(context, certs["patroni"], certs["pg-replicator"], certs["pg-rewind"])
    assert patroni.member_addresses == ("10.40.2.11", "10.40.2.12", "10.40.2.13")
    allowlist = yaml.safe_load(render(patroni, PASSWORDS))["restapi"]["allowlist"]
    assert allowlist == ["10.40.2.11/32", "10.40.2.12/32", "10.40.2.13/32"]
    # not the edge (haproxy's checks only read), not the Airflow hosts
    others = {str(h.address) for h in env.hosts if Role.POSTGRESQL not in h.roles}
    assert not others & {a.removesuffix("/32") for a in allowlist}


def test_the_curlrc_holds_the_user_and_password_in_curls_syntax() -> None:
    text = render_curlrc(PASSWORDS)
    assert text.startswith("# managed by plinth")
    assert text.splitlines()[-1] == f'user = "{RESTAPI_USER}:{PASSWORD}"'
    assert render_curlrc({"restapi": 'a"b\\c'}).splitlines()[-1] == 'user = "patroni:a\\"b\\\\c"'
    with pytest.raises(ValueError, match="one line"):
        render_curlrc({"restapi": "a\nurl = http://elsewhere"})


@pytest.mark.skipif(
    subprocess.run(["curl", "--version"], capture_output=True, check=False).returncode != 0,
    reason="no curl on this machine",
)
def test_curl_reads_the_curlrc_and_a_missing_one_fails(tmp_path: Path) -> None:
    """curl itself parses the file (``-K``); nothing is sent anywhere (``--url`` to a closed
    port; only the parse matters). Without the file curl refuses to run (exit 26)."""
    curlrc = tmp_path / "restapi.curlrc"
    curlrc.write_text(render_curlrc(PASSWORDS))
    parsed = subprocess.run(
        ["curl", "-s", "-K", str(curlrc), "-m", "1", "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert parsed.returncode != 26, parsed.stderr  # 7: nothing listens there
    missing = subprocess.run(
        ["curl", "-s", "-K", str(tmp_path / "absent"), "http://127.0.0.1:9/"],
        capture_output=True,
        check=False,
    )
    assert missing.returncode == 26


def assert_authenticated_without_the_password(command: str, method: str) -> None:
    assert f"-K {RESTAPI_CURLRC}" in command
    assert f"-X{method}" in command
    assert "--cert /etc/plinth/tls/patroni/patroni-chain.crt" in command
    assert PASSWORD not in command
    assert " -u " not in command and "--user" not in command and "Authorization" not in command


def test_unsafe_call_reads_the_password_from_the_curlrc_and_refuses_a_read() -> None:
    command = unsafe_call(spec().tls, "POST", "https://10.0.0.12:8008/restart", {"a": 1}, "-f")
    assert_authenticated_without_the_password(command, "POST")
    assert command.endswith("-f https://10.0.0.12:8008/restart")
    with pytest.raises(ValueError, match="GET"):
        unsafe_call(spec().tls, "GET", "https://10.0.0.12:8008/cluster", {})


def test_the_patch_plinth_runs_authenticates_from_the_curlrc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[str] = []

    def run(host: Any, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
        ran.append(command)
        return True, [], []

    monkeypatch.setattr(converge, "gate", lambda host, spec, what: object())
    monkeypatch.setattr(converge, "run", run)
    monkeypatch.setattr(converge, "note", lambda host, message: None)
    monkeypatch.setattr(converge, "PATCHED_SCOPES", set())
    assert converge._gated_patch(None, object(), spec(), {"ttl": 30})
    assert len(ran) == 1
    assert_authenticated_without_the_password(ran[0], "PATCH")
    assert ran[0].endswith("https://10.0.0.11:8008/config")
    assert ran[0] == converge.patch_command(spec(), {"ttl": 30})


@pytest.mark.parametrize(
    ("path", "body"),
    [("/restart", {"restart_pending": True}), ("/switchover", {"leader": "a", "candidate": "b"})],
)
def test_the_posts_of_the_rolls_authenticate_from_the_curlrc(
    monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]
) -> None:
    ran: list[str] = []

    def run(host: Any, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
        ran.append(command)
        return True, [], []

    monkeypatch.setattr(rest, "run", run)
    assert rest.post(object(), spec(), "https://10.0.0.12:8008", path, body)
    assert_authenticated_without_the_password(ran[0], "POST")
    assert ran[0].endswith(f"-f https://10.0.0.12:8008{path}")


UNSAFE = re.compile(r"-X ?(POST|PATCH|PUT|DELETE)\b|--request\b|-X\{")


def test_every_state_changing_call_in_the_code_goes_through_unsafe_call() -> None:
    """A new ``curl -XPOST`` elsewhere would call Patroni without the password (and be
    refused once the cluster has it): the method is only ever spelled in unsafe_call."""
    sources = [REPO / "deploy.py"]
    for package in ("plinth", "operations", "facts"):
        sources += (REPO / package).rglob("*.py")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line)
    ]
    assert len(found) == 1 and found[0].startswith("plinth/topology/patroni.py:"), found


def test_the_restapi_password_is_generated_with_the_other_postgresql_secrets(
    tmp_path: Path,
) -> None:
    needed = required_secrets(example())
    for name in SECRET_NAMES.values():
        assert needed[name] == "urlsafe", name
    assert SECRET_NAMES["restapi"] == "postgresql-restapi-password"
    # what ensure_secrets does with that list: the new secret is generated and listed
    store = SecretStore(tmp_path / "secrets.json", "correct horse battery staple 15")
    for name, kind in sorted(needed.items()):
        store.ensure(name, kind)  # type: ignore[arg-type]
    assert "postgresql-restapi-password" in store.names()
    assert len(store.get("postgresql-restapi-password").reveal()) >= 32


def test_docs_security_carries_the_access_statement() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    for row in access_rows():
        assert row in text, row
