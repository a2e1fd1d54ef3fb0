"""Copy the active DC's live RabbitMQ topology (queues, exchanges, bindings) to the others.

Pure logic, no connections: :func:`parse_topology` keeps what an application declared
and a standby cluster needs after a DC failover, :func:`plan_sync` compares it with a
target cluster, :func:`import_document` is the ``rabbitmqctl import_definitions`` JSON
that creates only what is missing. Never messages, users, passwords or policies (those
come from the model and every DC's deploy imports them).

Left out on purpose:

* server-named queues (``amq.gen-…``) and every ``amq.*`` name: a client or the broker
  makes them per connection;
* exclusive and auto-delete queues, auto-delete exchanges: they belong to one live
  connection and vanish with it;
* the default exchange and the ``amq.*`` exchanges (every cluster has them; a binding
  *from* one of them to a copied queue is copied);
* anything in a vhost the target does not have (not in the model: a hand-made vhost).

RabbitMQ 3.10 ignores a vhost's default queue type on import (fixed in 3.11,
rabbitmq-server#5769): a queue imported without ``x-queue-type`` would become classic.
The import document therefore always names the queue's type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RESERVED_PREFIX = "amq."
QUEUE_TYPE_ARG = "x-queue-type"


class SyncError(Exception):
    """The topology cannot be read or copied; the message names the host or object."""


def _args(value: Any) -> str:
    """Arguments as canonical JSON (comparable, hashable)."""
    return json.dumps(value if isinstance(value, dict) else {}, sort_keys=True)


@dataclass(frozen=True)
class Queue:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    arguments: str
    """Canonical JSON of the declared arguments, ``x-queue-type`` left out (see ``type``)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost, self.name)

    def label(self) -> str:
        return f"queue {self.vhost}/{self.name} ({self.type})"

    def definition(self) -> dict[str, Any]:
        arguments = json.loads(self.arguments)
        if self.type != "classic" or QUEUE_TYPE_ARG in arguments:
            arguments[QUEUE_TYPE_ARG] = self.type
        return {
            "vhost": self.vhost,
            "name": self.name,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "arguments": arguments,
        }


@dataclass(frozen=True)
class Exchange:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.vhost, self.name)

    def label(self) -> str:
        return f"exchange {self.vhost}/{self.name} ({self.type})"

    def definition(self) -> dict[str, Any]:
        return {
            "vhost": self.vhost,
            "name": self.name,
            "type": self.type,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "internal": self.internal,
            "arguments": json.loads(self.arguments),
        }


@dataclass(frozen=True)
class Binding:
    vhost: str
    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: str

    def label(self) -> str:
        return (
            f"binding {self.vhost}/{self.source} -> {self.destination_type} "
            f"{self.destination} (key {self.routing_key!r})"
        )

    def definition(self) -> dict[str, Any]:
        return {
            "vhost": self.vhost,
            "source": self.source,
            "destination": self.destination,
            "destination_type": self.destination_type,
            "routing_key": self.routing_key,
            "arguments": json.loads(self.arguments),
        }


@dataclass
class Topology:
    """One cluster's copyable queues, exchanges and bindings."""

    vhosts: set[str] = field(default_factory=set)
    queues: dict[tuple[str, str], Queue] = field(default_factory=dict)
    exchanges: dict[tuple[str, str], Exchange] = field(default_factory=dict)
    bindings: set[Binding] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    """What was left out and why (names only)."""


def _reserved(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX)


def parse_topology(
    export: dict[str, Any], queue_info: dict[tuple[str, str], dict[str, Any]] | None = None
) -> Topology:
    """The copyable part of an ``export_definitions`` document.

    ``queue_info``: ``(vhost, name) -> {"type": …, "exclusive": …}`` from ``list_queues``
    (the export of 3.10 has neither; without it the type comes from ``x-queue-type``).
    Users, passwords, permissions, policies and parameters are not read at all.
    """
    info = queue_info or {}
    out = Topology(vhosts={str(v["name"]) for v in export.get("vhosts") or () if "name" in v})
    for raw in export.get("queues") or ():
        vhost, name = str(raw.get("vhost", "/")), str(raw.get("name", ""))
        extra = info.get((vhost, name), {})
        arguments = dict(raw.get("arguments") or {})
        declared_type = arguments.pop(QUEUE_TYPE_ARG, None)
        queue_type = str(extra.get("type") or declared_type or "classic")
        why = None
        if not name or _reserved(name):
            why = "server-named or reserved name"
        elif extra.get("exclusive") or raw.get("exclusive"):
            why = "exclusive"
        elif raw.get("auto_delete"):
            why = "auto-delete"
        if why:
            out.skipped.append(f"queue {vhost}/{name or '(unnamed)'}: {why}")
            continue
        queue = Queue(
            vhost=vhost, name=name, type=queue_type, durable=bool(raw.get("durable", True)),
            auto_delete=False, arguments=_args(arguments),
        )  # fmt: skip
        out.queues[queue.key] = queue
    for raw in export.get("exchanges") or ():
        vhost, name = str(raw.get("vhost", "/")), str(raw.get("name", ""))
        if not name or _reserved(name):
            continue  # the default and amq.* exchanges exist in every cluster
        if raw.get("auto_delete"):
            out.skipped.append(f"exchange {vhost}/{name}: auto-delete")
            continue
        exchange = Exchange(
            vhost=vhost, name=name, type=str(raw.get("type", "direct")),
            durable=bool(raw.get("durable", True)), auto_delete=False,
            internal=bool(raw.get("internal", False)), arguments=_args(raw.get("arguments")),
        )  # fmt: skip
        out.exchanges[exchange.key] = exchange
    for raw in export.get("bindings") or ():
        vhost = str(raw.get("vhost", "/"))
        source = str(raw.get("source", ""))
        destination = str(raw.get("destination", ""))
        destination_type = str(raw.get("destination_type", "queue"))
        kept_destination = (
            (vhost, destination) in out.queues
            if destination_type == "queue"
            else (vhost, destination) in out.exchanges
        )
        # A binding from the default exchange is implicit; one from amq.* is copyable
        # (every cluster has those exchanges).
        kept_source = source != "" and ((vhost, source) in out.exchanges or _reserved(source))
        if not (kept_source and kept_destination):
            continue
        out.bindings.add(
            Binding(
                vhost=vhost,
                source=source,
                destination=destination,
                destination_type=destination_type,
                routing_key=str(raw.get("routing_key", "")),
                arguments=_args(raw.get("arguments")),
            )
        )
    return out


