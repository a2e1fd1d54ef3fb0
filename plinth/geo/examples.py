"""Observations of ``example-prod`` (inventory/example-prod.yaml: dc1 active, dc2 a
standby site, three database hosts, two edge and three Airflow hosts per site) in the
shapes the commands meet, for the tests and for docs/geo-redundancy.md, whose step lists
are generated from them (``python -m plinth.geo.examples`` rewrites them; a test keeps
them current).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from facts.postgresql import TimelineSwitch
from facts.redis import RedisNode
from plinth.geo.decide import (
    Plan,
    Refusal,
    plan_failback,
    plan_failover,
    plan_switchover,
)
from plinth.geo.observe import (
    Observed,
    PgMember,
    PgRole,
    PgSite,
    RedisSite,
    SiteObservation,
    airflow_units,
)
from plinth.geo.simulate import apply_all
from plinth.model import Environment, load_environment
from plinth.topology.geo import GeoTopology, geo_topology

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"
DOC = REPO / "docs" / "geo-redundancy.md"

HISTORY = (TimelineSwitch(1, 0x3000000), TimelineSwitch(2, 0x4000000))
"""dc1's lineage in the examples: on timeline 3 after two failovers inside dc1."""
FLUSHED = 0x5A3C_0F28
"""dc1's primary's flushed WAL position in the examples."""
OFFSET = 8_123_456
"""dc1's Redis master's replication offset in the examples."""


def environment() -> Environment:
    return load_environment(EXAMPLE)


def topology() -> GeoTopology:
    return geo_topology(environment())


def _units(env: Environment, site: str, on: bool) -> dict[str, dict[str, bool]]:
    out = {}
    for host in env.hosts_in(site):
        units = airflow_units(host.roles, {})
        if units:
            out[host.name] = {unit: on for unit in units}
    return out


def healthy() -> Observed:
    """dc1 active and writable, dc2 streaming from it with no lag, everything up."""
    env = environment()
    geo = geo_topology(env)
    dc1, dc2 = geo.site("dc1"), geo.site("dc2")
    address = geo.addresses

    def primary(name: str) -> PgMember:
        return PgMember(
            name, PgRole.PRIMARY, "running", 3, flushed=FLUSHED, history=HISTORY, system_id="7"
        )

    def standby(name: str, role: PgRole, lag: int = 0) -> PgMember:
        return PgMember(
            name,
            role,
            "streaming",
            3,
            received=FLUSHED - lag,
            replayed=FLUSHED - lag,
            sender_end=FLUSHED,
            history=HISTORY,
            system_id="7",
        )

    master = address["dc1-db1"]

    def node(host: str, role: str = "slave") -> RedisNode:
        return RedisNode(
            address=address[host],
            role=role,
            master_host=None if role == "master" else master,
            master_link_up=role != "master",
            offset=OFFSET,
            settings={"replica-priority": "0" if host.startswith("dc2") else "100"},
        )

    first = SiteObservation(
        name="dc1",
        reachable=frozenset(dc1.hosts),
        postgresql=PgSite(
            members=(
                primary("dc1-db1"),
                standby("dc1-db2", PgRole.REPLICA),
                standby("dc1-db3", PgRole.REPLICA),
            ),
            slots=frozenset({dc2.slot}),
        ),
        redis=RedisSite(
            nodes=(node("dc1-db1", "master"), node("dc1-db2"), node("dc1-db3")),
            sentinels_running=frozenset(dc1.sentinels),
        ),
        airflow_units=_units(env, "dc1", True),
        etcd_running=frozenset(dc1.etcd),
        keepalived_running=frozenset(dc1.keepalived),
        applied_active="dc1",
    )
    second = SiteObservation(
        name="dc2",
        reachable=frozenset(dc2.hosts),
        postgresql=PgSite(
            members=(
                standby("dc2-db1", PgRole.STANDBY_LEADER),
                standby("dc2-db2", PgRole.REPLICA),
                standby("dc2-db3", PgRole.REPLICA),
            ),
            standby_of="dc1",
        ),
        redis=RedisSite(nodes=(node("dc2-db1"), node("dc2-db2"), node("dc2-db3"))),
        airflow_units=_units(env, "dc2", False),
        etcd_running=frozenset(dc2.etcd),
        keepalived_running=frozenset(dc2.keepalived),
        applied_active="dc1",
    )
    return Observed(geo, (first, second))


def change(
    observed: Observed, name: str, how: Callable[[SiteObservation], SiteObservation]
) -> Observed:
    """``observed`` with site ``name`` changed by ``how``."""
    return replace(observed, sites=tuple(how(s) if s.name == name else s for s in observed.sites))


