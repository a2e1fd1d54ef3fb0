"""Every plan, walked step by step over a tiny model of what its steps do
(plinth/geo/simulate.py), over generated observations: no state between two steps ever
has two writable PostgreSQL primaries, two writable Redis masters or two running Airflow
schedulers across sites (what does not answer counts as writable unless fenced, waited
out or acknowledged lost); and the way the commands run a plan (do the first step, read,
plan again) ends with an empty plan, doing nothing the first plan did not list."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from plinth.geo import examples as ex
from plinth.geo.decide import (
    Action,
    Plan,
    Refusal,
    Step,
    plan_failback,
    plan_failover,
    plan_switchover,
)
from plinth.geo.observe import Observed
from plinth.geo.simulate import World, advance, apply_all, violations

Planner = Callable[[Observed], Plan | Refusal]

HEALTHY = ex.healthy()


def _plan(result: Plan | Refusal) -> Plan:
    assert isinstance(result, Plan), "\n".join(result.lines())
    return result


SWITCH = _plan(plan_switchover(HEALTHY, "dc2"))
LOST = ex.unreachable(HEALTHY, "dc1")
FAILED_OVER = apply_all(LOST, _plan(plan_failover(LOST, "dc2", "dc1")).steps)


def starts() -> Iterator[tuple[str, Observed]]:
    """The states a command may start from."""
    yield "healthy", HEALTHY
    yield "lagging", ex.lagging(HEALTHY, 3_200)
    yield (
        "RabbitMQ definitions unread",
        ex.change(HEALTHY, "dc2", lambda s: replace(s, rabbitmq_missing=None)),
    )
    yield (
        "stale task messages in dc2",
        ex.change(HEALTHY, "dc2", lambda s: replace(s, rabbitmq_messages=None)),
    )
    for i in range(1, len(SWITCH.steps)):
        yield f"switchover after step {i}", apply_all(HEALTHY, SWITCH.steps[:i])
    ahead = ex.change(
        HEALTHY,
        "dc1",
        lambda s: replace(
            s,
            postgresql=replace(
                s.postgresql,
                members=tuple(
                    replace(m, flushed=ex.FLUSHED + 4096) if m.writable else m
                    for m in s.postgresql.members
                ),
            ),
        ),
    )
    back = ex.reachable_again(FAILED_OVER, "dc1", ahead)
    yield "failed over, dc1 back writable", back
    fenced = apply_all(back, _plan(plan_failover(back, "dc2")).steps)
    yield "failed over, dc1 fenced", fenced
    failback = _plan(plan_failback(fenced, "dc1"))
    for i in (1, 3, 6, 10):
        yield f"failback after step {i}", apply_all(fenced, failback.steps[:i])


SILENT = ("dc1-db1", "dc1-db2", "dc1-db3", "dc1-app1", "dc1-edge1")


def scenarios() -> Iterator[tuple[str, Observed, str, Planner, frozenset[str]]]:
    """(name, observation, command, planner, acknowledged hosts' site)."""
    for (name, start), size in itertools.product(list(starts()), range(len(SILENT) + 1)):
        for silent in itertools.combinations(SILENT, size):
            if size and size < len(SILENT) and len(silent) > 2:
                continue  # keep the product small: every pair, and all of them
            observed = ex.unreachable(start, "dc1", silent) if silent else start
            for replicas in (0, 1):
                topology = replace(observed.topology, redis_min_replicas_to_write=replicas)
                seen = replace(observed, topology=topology)
                label = (
                    f"{name}; dc1 silent: {', '.join(silent) or 'none'}; min-replicas {replicas}"
                )
                yield label, seen, "switchover", lambda o: plan_switchover(o, "dc2"), frozenset()
                yield label, seen, "failover", lambda o: plan_failover(o, "dc2"), frozenset()
                yield (
                    label,
                    seen,
                    "failover acknowledged",
                    lambda o: plan_failover(o, "dc2", "dc1"),
                    frozenset(silent),
                )
                yield label, seen, "failback", lambda o: plan_failback(o, "dc1"), frozenset()


SCENARIOS = list(scenarios())


def walk(world: World, steps: tuple[Step, ...]) -> list[list[str]]:
    """The violations of every state from ``world`` through each step."""
    out = [violations(world)]
    for step in steps:
        world = advance(world, step)
        out.append(violations(world))
    return out


def test_the_scenarios_cover_plans_and_refusals() -> None:
    results = [planner(observed) for _, observed, _, planner, _ in SCENARIOS]
    plans = [r for r in results if isinstance(r, Plan)]
    assert len(SCENARIOS) > 1000
    assert len(plans) > 300 and len(results) - len(plans) > 300
    kinds = {a for p in plans for a in (s.action for s in p.steps)}
    assert kinds >= set(Action) - {Action.RECLONE_POSTGRESQL}


def test_no_plan_ever_has_two_writers() -> None:
    failures = []
    for label, observed, command, planner, acknowledged in SCENARIOS:
        result = planner(observed)
        if isinstance(result, Refusal):
            continue
        world = World(observed, assumed_down=frozenset(result.acknowledged) & acknowledged)
        states = walk(world, result.steps)
        if states[0]:
            # It started split: it may only get better, and must end whole.
            counts = [len(v) for v in states]
            if counts != sorted(counts, reverse=True) or states[-1]:
                failures.append(f"{command} from {label}: {states}")
        elif any(states):
            bad = next(i for i, v in enumerate(states) if v)
            failures.append(f"{command} from {label}: after step {bad}: {states[bad]}")
    assert not failures, "\n".join(failures[:10])


def test_running_a_plan_step_by_step_reaches_its_goal() -> None:
    failures = []
    for label, observed, command, planner, acknowledged in SCENARIOS:
        first = planner(observed)
        if isinstance(first, Refusal) or first.done:
            continue
        world = World(observed, assumed_down=frozenset(first.acknowledged) & acknowledged)
        done: list[Action] = []
        current: Plan | Refusal = first
        for _ in range(len(first.steps) + 3):
            if isinstance(current, Refusal) or current.done:
                break
            step = current.steps[0]
            world = advance(world, step)
            done.append(step.action)
            if violations(world) and not violations(World(observed)):
                failures.append(f"{command} from {label}: {violations(world)} after {step}")
                break
            current = planner(world.observed)
        if isinstance(current, Refusal) or not current.done:
            failures.append(f"{command} from {label}: ends with {current.lines()}")
            continue
        planned = iter(s.action for s in first.steps)
        if not all(action in planned for action in done):  # a subsequence of the plan
            failures.append(f"{command} from {label}: did {done}, planned {first.steps}")
        again = planner(world.observed)
        assert isinstance(again, Plan) and again.done
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize(
    ("why", "mangle"),
    [
        (
            "promote before the demote",
            lambda steps: sorted(steps, key=lambda s: s.action is not Action.PROMOTE_POSTGRESQL),
        ),
        (
            "Airflow started before it is stopped",
            lambda steps: sorted(steps, key=lambda s: s.action is not Action.START_AIRFLOW),
        ),
        (
            "Redis promoted before the pause",
            lambda steps: [s for s in steps if s.action is not Action.PAUSE_REDIS],
        ),
    ],
)
def test_the_checker_sees_a_wrong_switchover(
    why: str, mangle: Callable[[list[Step]], list[Step]]
) -> None:
    states = walk(World(HEALTHY), tuple(mangle(list(SWITCH.steps))))
    assert any(states), why


def test_the_checker_sees_a_partial_failover_without_its_waits() -> None:
    cut = ex.unreachable(HEALTHY, "dc1", ["dc1-db1"])
    plan = _plan(plan_failover(cut, "dc2"))
    assert not any(walk(World(cut), plan.steps))
    no_wait = tuple(s for s in plan.steps if s.action is not Action.WAIT_SELF_DEMOTION)
    assert any("PostgreSQL" in v for vs in walk(World(cut), no_wait) for v in vs)
    no_hold = tuple(
        replace(s, seconds=None) if s.action is Action.PROMOTE_REDIS else s for s in plan.steps
    )
    assert any("Redis" in v for vs in walk(World(cut), no_hold) for v in vs)
    no_etcd = tuple(s for s in plan.steps if s.action is not Action.FENCE_ETCD)
    assert any("PostgreSQL" in v for vs in walk(World(cut), no_etcd) for v in vs)


def test_an_unacknowledged_lost_site_counts_as_writable() -> None:
    steps = _plan(plan_failover(LOST, "dc2", "dc1")).steps
    assert any(walk(World(LOST), steps))
    assert not any(walk(World(LOST, assumed_down=frozenset(LOST.site("dc1").unreachable)), steps))
