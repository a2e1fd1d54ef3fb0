"""The loop of the DC commands (plinth/geo/execute.py), driven by a model of the world:
a fake executor whose steps do what plinth/geo/simulate.py says they do. It tests the
loop's own logic (one step at a time, re-reading, waiting within a step's bound, stopping
on a refusal, remembering positions and a Redis pause), not the hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

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
from plinth.geo.execute import REDIS_PAUSE_SECONDS, Memory, StepFailed, run
from plinth.geo.observe import Observed
from plinth.geo.simulate import apply, apply_all

HEALTHY = ex.healthy()


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ModelWorld:
    """An executor over the model: each step does what simulate.apply says, except the
    actions in ``stuck`` (they do nothing, as a step whose effect never shows)."""

    observed: Observed
    clock: Clock = field(default_factory=Clock)
    stuck: frozenset[Action] = frozenset()
    fail: Action | None = None
    performed: list[Step] = field(default_factory=list)
    readings: int = 0

    def observe(self) -> Observed:
        self.readings += 1
        self.clock.now += 1  # a reading takes time
        return self.observed

    def perform(self, step: Step, observed: Observed) -> str:
        self.performed.append(step)
        if step.action is self.fail:
            raise StepFailed("ssh: connection reset")
        if step.action not in self.stuck:
            self.observed = apply(self.observed, step)
        return ""


def drive(
    world: ModelWorld, planner: Callable[[Observed], Plan | Refusal], **kwargs: object
) -> tuple[bool, list[str]]:
    lines: list[str] = []
    outcome = run(
        planner,
        world,
        lines.append,
        clock=world.clock,
        sleep=world.clock.sleep,
        **kwargs,  # type: ignore[arg-type]
    )
    return outcome.ok, lines


def _switch(o: Observed) -> Plan | Refusal:
    return plan_switchover(o, "dc2")


def _plan(result: Plan | Refusal) -> Plan:
    assert isinstance(result, Plan), "\n".join(result.lines())
    return result


SWITCH = _plan(plan_switchover(HEALTHY, "dc2"))
LOST = ex.unreachable(HEALTHY, "dc1")
FAILED_OVER = apply_all(LOST, _plan(plan_failover(LOST, "dc2", "dc1")).steps)


def switchover_starts() -> list[tuple[str, Observed]]:
    """The doc's starting states of a switchover, and every state between its steps."""
    out = [
        ("healthy", HEALTHY),
        ("lagging 3200 bytes", ex.lagging(HEALTHY, 3_200)),
        (
            "RabbitMQ definitions unread",
            ex.change(HEALTHY, "dc2", lambda s: replace(s, rabbitmq_missing=None)),
        ),
        (
            "stale task messages in dc2",
            ex.change(HEALTHY, "dc2", lambda s: replace(s, rabbitmq_messages=37)),
        ),
    ]
    out += [
        (f"after step {i}", apply_all(HEALTHY, SWITCH.steps[:i]))
        for i in range(1, len(SWITCH.steps))
    ]
    return out


@pytest.mark.parametrize(("label", "start"), switchover_starts())
def test_switchover_loop_ends_with_an_empty_plan(label: str, start: Observed) -> None:
    world = ModelWorld(start)
    ok, lines = drive(world, _switch)
    assert ok, "\n".join(lines)
    assert lines[-1].startswith("done: dc2 is already the active site"), lines[-1]
    again = _switch(world.observed)
    assert isinstance(again, Plan) and again.done
    # one step per plan position: nothing performed twice
    actions = [(s.site, s.action) for s in world.performed]
    assert len(actions) == len(set(actions)), actions


def test_the_switchover_performs_the_docs_plan_in_order() -> None:
    lagging = ex.lagging(HEALTHY, 3_200)
    world = ModelWorld(lagging)
    ok, _ = drive(world, _switch)
    assert ok
    assert [(s.site, s.action) for s in world.performed] == [
        (s.site, s.action) for s in _plan(_switch(lagging)).steps
    ]


