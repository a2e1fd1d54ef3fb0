"""The Airflow roll's decisions, without a host: what the executor read on the host (the
DC's alive jobs, the clock, a failed ``systemctl``, the latest probe of the health
endpoint or of the restarted jobs) and what the roll did in, the next step out, the way
``tests/test_patroni_roll_decisions.py`` tests Patroni's. Refusals are compared with their
whole message (``plinth up`` prints it).

Each host rolls only itself (the operation is ``_serial``: the hosts take turns); another
host being down shows as fewer alive jobs of a type than hosts of its role. The standby
site gets no roll at all (``test_standby_site_installs_units_stopped_and_never_migrates``).
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import replace

import pytest

from operations.airflow.decide import (
    JOBS_STARTED_SINCE,
    CountAlive,
    Done,
    Observed,
    Probe,
    ProbeReading,
    ReadClock,
    Refuse,
    RollProgress,
    RollSpec,
    RollStep,
    Step,
    Systemctl,
    next_step,
)
from operations.airflow.settings import RESTART_MARKER
from plinth.model import Role

FQDN = "dc1-app1.dc1.grid.plinth.internal"
WRAPPER = "/usr/local/sbin/plinth-airflow"
HEALTH = (
    "curl -sf -m 5 --cacert /etc/plinth/tls/airflow-api/ca.crt "
    f"https://{FQDN}:8443/api/v2/monitor/health"
)
EVERY_UNIT = (
    (Role.AIRFLOW_API, "airflow-api-server"),
    (Role.AIRFLOW_SCHEDULER, "airflow-scheduler"),
    (Role.AIRFLOW_DAG_PROCESSOR, "airflow-dag-processor"),
    (Role.AIRFLOW_TRIGGERER, "airflow-triggerer"),
    (Role.AIRFLOW_WORKER, "airflow-worker"),
)
# dc1-app1 of the example: every role; two schedulers and triggerers in the DC, one
# dag-processor (no peer: not gated).
PEERS = (
    (Role.AIRFLOW_API, 2),
    (Role.AIRFLOW_SCHEDULER, 2),
    (Role.AIRFLOW_DAG_PROCESSOR, 1),
    (Role.AIRFLOW_TRIGGERER, 2),
    (Role.AIRFLOW_WORKER, 3),
)
SPEC = RollSpec(FQDN, EVERY_UNIT, PEERS, HEALTH)
NO_TLS = replace(SPEC, health_command=None)
WORKER_ONLY = RollSpec(FQDN, ((Role.AIRFLOW_WORKER, "airflow-worker"),), PEERS, None)
# The worker was just started by this run (it was stopped): it is not rolled.
WORKER_STARTED = replace(SPEC, units=EVERY_UNIT[:4])
ALONE = replace(SPEC, peers=tuple((role, 1) for role, _ in PEERS))

STOP_WORKER = RollStep("stop", ("airflow-worker",))
RESTART_API = RollStep("restart", ("airflow-api-server",), "health")
START_WORKER = RollStep("start", ("airflow-worker",))
JOBS = ("airflow-scheduler", "airflow-triggerer", "airflow-dag-processor")
RESTART_JOBS = RollStep("restart", JOBS, "jobs")

START = RollProgress()
STOPPED = RollProgress((STOP_WORKER,))
API_RESTARTED = RollProgress((STOP_WORKER, RESTART_API))
WORKER_BACK = RollProgress((STOP_WORKER, RESTART_API, START_WORKER))
ALL = RollProgress((STOP_WORKER, RESTART_API, START_WORKER, RESTART_JOBS))

COUNTED = Observed(alive={"SchedulerJob": 2, "TriggererJob": 2})
CLOCK = replace(COUNTED, clock=("1765000000",))
JOBS_PROBE = (
    f"{WRAPPER} --python -c {shlex.quote(JOBS_STARTED_SINCE)} 1765000000 "
    "SchedulerJob TriggererJob DagProcessorJob"
)
REFUSED = f"Airflow roll of {FQDN} refused: "
DONE_UP_TO_API = "; done so far: stop airflow-worker, restart airflow-api-server"
DONE_UP_TO_WORKER = f"{DONE_UP_TO_API}, start airflow-worker"


def count(job: str) -> CountAlive:
    return CountAlive(job, f"{WRAPPER} jobs check --job-type {job} --allow-multiple --limit 100")


def systemctl(step: RollStep) -> Systemctl:
    names = " ".join(f"{u}.service" for u in step.units)
    return Systemctl(step, f"systemctl {step.action} {names}")


def probed(seen: Observed, passed: bool, waited: float, *last: str) -> Observed:
    return replace(seen, probe=ProbeReading(passed, waited, last))


@pytest.mark.parametrize(
    ("seen", "spec", "done", "expected"),
    [
        # ---- before anything stops: the gate ----
        pytest.param(
            Observed(), replace(SPEC, units=()), START,
            Done(f"Airflow on {FQDN} rolled: nothing to restart"),
            id="nothing to restart: every unit was just started by this run",
        ),
        pytest.param(
            Observed(), SPEC, START, count("SchedulerJob"),
            id="first: count the DC's schedulers (they have a peer)",
        ),
        pytest.param(
            Observed(alive={"SchedulerJob": 2}), SPEC, START, count("TriggererJob"),
            id="schedulers all alive: count the triggerers next",
        ),
        pytest.param(
            Observed(alive={"SchedulerJob": 1}), SPEC, START,
            Refuse(
                f"{REFUSED}only 1 of 2 SchedulerJobs alive: another is already down, and "
                f"restarting the one on {FQDN} could leave none; nothing was stopped"
            ),
            id="another host's scheduler is down before this host's turn",
        ),
        pytest.param(
            Observed(alive={"SchedulerJob": 2, "TriggererJob": 0}), SPEC, START,
            Refuse(
                f"{REFUSED}only 0 of 2 TriggererJobs alive: another is already down, and "
                f"restarting the one on {FQDN} could leave none; nothing was stopped"
            ),
            id="no triggerer alive anywhere",
        ),
        pytest.param(
            Observed(alive={"SchedulerJob": None}), SPEC, START,
            Refuse(
                f"{REFUSED}cannot count the alive SchedulerJobs (airflow jobs check failed); "
                "nothing was stopped"
            ),
            id="jobs check unreadable (database or wrapper failing)",
        ),
        pytest.param(
            Observed(), ALONE, START, systemctl(STOP_WORKER),
            id="no peers in the DC: nothing to count, the worker stops first",
        ),
        pytest.param(
            COUNTED, SPEC, START, systemctl(STOP_WORKER),
            id="every peer alive: the worker drains first",
        ),
        pytest.param(
            COUNTED, WORKER_STARTED, START, systemctl(RESTART_API),
            id="the worker was started by this run: the api-server first",
        ),
        # ---- the api-server, behind its health endpoint ----
        pytest.param(
            COUNTED, SPEC, STOPPED, systemctl(RESTART_API),
            id="worker stopped: restart the api-server",
        ),
        pytest.param(
            replace(COUNTED, failed="Job for airflow-worker.service failed."), SPEC, START,
            Refuse(
                f"{REFUSED}systemctl stop airflow-worker.service failed: "
                "Job for airflow-worker.service failed.; nothing was stopped"
            ),
            id="systemctl stop fails",
        ),
        pytest.param(
            COUNTED, SPEC, API_RESTARTED, Probe("health", HEALTH, 30),
            id="api-server restarted: probe its health now",
        ),
        pytest.param(
            probed(COUNTED, False, 40.2), SPEC, API_RESTARTED, Probe("health", HEALTH, 30, 3),
            id="health silent for 40 s: probe again in 3 s",
        ),
        pytest.param(
            probed(COUNTED, False, 180.4), SPEC, API_RESTARTED,
            Refuse(
                f"{REFUSED}the api-server's health endpoint is silent after 180 s"
                f"{DONE_UP_TO_API}"
            ),
            id="health silent past 180 s: refused, naming what was done",
        ),
        pytest.param(
            probed(COUNTED, True, 12), SPEC, API_RESTARTED, systemctl(START_WORKER),
            id="health answers: the worker starts again",
        ),
        pytest.param(
            COUNTED, NO_TLS, API_RESTARTED, systemctl(START_WORKER),
            id="no api-server certificate: no health wait",
        ),
        # ---- the jobs, behind "started since the host's clock" ----
        pytest.param(
            probed(COUNTED, True, 12), SPEC, WORKER_BACK, ReadClock(),
            id="worker back: read the host's clock before the jobs restart",
        ),
        pytest.param(
            replace(probed(COUNTED, True, 12), clock=("date: cannot read",)), SPEC, WORKER_BACK,
            Refuse(
                f"{REFUSED}cannot read the host's clock: ['date: cannot read']"
                f"{DONE_UP_TO_WORKER}"
            ),
            id="clock unreadable: refused before the jobs restart",
        ),
        pytest.param(
            replace(probed(COUNTED, True, 12), clock=()), SPEC, WORKER_BACK,
            Refuse(f"{REFUSED}cannot read the host's clock: []{DONE_UP_TO_WORKER}"),
            id="clock printed nothing",
        ),
        pytest.param(
            probed(CLOCK, True, 12), SPEC, WORKER_BACK, systemctl(RESTART_JOBS),
            id="clock read: the three jobs restart together",
        ),
        pytest.param(
            replace(probed(CLOCK, True, 12), failed="x" * 290 + "0123456789"), SPEC, WORKER_BACK,
            Refuse(
                f"{REFUSED}systemctl restart airflow-scheduler.service "
                "airflow-triggerer.service airflow-dag-processor.service failed: "
                f"{'x' * 290}0123456789{DONE_UP_TO_WORKER}"
            ),
            id="jobs' restart fails: stderr's last 300 characters",
        ),
        pytest.param(
            CLOCK, SPEC, ALL, Probe("jobs", JOBS_PROBE, 120),
            id="jobs restarted: probe them, started since the clock",
        ),
        pytest.param(
            probed(CLOCK, False, 60, "SchedulerJob"), SPEC, ALL,
            Probe("jobs", JOBS_PROBE, 120, 5),
            id="a job not alive yet: probe again in 5 s",
        ),
        pytest.param(
            probed(CLOCK, False, 184.6, "SchedulerJob TriggererJob"), SPEC, ALL,
            Refuse(
                f"{REFUSED}not alive on this host 185 s after their restart: "
                f"SchedulerJob TriggererJob{DONE_UP_TO_WORKER}, "
                "restart airflow-scheduler airflow-triggerer airflow-dag-processor"
            ),
            id="jobs still not alive past 180 s: refused with those missing",
        ),
        pytest.param(
            probed(CLOCK, False, 181), SPEC, ALL,
            Refuse(
                f"{REFUSED}not alive on this host 181 s after their restart: "
                f"SchedulerJob TriggererJob DagProcessorJob{DONE_UP_TO_WORKER}, "
                "restart airflow-scheduler airflow-triggerer airflow-dag-processor"
            ),
            id="probe printed nothing: every restarted job named",
        ),
        # ---- done ----
        pytest.param(
            probed(CLOCK, True, 20), SPEC, ALL,
            Done(
                f"Airflow on {FQDN} rolled: stop airflow-worker; restart airflow-api-server; "
                "start airflow-worker; restart airflow-scheduler airflow-triggerer "
                "airflow-dag-processor"
            ),
            id="all done on this host",
        ),
        pytest.param(
            Observed(), WORKER_ONLY, RollProgress((STOP_WORKER, START_WORKER)),
            Done(f"Airflow on {FQDN} rolled: stop airflow-worker; start airflow-worker"),
            id="worker-only host: drained and started, no check",
        ),
    ],
)  # fmt: skip
def test_next_step(seen: Observed, spec: RollSpec, done: RollProgress, expected: Step) -> None:
    assert next_step(seen, spec, done) == expected


# ---- the executor: runs what the decision says, records what it read ----


class _Output:
    def __init__(self, stdout: list[str]) -> None:
        self.stdout_lines, self.stderr_lines = stdout, ["stderr"]


class _Host:
    """A host answering each command by its first word(s); records commands and logs."""

    def __init__(self, answers: dict[str, list[tuple[bool, list[str]]]]) -> None:
        self.current_op_global_arguments: dict[str, object] = {}
        self.answers = answers
        self.ran: list[tuple[str, object]] = []
        self.logged: list[str] = []

    def run_shell_command(self, command: object, **kwargs: object) -> tuple[bool, _Output]:
        text = str(command)
        self.ran.append((text, kwargs["_timeout"]))
        key = next(k for k in self.answers if text.startswith(k))
        queue = self.answers[key]
        ok, out = queue.pop(0) if len(queue) > 1 else queue[0]
        return ok, _Output(out)

    def log_styled(self, message: str, **_: object) -> None:
        self.logged.append(message)

    def log(self, message: str, *_: object) -> None:
        self.logged.append(message)


class _Started:
    def __init__(self, changed: bool) -> None:
        self.changed = changed

    def did_change(self) -> bool:
        return self.changed


def _roll(answers: dict[str, list[tuple[bool, list[str]]]], worker_started: bool) -> _Host:
    from operations.airflow.roll import _gated_roll

    # the example's dc1-app1, as tests/test_airflow_services.py builds it from the model
    config = importlib.import_module("test_airflow_services").spec_for("dc1-app1")
    started = {
        unit: _Started(unit == "airflow-worker" and worker_started) for _, unit in EVERY_UNIT
    }
    host = _Host(answers)
    host.logged.append(f"returned {_gated_roll(None, host, config, started)}")
    return host


def test_the_executor_runs_the_decided_commands_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("operations.airflow.roll.time.sleep", slept.append)
    host = _roll(
        {
            f"{WRAPPER} jobs check": [(True, ["Found 2 alive jobs."])],
            "systemctl": [(True, [])],
            "curl": [(False, []), (True, [])],  # silent once, then answers
            "date": [(True, ["1765000000"])],
            f"{WRAPPER} --python": [(True, [""])],
            "rm -f": [(True, [])],
        },
        worker_started=True,
    )
    assert host.ran == [
        (count("SchedulerJob").command, 120),
        (count("TriggererJob").command, 120),
        ("systemctl restart airflow-api-server.service", 660),
        (HEALTH, 30),
        (HEALTH, 30),
        ("date +%s", 30),
        (
            "systemctl restart airflow-scheduler.service airflow-triggerer.service "
            "airflow-dag-processor.service",
            660,
        ),
        (JOBS_PROBE, 120),
        # rolled: the restart is no longer pending (a refused roll keeps the marker)
        (f"rm -f {RESTART_MARKER}", 60),
    ]
    assert slept == [3]
    assert host.logged == [
        f"Airflow on {FQDN} rolled: restart airflow-api-server; "
        "restart airflow-scheduler airflow-triggerer airflow-dag-processor",
        "returned True",
    ]


def test_the_executor_stops_at_a_refusal_having_changed_nothing() -> None:
    host = _roll({f"{WRAPPER} jobs check": [(True, ["Found one alive job."])]}, False)
    assert [command for command, _ in host.ran] == [count("SchedulerJob").command]
    assert host.logged == [
        f"error: {REFUSED}only 1 of 2 SchedulerJobs alive: another is already down, and "
        f"restarting the one on {FQDN} could leave none; nothing was stopped",
        "returned False",
    ]
