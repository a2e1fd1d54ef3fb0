"""The loop that runs a DC command's plan (ADR 0013's shape): observe both sites, ask the
plan function, perform only the first step, wait until the plan moves past it (bounded),
observe again and plan again, until the plan is empty or a refusal.

Performing is not deciding: the loop takes an :class:`Executor` (reading the sites and
doing one step on their hosts), so ``tests/test_geo_execute.py`` drives it with
:mod:`plinth.geo.simulate`'s model of the steps, and :mod:`plinth.geo.actions` does the
same steps over SSH. Nothing here reads a host or a clock directly.

What the loop remembers across its readings (:class:`Memory`), because the hosts do not
say it: the highest WAL position read of each site (:attr:`PgSite.last_known`) and a
Redis pause it set (:attr:`RedisSite.paused`; Redis 7.0 does not report one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from plinth.geo.decide import Action, Plan, Refusal, Step
from plinth.geo.observe import Observed

REDIS_PAUSE_SECONDS = 90
"""How long ``CLIENT PAUSE ... WRITE`` holds the old master's writes: longer than the
candidate's catch-up wait (:data:`plinth.geo.decide.CATCH_UP_SECONDS`) plus a reading of
both sites between the pause and the promotion. If the command dies in between, writes
resume by themselves after it (the next run pauses again before it promotes)."""

SETTLE_SECONDS: dict[Action, float] = {
    Action.STOP_AIRFLOW: 60,
    Action.START_AIRFLOW: 300,
    Action.DEMOTE_POSTGRESQL: 120,
    Action.PROMOTE_POSTGRESQL: 120,
    Action.FOLLOW_REDIS: 120,
    Action.START_SENTINELS: 60,
}
"""How long the loop reads again after a step without a bound of its own, until the plan
no longer starts with it (the step shows in the reading); the rest get
:data:`DEFAULT_SETTLE_SECONDS`."""
DEFAULT_SETTLE_SECONDS = 30.0
POLL_SECONDS = 2.0
"""Between two readings while a step settles."""


class StepFailed(Exception):
    """A step could not be performed (a command failed, its own wait ran out): the loop
    stops there, with what the run already did."""


class Executor(Protocol):
    """What the loop needs from the world: one reading of every site, and one step done."""

    def observe(self) -> Observed:
        """Every site, read once (an unreachable host is recorded, never skipped)."""
        ...

    def perform(self, step: Step, observed: Observed) -> str:
        """Do ``step`` on its hosts (``observed``: the reading it was planned from) and
        say in one line what was done; idempotent; :class:`StepFailed` when it cannot."""
        ...


@dataclass
class Memory:
    """What the run remembers between readings (see the module docstring)."""

    positions: dict[str, int] = field(default_factory=dict)
    """Site -> the highest WAL position read of it."""
    paused_until: dict[str, float] = field(default_factory=dict)
    """Site -> when the Redis pause this run set on its master ends (the clock's time)."""

    def recall(self, observed: Observed, now: float) -> Observed:
        """``observed`` completed with the memory, which it updates."""
        sites = []
        for site in observed.sites:
            pg = site.postgresql
            position = pg.position
            if position is not None:
                self.positions[site.name] = max(position, self.positions.get(site.name, 0))
            known = self.positions.get(site.name)
            if known is not None and (pg.last_known is None or known > pg.last_known):
                pg = replace(pg, last_known=known)
            redis = site.redis
            until = self.paused_until.get(site.name)
            if until is not None and now >= until:
                del self.paused_until[site.name]
                until = None
            if until is not None and not redis.paused:
                redis = replace(redis, paused=True)
            sites.append(replace(site, postgresql=pg, redis=redis))
        return replace(observed, sites=tuple(sites))

    def performed(self, step: Step, now: float) -> None:
        if step.action is Action.PAUSE_REDIS:
            self.paused_until[step.site] = now + REDIS_PAUSE_SECONDS
        elif step.action is Action.FOLLOW_REDIS:
            # Its master became a replica (and was unpaused): nothing of it is held now.
            self.paused_until.pop(step.site, None)
        elif step.action in (Action.REJOIN_POSTGRESQL, Action.RECLONE_POSTGRESQL):
            # A new lineage: positions of the old one no longer bound anything there.
            self.positions.pop(step.site, None)


@dataclass(frozen=True)
class Outcome:
    """How a run ended."""

    ok: bool
    """The goal is reached (or, dry, the plan was shown); False: refused or stopped."""
    done: tuple[str, ...]
    """What this run performed, one line per step."""
    final: Plan | Refusal | None
    """The last plan or refusal (None when a step failed before a new reading)."""

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _shape(steps: tuple[Step, ...]) -> tuple[tuple[str, Action, tuple[str, ...]], ...]:
    """What a plan will do (not why): two readings that agree give the same shape."""
    return tuple((s.site, s.action, s.hosts) for s in steps)


def _same(a: Step, b: Step) -> bool:
    return a.site == b.site and a.action is b.action


def run(
    planner: Callable[[Observed], Plan | Refusal],
    executor: Executor,
    say: Callable[[str], None],
    *,
    dry: bool = False,
    confirm: Callable[[Plan], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
) -> Outcome:
    """Run ``planner``'s plan to its end, one step at a time (see the module docstring).

    + dry: print the first plan and stop (nothing is performed)
    + confirm: asked once, with the first plan, before the first step (False: stop)
    """
    memory = Memory()
    done: list[str] = []

    def stop(lines: list[str], final: Plan | Refusal | None) -> Outcome:
        for line in lines:
            say(line)
        say("this run did: " + "; ".join(done) if done else "this run changed nothing")
        return Outcome(False, tuple(done), final)

    observed = memory.recall(executor.observe(), clock())
    result = planner(observed)
    if isinstance(result, Refusal):
        return stop(result.lines(), result)
    for line in result.lines():
        say(line)
    if result.done or dry:
        return Outcome(True, (), result)
    if confirm is not None and not confirm(result):
        return stop(["declined: nothing was done"], result)
    # Each step is performed once per plan position; a plan that keeps asking for more
    # than this is not converging (a model and a world that disagree): stop, not spin.
    budget = 3 * len(result.steps) + 10
    expected: tuple[tuple[str, Action, tuple[str, ...]], ...] = _shape(result.steps)
    while True:
        if isinstance(result, Refusal):
            return stop(result.lines(), result)
        if result.done:
            say(f"done: {result.found}")
            return Outcome(True, tuple(done), result)
        if _shape(result.steps) != expected:
            # The reading differs from what the last plan expected: show the new plan.
            say("plan now:")
            for line in result.lines()[1:]:
                say(f"  {line}")
        budget -= 1
        if budget < 0:
            return stop(["stopped: the plan does not converge", *result.lines()], result)
        step = result.steps[0]
        first, *_ = step.lines()
        say(f"-> {first}")
        try:
            what = executor.perform(step, observed)
        except StepFailed as failed:
            return stop([f"stopped at {step.site}: {step.action.value}: {failed}"], None)
        memory.performed(step, clock())
        expected = _shape(result.steps[1:])
        done.append(f"{step.site}: {step.action.value}" + (f" ({what})" if what else ""))
        if what:
            say(f"   {what}")
        bound = step.seconds or SETTLE_SECONDS.get(step.action, DEFAULT_SETTLE_SECONDS)
        deadline = clock() + bound
        while True:
            observed = memory.recall(executor.observe(), clock())
            result = planner(observed)
            if isinstance(result, Plan) and (result.done or not _same(result.steps[0], step)):
                break
            if clock() >= deadline:
                if isinstance(result, Refusal):
                    break  # it lasted: printed as the refusal it is
                reason = step.refusal or (
                    f"{step.waits_for}: not observed within {bound:.0f} s of the step"
                )
                return stop([f"stopped at {step.site}: {step.action.value}: {reason}"], result)
            # A refusal right after a step may be a reading taken mid-change (a member
            # between two roles, a configuration one Patroni loop old): read again
            # within the step's time before taking it for an answer.
            sleep(poll)
