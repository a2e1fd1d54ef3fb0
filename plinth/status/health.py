"""Whether a stack's collected state is healthy, and waiting until every stack is."""

from __future__ import annotations

import time
from typing import Any

from plinth.stacks import resolve
from plinth.status.collect import collect_all


def healthy(data: dict[str, Any]) -> bool:
    """Every part the stack has is healthy: etcd, Patroni (which must answer where the
    stack has PostgreSQL hosts), Redis, RabbitMQ, Airflow and the edge units, and each VIP
    is held by exactly one node."""
    etcd = data["etcd"]
    patroni = data["patroni"]
    redis = data.get("redis")
    return (
        (etcd is None or bool(etcd.get("healthy")))
        and (not patroni["problems"] if patroni else not data.get("patroni_expected"))
        and (redis is None or not redis["problems"])
        and all(len(v["holders"]) == 1 for v in data["vips"])
        and all(all(units.values()) for units in data.get("edge", {}).values())
        and not (data.get("rabbitmq") or {}).get("problems")
        and not (data.get("airflow") or {}).get("problems")
    )


class Unhealthy(Exception):
    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__("not healthy")
        self.results = results


def wait_healthy(target: str, seconds: float, interval: float = 2.0) -> list[dict[str, Any]]:
    """Poll what `plinth status TARGET` shows until every stack is healthy; the results.
    Raises Unhealthy (with the last results) after ``seconds``.

    A host that does not answer SSH yet is "not healthy yet" while the wait lasts (right
    after a restart sshd is not up); when the time is up it is the error, named loudly."""
    from plinth.plan import PlanError

    stacks = resolve(target)
    deadline = time.monotonic() + seconds
    while True:
        try:
            results = collect_all(stacks)
        except PlanError:
            if time.monotonic() > deadline:
                raise
        else:
            if all(healthy(r) for r in results):
                return results
            if time.monotonic() > deadline:
                raise Unhealthy(results)
        time.sleep(interval)
