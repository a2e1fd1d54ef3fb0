"""Who may do what on etcd (issue 15): the statement docs/security.md carries, and the two
facts it rests on, so that neither changes without the statement. No Docker.

etcd authentication stays off (docs/security.md, "etcd"): Patroni reaches etcd through the
gRPC gateway with a client certificate whose CN is its host's FQDN, and etcd answers 400
to every such request once authentication is on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from operations.etcd.settings import etcd_input
from operations.patroni.settings import patroni_input, render
from plinth.certificates import host_certificates
from plinth.context import HostContext
from plinth.model import Environment, Role, load_environment
from plinth.topology.etcd import ETCD_ACCESS, access_rows

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"
PASSWORDS = {"superuser": "s", "replication": "r", "rewind": "w", "restapi": "p"}


def example() -> Environment:
    return load_environment(EXAMPLE)


def context_of(env: Environment, role: Role) -> HostContext:
    host = env.hosts_with(role)[0]
    return HostContext(env, EXAMPLE, host, env.datacenters_by_name[host.datacenter])


def test_docs_security_carries_the_etcd_access_statement() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    assert ETCD_ACCESS
    for row in access_rows():
        assert row in text, row


def test_etcd_checks_client_certificates_and_nothing_turns_authentication_on() -> None:
    """The statement says: mutual TLS, authentication off. A change that enables it (an
    ``etcdctl auth enable``, a user or role) must come with a new statement and the
    shape docs/security.md describes, never alone."""
    env = example()
    context = context_of(env, Role.ETCD)
    certificates = {c.service: c for c in host_certificates(env, context.host)}
    text = etcd_input(context, certificates["etcd"]).render()
    assert 'ETCD_CLIENT_CERT_AUTH="true"' in text
    pattern = re.compile(
        r"etcdctl\b.*\b(auth\s+enable|user\s+(add|grant-role)|role\s+(add|grant-permission))"
        r"|ETCD_AUTH_TOKEN"
    )
    spelled = [
        f"{path.relative_to(REPO)}:{number}"
        for root in ("facts", "operations", "plinth", "templates", "tests/lab")
        for path in sorted((REPO / root).rglob("*"))
        if path.is_file() and path.suffix in (".py", ".j2", ".sh")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not spelled, spelled


def test_patroni_reaches_etcd_with_a_certificate_that_has_a_common_name() -> None:
    """Why authentication stays off: Patroni's etcd client certificate is its ``patroni``
    certificate, CN = the host's FQDN, sent to the gRPC gateway (HTTP/JSON). With
    authentication on, etcd refuses every such request (400), token or not."""
    env = example()
    context = context_of(env, Role.POSTGRESQL)
    certificates = {c.service: c for c in host_certificates(env, context.host)}
    patroni = certificates["patroni"]
    spec = patroni_input(context, patroni, certificates["pg-replicator"], certificates["pg-rewind"])
    etcd3 = yaml.safe_load(render(spec, PASSWORDS))["etcd3"]
    assert etcd3["cert"] == patroni.chain_path and etcd3["key"] == patroni.key_path
    assert patroni.common_name == env.fqdn(context.host)
    # no etcd credentials: with authentication off there is nothing to log in to
    assert "username" not in etcd3 and "password" not in etcd3
