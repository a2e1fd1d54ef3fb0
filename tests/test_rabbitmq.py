"""RabbitMQ without Docker: the RabbitmqCluster parser, the restart gate's verdict, the
definitions file and the rendered configuration."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.rabbitmq import (
    _END,
    _STATUS,
    NOT_RUNNING,
    parse_rabbitmq_cluster,
)
from operations.rabbitmq import (
    CA_BUNDLE,
    RabbitmqInput,
    password_hash,
    render_definitions,
    restart_refusal,
)
from plinth.certificates import CertificateSpec
from plinth.model import ModelError, RabbitmqSettings, parse_environment
from plinth.pki import Profile

NODES = tuple(f"rabbit@dc1-n{i}.dc1.lab.plinth.internal" for i in (1, 2, 3))


def status_doc(running: tuple[str, ...] = NODES, **extra: object) -> str:
    """The shape CLUSTER_EVAL prints (captured from RabbitMQ 3.10.8 on the lab)."""
    doc: dict[str, object] = {
        "alarms": [],
        "cluster_name": "lab-dc1-rabbitmq",
        "disk_nodes": list(NODES),
        "partitions": {n: [] for n in running},
        "quorum_critical": [],
        "running_nodes": list(running),
        "under_maintenance": [],
        "users": ["plinth-admin", "airflow"],
        "vhosts": ["airflow", "/"],
    }
    doc.update(extra)
    return json.dumps(doc)


def output(status: str | None = None) -> list[str]:
    return [_STATUS, *(status if status is not None else status_doc()).splitlines(), "ok", _END]


def test_healthy_cluster_parses_and_may_lose_a_node() -> None:
    state = parse_rabbitmq_cluster(output())
    assert state is not None
    assert state.running_nodes == NODES
    assert state.users == ("plinth-admin", "airflow")
    assert state.vhosts == ("airflow", "/")
    assert state.quorum_critical is False
    assert state.problems(NODES) == []


def test_not_running_node_is_none() -> None:
    assert parse_rabbitmq_cluster([NOT_RUNNING]) is None


def test_cut_output_is_a_fact_error() -> None:
    with pytest.raises(FactProcessError, match="cut short"):
        parse_rabbitmq_cluster(output()[:3])


def test_cli_warning_before_json_is_skipped() -> None:
    state = parse_rabbitmq_cluster(output(status="Warning: something\n" + status_doc()))
    assert state is not None and state.running_nodes == NODES


def test_unreachable_node_is_a_problem_not_a_crash() -> None:
    state = parse_rabbitmq_cluster(
        output(status="Error: unable to perform an operation on node 'rabbit@x'")
    )
    assert state is not None
    assert state.error is not None and state.error.startswith("Error: unable")
    assert state.problems(NODES) == [f"cluster status unreadable: {state.error}"]


def test_a_stopped_node_partitions_and_alarms_are_named() -> None:
    state = parse_rabbitmq_cluster(
        output(
            status=status_doc(
                running=NODES[:2],
                partitions={NODES[0]: [NODES[2]]},
                alarms=[f"{NODES[1]}: memory"],
            )
        )
    )
    assert state is not None
    problems = state.problems(NODES)
    assert f"node(s) not running in the cluster: {NODES[2]}" in problems
    assert f"{NODES[0]} reports a partition from {NODES[2]}" in problems
    assert f"alarm {NODES[1]}: memory" in problems


def spec(node: int = 1) -> RabbitmqInput:
    fqdn = f"dc1-n{node}.dc1.lab.plinth.internal"
    tls = CertificateSpec("rabbitmq", Profile.SERVER, fqdn, (fqdn,), ())
    client_tls = CertificateSpec("rabbitmq-client", Profile.CLIENT, fqdn, (), ())
    return RabbitmqInput(
        name=f"dc1-n{node}",
        fqdn=f"dc1-n{node}.dc1.lab.plinth.internal",
        cluster_name="lab-dc1-rabbitmq",
        nodes=NODES,
        settings=RabbitmqSettings(),
        tls=tls,
        client_tls=client_tls,
    )


def test_restart_gate_passes_only_a_healthy_non_critical_node() -> None:
    assert restart_refusal(parse_rabbitmq_cluster(output()), spec()) is None


def test_restart_gate_refuses_a_quorum_critical_node_and_says_which_queues() -> None:
    queue = "queue 'q1' in vhost 'airflow'"
    state = parse_rabbitmq_cluster(output(status_doc(quorum_critical=[queue])))
    assert state is not None and state.quorum_critical is True
    reason = restart_refusal(state, spec())
    assert reason is not None and "quorum-critical" in reason and "'q1'" in reason


def test_restart_gate_refuses_while_a_node_is_down() -> None:
    state = parse_rabbitmq_cluster(output(status=status_doc(running=NODES[:2])))
    reason = restart_refusal(state, spec())
    assert reason == f"node(s) not running in the cluster: {NODES[2]}"


def test_restart_gate_refuses_when_the_quorum_check_cannot_run() -> None:
    failed = {"error": "error:undef"}
    state = parse_rabbitmq_cluster(output(status_doc(quorum_critical=failed)))
    assert state is not None and state.quorum_critical is None
    reason = restart_refusal(state, spec())
    assert reason is not None and reason.startswith("quorum check failed")


def test_restart_gate_refuses_when_nothing_can_be_read() -> None:
    assert (
        restart_refusal(None, spec()) == f"cannot read the cluster from {NODES[0]} (is it running?)"
    )


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    hashed = base64.b64decode(password_hash("plinth-admin", "s3cret"))
    salt, digest = hashed[:4], hashed[4:]
    assert digest == hashlib.sha256(salt + b"s3cret").digest()
    # deterministic: the same secret renders the same file (a second run changes nothing)
    assert password_hash("plinth-admin", "s3cret") == password_hash("plinth-admin", "s3cret")
    assert password_hash("other", "s3cret") != password_hash("plinth-admin", "s3cret")


def test_definitions_hold_the_model_and_no_plaintext_password() -> None:
    text = render_definitions(RabbitmqSettings(), "very-secret-password")
    assert "very-secret-password" not in text
    doc = json.loads(text)
    users = {u["name"]: u for u in doc["users"]}
    assert users["plinth-admin"]["tags"] == ["administrator"]
    assert users["airflow"]["password_hash"] == ""  # certificate login only
    vhosts = {v["name"]: v["metadata"]["default_queue_type"] for v in doc["vhosts"]}
    assert vhosts == {"airflow": "quorum", "plinth-probe": "quorum"}
    assert {"user": "airflow", "vhost": "airflow"}.items() <= doc["permissions"][-2].items()
    assert doc["policies"][0]["apply-to"] == "queues"


def test_config_has_no_plaintext_listener_and_requires_client_certificates() -> None:
    config = spec().render_config()
    assert "listeners.tcp = none" in config
    assert "management.tcp" not in config
    # The TLS options live in advanced.config, which would replace them here anyway.
    assert "ssl_options." not in config and "management.ssl." not in config
    advanced = spec().render_advanced_config()
    rabbit, management = advanced.split("{rabbitmq_management, [")
    for listener in (rabbit, management):
        assert "{verify, verify_peer}" in listener
        assert "{fail_if_no_peer_cert, true}" in listener
        assert f'{{cacertfile, "{CA_BUNDLE}"}}' in listener
        # Every certificate of the chain against the CRLs hashed in /etc/rabbitmq/crl.
        assert "{crl_check, true}" in listener
        assert (
            '{crl_cache, {ssl_crl_hash_dir, {internal, [{dir, "/etc/rabbitmq/crl"}]}}}' in listener
        )
    assert "{port, 15671}" in management
    for i, node in enumerate(NODES, start=1):
        assert f"cluster_formation.classic_config.nodes.{i} = {node}" in config


def test_cli_gets_the_same_tls_distribution_arguments_as_the_server() -> None:
    env = spec().render_env()
    server = next(line for line in env.splitlines() if line.startswith("SERVER_ADDITIONAL"))
    cli = next(line for line in env.splitlines() if line.startswith("RABBITMQ_CTL_ERL_ARGS"))
    assert server.split("=", 1)[1] == cli.split("=", 1)[1]
    assert "-proto_dist inet_tls" in cli
    assert f"NODENAME={NODES[0]}" in env and "USE_LONGNAME=true" in env
    inter_node = spec().render_inter_node_tls()
    assert inter_node.count("{verify, verify_peer}") == 2
    assert "{fail_if_no_peer_cert, true}" in inter_node
    client_section = inter_node.split("{client, [")[1]
    assert "/etc/plinth/tls/rabbitmq-client/rabbitmq-client-chain.crt" in client_section


def test_model_rejects_permissions_on_an_undeclared_vhost() -> None:
    with pytest.raises(ModelError, match=r"users\[0\]\.permissions\[0\]\.vhost: 'nope'"):
        parse_environment(
            {
                "name": "t",
                "datacenters": [{"name": "dc1", "subnet": "10.0.0.0/24", "domain": "a.example"}],
                "hosts": [{"name": "h1", "address": "10.0.0.1", "datacenter": "dc1"}],
                "components": {
                    "rabbitmq": {"users": [{"name": "x", "permissions": [{"vhost": "nope"}]}]}
                },
            }
        )
