"""The roll's decisions, pure: from what the executor has read on a host, the next step.

A changed input of the units (``airflow.cfg``, the environment or secrets files, the
Celery module, a unit file, the venv in use) rolls each Airflow host of the active site,
one host after the other (:func:`.roll.rolled` is ``_serial``). Every host rolls only
itself: its peers show through ``airflow jobs check``, which counts the DC's alive jobs
of a type in the metadata database, so "another host is down" reads as fewer alive jobs
than hosts of that role. The standby site has no roll (its units are stopped; the
composition in :mod:`.services` adds none there).

The order of one host's roll is :func:`roll_steps`; :func:`next_step` walks it the way
Patroni's ``ha.py`` walks a cluster (and :mod:`operations.patroni.decide` after it):
given what the executor has read so far (:class:`Observed`), the roll's spec
(:class:`RollSpec`) and what it already did (:class:`RollProgress`), one step: read
something (:class:`CountAlive`, :class:`ReadClock`, :class:`Probe`), act
(:class:`Systemctl`), :class:`Refuse` (the message the operator sees) or :class:`Done`.
Each step carries the exact command the executor runs; :mod:`.roll` runs it, records what
it read, and asks again. ``tests/test_airflow_roll_decisions.py`` is the table.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from facts.airflow import HEALTH_PATH
from operations.airflow.settings import WORKER_STOP_SECONDS, WRAPPER, AirflowConfig
from plinth.model import Role
from plinth.topology.airflow import COMPONENTS

JOB_TYPES: dict[Role, str] = {
    Role.AIRFLOW_SCHEDULER: "SchedulerJob",
    Role.AIRFLOW_TRIGGERER: "TriggererJob",
    Role.AIRFLOW_DAG_PROCESSOR: "DagProcessorJob",
}
JOB_WAIT_SECONDS = 180
"""How long a step's check (health endpoint, jobs alive) is probed before the roll refuses."""
HEALTH_INTERVAL = 3
JOBS_INTERVAL = 5
"""Seconds between two probes of the health endpoint, of the restarted jobs."""
# Run by ``plinth-airflow --python -c`` after a roll restarts a host's jobs: ``airflow
# jobs check --local`` as Airflow writes it, but counting only jobs started since the
# restart. (Right after a restart the old process's row may still look alive by its
# last heartbeat, for up to Airflow's 30 s threshold, if it did not exit cleanly.)
# argv: the host's epoch seconds before the restart, then the job types. Exit 1 with the
# job types not yet alive on stdout.
JOBS_STARTED_SINCE = """
import sys
from datetime import datetime, timezone
from sqlalchemy import select
from airflow.jobs.job import Job, JobState
from airflow.utils.net import get_hostname
from airflow.utils.session import create_session
since = datetime.fromtimestamp(float(sys.argv[1]), timezone.utc)
missing = []
with create_session() as session:
    for job_type in sys.argv[2:]:
        query = select(Job).where(
            Job.state == JobState.RUNNING, Job.job_type == job_type,
            Job.hostname == get_hostname(), Job.start_date >= since,
        )
        if not any(job.is_alive() for job in session.scalars(query)):
            missing.append(job_type)
print(" ".join(missing))
sys.exit(1 if missing else 0)
"""


@dataclass(frozen=True)
class RollStep:
    """One ``systemctl`` action of a host's roll and the check that must pass after it."""

    action: str  # stop | start | restart
    units: tuple[str, ...]
    check: str | None = None  # "health": the api-server answers; "jobs": alive locally


def roll_steps(units_by_role: Mapping[Role, str]) -> list[RollStep]:
    """The order of one host's roll (only the units it runs and this run did not start).

    1. The worker stops first: SIGTERM is Celery's warm shutdown, so it takes no new
       task and finishes those it runs (up to ``TimeoutStopSec``).
    2. The api-server restarts while the worker is down: the worker's tasks reach the
       execution API on this host, so none runs while it restarts (nginx sends users
       to the others), and it must answer its health endpoint before going on.
    3. The worker starts again on the new configuration.
    4. Triggerer, dag-processor and scheduler restart together (their peers on other
       hosts carry on) and must each be alive on this host afterwards.
    """
    worker = units_by_role.get(Role.AIRFLOW_WORKER)
    api_server = units_by_role.get(Role.AIRFLOW_API)
    jobs = tuple(units_by_role[r] for r in JOB_TYPES if r in units_by_role)
    steps = []
    if worker:
        steps.append(RollStep("stop", (worker,)))
    if api_server:
        steps.append(RollStep("restart", (api_server,), "health"))
    if worker:
        steps.append(RollStep("start", (worker,)))
    if jobs:
        steps.append(RollStep("restart", jobs, "jobs"))
    return steps