def lagging(observed: Observed, lag: int) -> Observed:
    """dc2's standby leader ``lag`` bytes behind dc1's primary (received and replayed)."""

    def behind(site: SiteObservation) -> SiteObservation:
        members = tuple(
            replace(m, received=(m.received or 0) - lag, replayed=(m.replayed or 0) - lag)
            if m.role is PgRole.STANDBY_LEADER
            else m
            for m in site.postgresql.members
        )
        return replace(site, postgresql=replace(site.postgresql, members=members))

    return change(observed, "dc2", behind)


def unreachable(observed: Observed, name: str, hosts: Iterable[str] | None = None) -> Observed:
    """``hosts`` of site ``name`` (all of them by default) do not answer: nothing of
    them is read, what the others read of them is an error."""
    layout = observed.layout(name)
    silent = frozenset(layout.hosts if hosts is None else hosts)
    addresses = {observed.topology.addresses[h] for h in silent}

    def cut(site: SiteObservation) -> SiteObservation:
        pg = site.postgresql
        members = tuple(m for m in pg.members if m.name not in silent)
        nodes = tuple(
            RedisNode(address=n.address, error="no answer") if n.address in addresses else n
            for n in site.redis.nodes
        )
        return replace(
            site,
            reachable=site.reachable - silent,
            unreachable=site.unreachable | silent,
            postgresql=replace(pg, members=members, config_read=bool(members)),
            redis=replace(
                site.redis,
                nodes=nodes,
                sentinels_running=site.redis.sentinels_running - silent,
            ),
            airflow_units={h: u for h, u in site.airflow_units.items() if h not in silent},
            etcd_running=site.etcd_running - silent,
            keepalived_running=site.keepalived_running - silent,
        )

    return change(observed, name, cut)


def reachable_again(observed: Observed, name: str, at: Observed) -> Observed:
    """Site ``name`` answers again, as it was in ``at`` (the state it was cut off in),
    with what the command did to it meanwhile (fences) kept."""
    now, then = observed.site(name), at.site(name)
    return change(
        observed,
        name,
        lambda _: replace(then, fenced=now.fenced | then.fenced, fence_age=now.fence_age),
    )


# ---- the documentation's step lists ----


def scenarios() -> dict[str, Plan | Refusal]:
    """Name -> the plan or refusal docs/geo-redundancy.md shows under that name."""
    start = lagging(healthy(), 3_200)
    switched = plan_switchover(start, "dc2")
    assert isinstance(switched, Plan)
    lost = unreachable(healthy(), "dc1")
    failed_over = plan_failover(lost, "dc2", "dc1")
    assert isinstance(failed_over, Plan)
    # dc1 kept writing 1 MiB that dc2 never received before the link went, with 37 task
    # messages queued; it comes back still writable, a second dc-failover fences it, and
    # dc-failback brings it back.
    ahead = change(
        healthy(),
        "dc1",
        lambda s: replace(
            s,
            rabbitmq_messages=37,
            postgresql=replace(
                s.postgresql,
                members=tuple(
                    replace(m, flushed=FLUSHED + 2**20) if m.writable else m
                    for m in s.postgresql.members
                ),
            ),
        ),
    )
    after = apply_all(lost, failed_over.steps)
    back = reachable_again(after, "dc1", ahead)
    fenced = plan_failover(back, "dc2")
    assert isinstance(fenced, Plan)
    return {
        "switchover": switched,
        "failover-unacknowledged": plan_failover(lost, "dc2"),
        "failover-acknowledged": failed_over,
        "failover-fences": plan_failover(unreachable(healthy(), "dc1", ["dc1-db1"]), "dc2"),
        "failback": plan_failback(apply_all(back, fenced.steps), "dc1"),
    }


def render(name: str, plan: Plan | Refusal) -> str:
    return "\n".join([f"<!-- generated: {name} -->", "```text", *plan.lines(), "```"])


BLOCK = re.compile(
    r"<!-- generated: (?P<name>[a-z-]+) -->\n```text\n(?:(?:(?!```).)*\n)?```", re.DOTALL
)
"""A generated block: its marker, then a text fence whose lines hold no fence."""


def rewrite(text: str) -> str:
    """``text`` with every generated block replaced by its current rendering."""
    plans = scenarios()
    return BLOCK.sub(lambda m: render(m["name"], plans[m["name"]]), text)


def main() -> int:
    DOC.write_text(rewrite(DOC.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