@dataclass
class SyncPlan:
    """What one target cluster lacks of the source's topology."""

    create_queues: list[Queue] = field(default_factory=list)
    create_exchanges: list[Exchange] = field(default_factory=list)
    create_bindings: list[Binding] = field(default_factory=list)
    present: int = 0
    """Objects the target already has, identical."""
    differs: list[str] = field(default_factory=list)
    """Objects the target has with other properties (left alone: a redeclare would fail)."""
    skipped: list[str] = field(default_factory=list)

    @property
    def created(self) -> int:
        return len(self.create_queues) + len(self.create_exchanges) + len(self.create_bindings)

    def lines(self) -> list[str]:
        """One line per object to create (names and types only: no secret is ever here)."""
        objects: list[Queue | Exchange | Binding] = [
            *self.create_exchanges, *self.create_queues, *self.create_bindings
        ]  # fmt: skip
        return [f"+ {o.label()}" for o in objects]


def _difference(source: Queue | Exchange, target: Queue | Exchange) -> str | None:
    fields = ("type", "durable", "auto_delete", "internal", "arguments")
    changed = [
        f for f in fields if getattr(source, f, None) != getattr(target, f, None)
    ]  # fmt: skip
    if not changed:
        return None
    return f"{source.label()}: {', '.join(changed)} differ(s) from the source; not changed"


def plan_sync(source: Topology, target: Topology) -> SyncPlan:
    """What to create in ``target`` so it has every copyable object of ``source``."""
    plan = SyncPlan()
    for key, queue in sorted(source.queues.items()):
        if queue.vhost not in target.vhosts:
            plan.skipped.append(f"{queue.label()}: vhost {queue.vhost} missing in the target")
        elif key not in target.queues:
            plan.create_queues.append(queue)
        elif (why := _difference(queue, target.queues[key])) is not None:
            plan.differs.append(why)
        else:
            plan.present += 1
    for key, exchange in sorted(source.exchanges.items()):
        if exchange.vhost not in target.vhosts:
            plan.skipped.append(f"{exchange.label()}: vhost {exchange.vhost} missing in the target")
        elif key not in target.exchanges:
            plan.create_exchanges.append(exchange)
        elif (why := _difference(exchange, target.exchanges[key])) is not None:
            plan.differs.append(why)
        else:
            plan.present += 1
    sort_key = lambda b: (b.vhost, b.source, b.destination, b.routing_key, b.arguments)  # noqa: E731
    for binding in sorted(source.bindings, key=sort_key):
        if binding.vhost not in target.vhosts:
            plan.skipped.append(f"{binding.label()}: vhost {binding.vhost} missing in the target")
        elif binding in target.bindings:
            plan.present += 1
        else:
            plan.create_bindings.append(binding)
    return plan


def import_document(plan: SyncPlan) -> dict[str, Any]:
    """``import_definitions`` JSON with only the objects to create (no users, no policies)."""
    return {
        "exchanges": [e.definition() for e in plan.create_exchanges],
        "queues": [q.definition() for q in plan.create_queues],
        "bindings": [b.definition() for b in plan.create_bindings],
    }


def first_json(lines: list[str]) -> Any:
    """The JSON document in CLI output lines (warnings may come first, and ``eval``'s
    return value after it), or None."""
    text = "\n".join(lines)
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch in "[{"):
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    return None


def parse_queue_info(rows: Any, vhost: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``list_queues name type exclusive --formatter json`` rows of one vhost."""
    if not isinstance(rows, list):
        raise SyncError(f"list_queues in {vhost}: unexpected output")
    return {
        (vhost, str(r["name"])): {"type": r.get("type"), "exclusive": r.get("exclusive")}
        for r in rows
        if isinstance(r, dict) and "name" in r
    }