def alive_jobs(lines: list[str]) -> int | None:
    """Alive jobs from ``airflow jobs check --allow-multiple`` output (None: unreadable)."""
    for line in lines:
        found = re.search(r"Found (one|\d+) alive jobs?", line)
        if found:
            return 1 if found.group(1) == "one" else int(found.group(1))
        if "No alive jobs found" in line:
            return 0
    return None


def roll_refusal(job: str, alive: int | None, expected: int, host_name: str) -> str | None:
    """Why restarting ``host_name``'s ``job`` now would leave the DC without one."""
    if alive is None:
        return f"cannot count the alive {job}s (airflow jobs check failed)"
    if alive < expected:
        return (
            f"only {alive} of {expected} {job}s alive: another is already down, and "
            f"restarting the one on {host_name} could leave none"
        )
    return None


# ---- what a decision reads ----


@dataclass(frozen=True)
class RollSpec:
    """What one host's roll is about (from the model and this run; fixed for the roll)."""

    fqdn: str
    units: tuple[tuple[Role, str], ...]
    """(role, unit) of the units this host runs and this run did not just start (a unit
    the run just started already runs the new configuration), in :data:`COMPONENTS` order."""
    peers: tuple[tuple[Role, int], ...]
    """How many hosts of this datacenter run each Airflow role."""
    health_command: str | None
    """The api-server's health probe; None without an api-server certificate (no wait)."""

    @classmethod
    def of(cls, spec: AirflowConfig, just_started: Collection[str]) -> RollSpec:
        """+ just_started: units this run started (their ``systemd.service`` changed)."""
        health = None
        if spec.api_tls is not None:
            health = (
                f"curl -sf -m 5 --cacert {shlex.quote(spec.api_tls.ca_path)} "
                f"https://{spec.fqdn}:{spec.settings.api_port}{HEALTH_PATH}"
            )
        units = tuple(
            (role, unit)
            for role, (unit, _) in COMPONENTS.items()
            if role in spec.roles and unit not in just_started
        )
        return cls(spec.fqdn, units, spec.hosts_per_role, health)

    @property
    def by_role(self) -> dict[Role, str]:
        return dict(self.units)

    def gated(self) -> list[tuple[str, int]]:
        """(job type, hosts of its role) of each job this host runs that has peers: all of
        them must be alive before anything stops, in :data:`JOB_TYPES` order."""
        peers, by_role = dict(self.peers), self.by_role
        return [
            (job, peers[role])
            for role, job in JOB_TYPES.items()
            if role in by_role and peers.get(role, 0) > 1
        ]


@dataclass(frozen=True)
class ProbeReading:
    """The latest probe of the check after the step last performed."""

    passed: bool
    waited: float
    """Seconds since the check's first probe began, measured after this one."""
    last: tuple[str, ...] = ()
    """The probe's last line of output (the jobs check: the job types not yet alive)."""


@dataclass(frozen=True)
class Observed:
    """What the executor has read on the host during this roll."""

    alive: Mapping[str, int | None] = field(default_factory=dict)
    """Alive jobs of each job type in the DC (``airflow jobs check``; None: unreadable)."""
    clock: tuple[str, ...] | None = None
    """``date +%s``'s output, read before the jobs restart (None: not read yet)."""
    failed: str | None = None
    """The stderr of the ``systemctl`` action just run, when it failed."""
    probe: ProbeReading | None = None
    """The check after the step last performed (None: not probed since that step)."""


@dataclass(frozen=True)
class RollProgress:
    """What the roll has done: the ``systemctl`` actions that succeeded, in order."""

    performed: tuple[RollStep, ...] = ()

    def changes(self) -> tuple[str, ...]:
        return tuple(f"{s.action} {' '.join(s.units)}" for s in self.performed)

    def after(self, step: Step) -> RollProgress:
        """The progress once ``step`` was performed successfully."""
        if isinstance(step, Systemctl):
            return replace(self, performed=(*self.performed, step.step))
        return self


# ---- the steps ----


@dataclass(frozen=True)
class CountAlive:
    """Count the DC's alive ``job``s (before anything stops)."""

    job: str
    command: str
    timeout: int = 120


@dataclass(frozen=True)
class ReadClock:
    """Read the host's clock: the jobs restarted next must have started since."""

    command: str = "date +%s"
    timeout: int = 30


