"""The topology copy between DCs without a broker: what is kept from an export, the diff
against a target cluster, the import document, and the CLI's refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plinth.rabbitmq_sync import (
    SyncError,
    first_json,
    import_document,
    parse_queue_info,
    parse_topology,
    plan_sync,
)

VHOST = "airflow"


def _queue(name: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": VHOST,
        "durable": True,
        "auto_delete": False,
        "arguments": {},
    } | kwargs


def _exchange(name: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": VHOST,
        "type": "direct",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    } | kwargs


def _binding(source: str, destination: str, key: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": VHOST,
        "destination": destination,
        "destination_type": "queue",
        "routing_key": key,
        "arguments": {},
    } | kwargs


def export(**kwargs: Any) -> dict[str, Any]:
    """An ``export_definitions`` document, with the users a real one has."""
    return {
        "rabbit_version": "3.10.8",
        "users": [{"name": "plinth-admin", "password_hash": "c2VjcmV0LWhhc2g=", "tags": []}],
        "permissions": [],
        "policies": [],
        "vhosts": [{"name": VHOST}, {"name": "/"}],
        "queues": [],
        "exchanges": [],
        "bindings": [],
    } | kwargs


SOURCE = export(
    queues=[
        _queue("default", arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}),
        _queue("amq.gen-AbC", durable=False),
        _queue("celery.pidbox-reply", auto_delete=True),
        _queue("worker-private"),
        _queue("legacy"),
    ],
    exchanges=[
        _exchange("celery"),
        _exchange("amq.direct"),
        _exchange("reply.celery.pidbox", auto_delete=True),
        _exchange("celeryev", type="topic"),
    ],
    bindings=[
        _binding("celery", "default", "default"),
        _binding("amq.direct", "legacy", "legacy"),
        _binding("celery", "amq.gen-AbC", "x"),
        _binding("reply.celery.pidbox", "legacy", "r"),
        _binding("celeryev", "celery", "#", destination_type="exchange"),
    ],
)
INFO = {
    (VHOST, "worker-private"): {"type": "classic", "exclusive": True},
    (VHOST, "legacy"): {"type": "classic", "exclusive": False},
}


def test_parse_keeps_application_topology_and_leaves_out_connection_objects() -> None:
    topology = parse_topology(SOURCE, INFO)
    assert sorted(topology.queues) == [(VHOST, "default"), (VHOST, "legacy")]
    assert sorted(topology.exchanges) == [(VHOST, "celery"), (VHOST, "celeryev")]
    assert sorted((b.source, b.destination) for b in topology.bindings) == [
        ("amq.direct", "legacy"),  # from a built-in exchange: every cluster has it
        ("celery", "default"),
        ("celeryev", "celery"),
    ]
    assert sorted(topology.skipped) == [
        f"exchange {VHOST}/reply.celery.pidbox: auto-delete",
        f"queue {VHOST}/amq.gen-AbC: server-named or reserved name",
        f"queue {VHOST}/celery.pidbox-reply: auto-delete",
        f"queue {VHOST}/worker-private: exclusive",
    ]


def test_quorum_queue_keeps_its_type_and_arguments() -> None:
    topology = parse_topology(SOURCE, INFO)
    default = topology.queues[(VHOST, "default")]
    assert default.type == "quorum"
    plan = plan_sync(topology, parse_topology(export()))
    document = import_document(plan)
    assert {
        "vhost": VHOST,
        "name": "default",
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5},
    } in document["queues"]


def test_type_from_list_queues_is_written_into_the_import() -> None:
    """A queue declared without x-queue-type into a quorum vhost: 3.10 ignores the vhost's
    default on import, so the document must say quorum."""
    source = parse_topology(
        export(queues=[_queue("implicit")]), {(VHOST, "implicit"): {"type": "quorum"}}
    )
    document = import_document(plan_sync(source, parse_topology(export())))
    assert document["queues"][0]["arguments"] == {"x-queue-type": "quorum"}
    classic = parse_topology(export(queues=[_queue("c")]), {(VHOST, "c"): {"type": "classic"}})
    document = import_document(plan_sync(classic, parse_topology(export())))
    assert document["queues"][0]["arguments"] == {}


def test_plan_creates_what_is_missing_and_a_second_plan_nothing() -> None:
    source = parse_topology(SOURCE, INFO)
    plan = plan_sync(source, parse_topology(export()))
    assert (len(plan.create_queues), len(plan.create_exchanges), len(plan.create_bindings)) == (
        2,
        2,
        3,
    )
    assert plan.present == 0 and plan.differs == [] and plan.created == 7
    assert plan.lines()[0] == f"+ exchange {VHOST}/celery (direct)"
    assert f"+ queue {VHOST}/default (quorum)" in plan.lines()
    # The target after the import: exports what was imported (with x-queue-type).
    after = parse_topology(export(**import_document(plan)))
    again = plan_sync(source, after)
    assert again.created == 0 and again.present == 7 and again.differs == []


def test_existing_object_with_other_properties_is_reported_not_changed() -> None:
    source = parse_topology(SOURCE, INFO)
    target = parse_topology(
        export(
            queues=[_queue("default", arguments={"x-queue-type": "classic"})],
            exchanges=[_exchange("celery", type="fanout")],
        )
    )
    plan = plan_sync(source, target)
    assert [q.name for q in plan.create_queues] == ["legacy"]
    assert [e.name for e in plan.create_exchanges] == ["celeryev"]
    assert plan.differs == [
        f"queue {VHOST}/default (quorum): type, arguments differ(s) from the source; not changed",
        f"exchange {VHOST}/celery (direct): type differ(s) from the source; not changed",
    ]


def test_objects_of_a_vhost_the_target_lacks_are_skipped() -> None:
    source = parse_topology(
        export(vhosts=[{"name": "handmade"}], queues=[_queue("q", vhost="handmade")])
    )
    plan = plan_sync(source, parse_topology(export()))
    assert plan.created == 0
    assert plan.skipped == ["queue handmade/q (classic): vhost handmade missing in the target"]


def test_import_document_and_plan_output_carry_no_users_or_secrets() -> None:
    plan = plan_sync(parse_topology(SOURCE, INFO), parse_topology(export()))
    document = json.dumps(import_document(plan))
    assert set(import_document(plan)) == {"queues", "exchanges", "bindings"}
    for text in (document, "\n".join(plan.lines())):
        assert "plinth-admin" not in text and "password" not in text and "c2VjcmV0" not in text


def test_cli_output_parsing() -> None:
    assert first_json(["Warning: something", '{"queues": []}']) == {"queues": []}
    assert first_json(["no json here"]) is None
    rows = [{"name": "q", "type": "quorum", "exclusive": False}]
    assert parse_queue_info(rows, VHOST) == {(VHOST, "q"): {"type": "quorum", "exclusive": False}}
    with pytest.raises(SyncError, match="airflow"):
        parse_queue_info({"error": 1}, VHOST)


def test_cli_refuses_a_single_stack(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from plinth.cli import main

    result = CliRunner().invoke(main, ["rabbitmq", "sync-definitions", "example-prod-dc2", "--dry"])
    assert result.exit_code == 1
    assert "name the environment (example-prod), not one stack" in result.output
