"""The host-by-host roll, performed: each step :func:`.decide.next_step` gives is run on
the host (the step carries its command), what it read is recorded, and the next step is
asked for. Nothing here decides what comes next, which gate applies or what a refusal says.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

from pyinfra.api import FunctionCommand, operation

from operations.airflow.decide import (
    CountAlive,
    Done,
    Observed,
    Probe,
    ProbeReading,
    ReadClock,
    Refuse,
    RollProgress,
    RollSpec,
    Systemctl,
    alive_jobs,
    next_step,
)
from operations.airflow.settings import RESTART_MARKER, AirflowConfig
from plinth.rolling import note, refuse, run


def _gated_roll(state: Any, host: Any, spec: AirflowConfig, just_started: dict[str, Any]) -> bool:
    """Execute-time: roll this host's units as :func:`.decide.next_step` says.

    + just_started: each unit's ``systemd.service`` operation of this run (one that
      changed started the unit: it runs the new configuration already)
    """
    started = frozenset(unit for unit, op in just_started.items() if op.did_change())
    roll = RollSpec.of(spec, started)
    seen, done = Observed(), RollProgress()
    began = 0.0  # when the first probe of the current check ran
    # Each action is performed once and each check is probed for a bounded time: the
    # loop ends.
    while True:
        step = next_step(seen, roll, done)
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        if isinstance(step, Done):
            run(host, f"rm -f {RESTART_MARKER}")
            note(host, step.message)
            return True
        if isinstance(step, CountAlive):
            _, out, err = run(host, step.command, timeout=step.timeout)
            seen = replace(seen, alive={**seen.alive, step.job: alive_jobs(out + err)})
        elif isinstance(step, ReadClock):
            seen = replace(seen, clock=tuple(run(host, step.command, step.timeout)[1]))
        elif isinstance(step, Systemctl):
            ok, _, err = run(host, step.command, step.timeout)
            if not ok:
                seen = replace(seen, failed=" ".join(err))
                continue
            done = done.after(step)
            seen = replace(seen, probe=None)  # the next check is the new step's
        else:
            assert isinstance(step, Probe)
            if step.pause:
                time.sleep(step.pause)
            else:
                began = time.monotonic()
            ok, out, _ = run(host, step.command, step.timeout)
            reading = ProbeReading(ok, time.monotonic() - began, tuple(out[-1:]))
            seen = replace(seen, probe=reading)


@operation(is_idempotent=False)
def rolled(
    spec: AirflowConfig, just_started: dict[str, Any]
) -> Generator[FunctionCommand, None, None]:
    """Restart this host's Airflow units behind live gates (run it ``_serial=True``):
    hosts one after the other, so two schedulers are never down together."""
    yield FunctionCommand(_gated_roll, (spec, just_started), {})