def test_a_second_run_finds_the_goal_and_does_nothing() -> None:
    world = ModelWorld(apply_all(HEALTHY, SWITCH.steps))
    ok, lines = drive(world, _switch)
    assert ok and not world.performed
    assert "nothing to do: the goal is already reached" in lines
    assert world.readings == 1


def test_dry_prints_the_plan_and_performs_nothing() -> None:
    world = ModelWorld(HEALTHY)
    ok, lines = drive(world, _switch, dry=True)
    assert ok and not world.performed
    assert lines == SWITCH.lines()


def test_declined_performs_nothing() -> None:
    world = ModelWorld(HEALTHY)
    ok, lines = drive(world, _switch, confirm=lambda plan: False)
    assert not ok and not world.performed
    assert lines[-1] == "this run changed nothing"


def test_a_refusal_is_printed_and_nothing_done() -> None:
    world = ModelWorld(ex.unreachable(HEALTHY, "dc1", ["dc1-db2"]))
    ok, lines = drive(world, _switch)
    assert not ok and not world.performed
    assert lines[0].startswith("dc-switchover refused: a planned switchover needs every host")
    assert lines[-1] == "this run changed nothing"


def test_a_bound_that_runs_out_stops_with_the_steps_message_and_what_was_done() -> None:
    # dc2 received dc1's last WAL but never replays it: writes stay stopped, nothing is
    # promoted, and the loop stops once the step's 30 s are over.
    world = ModelWorld(ex.lagging(HEALTHY, 3_200), stuck=frozenset({Action.VERIFY_CAUGHT_UP}))
    ok, lines = drive(world, _switch)
    assert not ok
    assert [s.action for s in world.performed] == [
        Action.STOP_AIRFLOW,
        Action.ADD_STANDBY_SLOT,
        Action.DEMOTE_POSTGRESQL,
        Action.VERIFY_CAUGHT_UP,
    ]
    assert lines[-2].startswith(
        "stopped at dc2: verify-caught-up: dc2 did not replay dc1's last WAL within 30 s"
    )
    assert lines[-1] == (
        "this run did: dc1: stop-airflow; dc2: add-standby-slot; dc1: demote-postgresql; "
        "dc2: verify-caught-up"
    )
    assert 30 <= world.clock.now < 40


def test_a_step_whose_effect_never_shows_stops_after_its_settle_time() -> None:
    world = ModelWorld(HEALTHY, stuck=frozenset({Action.STOP_AIRFLOW}))
    ok, lines = drive(world, _switch)
    assert not ok and len(world.performed) == 1
    assert lines[-2] == (
        "stopped at dc1: stop-airflow: every Airflow unit inactive: not observed within 60 s "
        "of the step"
    )


def test_a_failed_step_stops_the_run() -> None:
    world = ModelWorld(HEALTHY, fail=Action.DEMOTE_POSTGRESQL)
    ok, lines = drive(world, _switch)
    assert not ok
    assert lines[-2] == "stopped at dc1: demote-postgresql: ssh: connection reset"
    assert lines[-1] == "this run did: dc1: stop-airflow; dc2: add-standby-slot"


def test_the_memory_keeps_the_highest_position_and_the_pause() -> None:
    memory = Memory()
    first = memory.recall(HEALTHY, 0)
    assert first.site("dc1").postgresql.last_known == ex.FLUSHED
    # a later reading where dc1's members are gone still knows how far dc1 reached
    gone = ex.change(
        HEALTHY, "dc1", lambda s: replace(s, postgresql=replace(s.postgresql, members=()))
    )
    assert memory.recall(gone, 1).site("dc1").postgresql.last_known == ex.FLUSHED
    pause = next(s for s in SWITCH.steps if s.action is Action.PAUSE_REDIS)
    memory.performed(pause, 10)
    assert memory.recall(HEALTHY, 11).site("dc1").redis.paused
    assert not memory.recall(HEALTHY, 10 + REDIS_PAUSE_SECONDS).site("dc1").redis.paused