@dataclass(frozen=True)
class Systemctl:
    """Perform ``step`` (a worker's stop waits for its tasks, up to ``TimeoutStopSec``)."""

    step: RollStep
    command: str
    timeout: int = WORKER_STOP_SECONDS + 60


@dataclass(frozen=True)
class Probe:
    """Probe the check of the step just performed: after ``pause`` seconds, or, when 0,
    now as its first probe (the wait for it begins)."""

    check: str
    command: str
    timeout: int
    pause: float = 0


@dataclass(frozen=True)
class Refuse:
    """Stop the roll, logging ``message``: the host fails, the deploy stops."""

    message: str


@dataclass(frozen=True)
class Done:
    """The roll of this host is over; ``message`` is noted."""

    message: str


Step = CountAlive | ReadClock | Systemctl | Probe | Refuse | Done


def jobs_check_command(job: str) -> str:
    return f"{WRAPPER} jobs check --job-type {job} --allow-multiple --limit 100"


def _since(clock: tuple[str, ...] | None) -> str:
    return clock[-1].strip() if clock else ""


def next_step(seen: Observed, spec: RollSpec, done: RollProgress) -> Step:
    """The next step of one host's roll, from what was read and what was done.

    1. Before anything stops, each job type this host runs with peers on other hosts is
       counted, one after the other; fewer alive than hosts of its role (or no count)
       refuses: "nothing was stopped".
    2. Then :func:`roll_steps`, one ``systemctl`` action at a time; a failed action
       refuses. Before the jobs' restart the host's clock is read (not digits: refused).
    3. After the api-server's restart its health endpoint (when it has a certificate),
       after the jobs' restart a job of each type started since the clock, are probed
       every 3 s and 5 s up to :data:`JOB_WAIT_SECONDS`; still failing: refused.

    Every refusal after the first action names what the roll already did.
    """
    if not done.performed:
        for job, expected in spec.gated():
            if job not in seen.alive:
                return CountAlive(job, jobs_check_command(job))
            why = roll_refusal(job, seen.alive[job], expected, spec.fqdn)
            if why:
                return _refuse(spec, done, why)
    if done.performed:
        check = _check(seen, spec, done, done.performed[-1])
        if check is not None:
            return check
    plan = roll_steps(spec.by_role)
    if len(done.performed) >= len(plan):
        rolled = "; ".join(done.changes()) or "nothing to restart"
        return Done(f"Airflow on {spec.fqdn} rolled: {rolled}")
    step = plan[len(done.performed)]
    names = " ".join(f"{u}.service" for u in step.units)
    if seen.failed is not None:
        return _refuse(spec, done, f"systemctl {step.action} {names} failed: {seen.failed[-300:]}")
    if step.check == "jobs":
        if seen.clock is None:
            return ReadClock()
        if not _since(seen.clock).isdigit():
            return _refuse(spec, done, f"cannot read the host's clock: {list(seen.clock)}")
    return Systemctl(step, f"systemctl {step.action} {names}")


def _check(seen: Observed, spec: RollSpec, done: RollProgress, last: RollStep) -> Step | None:
    """The probe (or the refusal) the check after ``last`` still calls for; None when
    there is none or it passed."""
    if last.check == "health" and spec.health_command is not None:
        command, timeout, interval = spec.health_command, 30, HEALTH_INTERVAL
    elif last.check == "jobs":
        role_of = {unit: role for role, unit in spec.units}
        jobs = " ".join(JOB_TYPES[role_of[unit]] for unit in last.units)
        since = _since(seen.clock)
        command = f"{WRAPPER} --python -c {shlex.quote(JOBS_STARTED_SINCE)} {since} {jobs}"
        timeout, interval = 120, JOBS_INTERVAL
    else:
        return None
    probe = seen.probe
    if probe is None:
        return Probe(last.check, command, timeout)
    if probe.passed:
        return None
    if probe.waited < JOB_WAIT_SECONDS:
        return Probe(last.check, command, timeout, interval)
    if last.check == "health":
        why = f"the api-server's health endpoint is silent after {probe.waited:.0f} s"
    else:
        why = (
            f"not alive on this host {probe.waited:.0f} s after their restart: "
            f"{' '.join(probe.last) or jobs}"
        )
    return _refuse(spec, done, why)


def _refuse(spec: RollSpec, done: RollProgress, why: str) -> Refuse:
    changes = done.changes()
    left = f"; done so far: {', '.join(changes)}" if changes else "; nothing was stopped"
    return Refuse(f"Airflow roll of {spec.fqdn} refused: {why}{left}")