def test_a_run_stopped_after_the_pause_pauses_again_when_run_again() -> None:
    # The pause is this run's memory (Redis 7.0 reports none): a second run cannot know
    # whether it still holds, so it pauses again before it promotes.
    world = ModelWorld(HEALTHY, fail=Action.PROMOTE_REDIS)
    ok, _ = drive(world, _switch)
    assert not ok and world.performed[-2].action is Action.PAUSE_REDIS
    forgotten = ex.change(
        world.observed, "dc1", lambda s: replace(s, redis=replace(s.redis, paused=False))
    )
    again = ModelWorld(forgotten)
    ok, lines = drive(again, _switch)
    assert ok, "\n".join(lines)
    assert [s.action for s in again.performed][:2] == [Action.PAUSE_REDIS, Action.PROMOTE_REDIS]


def test_failover_and_failback_loops_end_with_an_empty_plan() -> None:
    world = ModelWorld(LOST)
    ok, lines = drive(world, lambda o: plan_failover(o, "dc2", "dc1"))
    assert ok, "\n".join(lines)
    back = ex.reachable_again(world.observed, "dc1", HEALTHY)
    world = ModelWorld(back)
    ok, lines = drive(world, lambda o: plan_failover(o, "dc2"))
    assert ok, "\n".join(lines)
    world = ModelWorld(world.observed)
    ok, lines = drive(world, lambda o: plan_failback(o, "dc1"))
    assert ok, "\n".join(lines)
    assert world.observed.model_active == "dc1"


def test_a_plan_that_goes_as_expected_is_printed_once() -> None:
    world = ModelWorld(ex.lagging(HEALTHY, 3_200))
    ok, lines = drive(world, _switch)
    assert ok and "plan now:" not in lines


def test_a_reading_that_changes_the_plan_shows_the_new_plan() -> None:
    # Someone starts dc2's Airflow while the command stops dc1's: the plan no longer
    # starts it, and the operator sees the plan it follows now.
    class Busy(ModelWorld):
        def perform(self, step: Step, observed: Observed) -> str:
            text = super().perform(step, observed)
            if step.action is Action.STOP_AIRFLOW:
                start = next(s for s in SWITCH.steps if s.action is Action.START_AIRFLOW)
                self.observed = apply(self.observed, start)
            return text

    world = Busy(HEALTHY)
    ok, lines = drive(world, _switch)
    assert ok, "\n".join(lines)
    assert "plan now:" in lines
    assert Action.START_AIRFLOW not in [s.action for s in world.performed]


def test_a_refusal_read_mid_change_is_read_again() -> None:
    # One reading right after the demote sees dc1 without its standby configuration yet
    # (a /config one Patroni loop old): the plan refuses that reading; the next is whole.
    class Midway(ModelWorld):
        glitch = False

        def observe(self) -> Observed:
            observed = super().observe()
            last = self.performed[-1] if self.performed else None
            if last is not None and last.action is Action.DEMOTE_POSTGRESQL and not self.glitch:
                self.glitch = True
                return ex.change(
                    observed,
                    "dc1",
                    lambda s: replace(s, postgresql=replace(s.postgresql, standby_of=None)),
                )
            return observed

    world = Midway(ex.lagging(HEALTHY, 3_200))
    ok, lines = drive(world, _switch)
    assert world.glitch and ok, "\n".join(lines)


def test_a_refusal_that_lasts_stops_the_run_after_the_steps_time() -> None:
    class Broken(ModelWorld):
        def observe(self) -> Observed:
            observed = super().observe()
            if any(s.action is Action.DEMOTE_POSTGRESQL for s in self.performed):
                return ex.change(
                    observed,
                    "dc1",
                    lambda s: replace(s, postgresql=replace(s.postgresql, standby_of=None)),
                )
            return observed

    world = Broken(HEALTHY)
    ok, lines = drive(world, _switch)
    assert not ok
    assert lines[-3].startswith("dc-switchover refused: no writable primary"), lines[-3:]
    assert lines[-1].endswith("dc1: demote-postgresql")
    assert world.clock.now >= 120  # the demote's settle time
