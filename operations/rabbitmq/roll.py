"""The rolling restart, performed: each step :func:`.decide.next_step` gives is done
(``systemctl restart``), waited out, the cluster read again and the next step asked for.
Nothing here decides what comes next. After the last restart, quorum queue leaders are
rebalanced once per cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation
from pyinfra.api.exceptions import FactProcessError

from facts.rabbitmq import CLUSTER_COMMAND, RabbitmqClusterState, parse_rabbitmq_cluster
from operations.rabbitmq.converge import service_running
from operations.rabbitmq.decide import (
    Done,
    Refuse,
    Restart,
    RollProgress,
    RollSpec,
    Step,
    Wait,
    next_step,
    recovery,
)
from operations.rabbitmq.settings import RESTART_MARKER, SERVICE, RabbitmqInput
from plinth.rolling import note, refuse, run, wait_for

# Clusters a rolling restart touched in this run, and those already rebalanced after it.
# Operations run host by host inside one process, so the last step of the roll (a
# rebalance, once) can see what the serial restarts did.
_RESTARTED: set[str] = set()
_REBALANCED: set[str] = set()


def read_cluster(target: Any) -> RabbitmqClusterState | None:
    """The cluster as the node sees it now (None: not running, or an unreadable answer)."""
    ok, out, _ = run(target, CLUSTER_COMMAND, timeout=120)
    if not ok:
        return None
    try:
        return parse_rabbitmq_cluster(out)
    except FactProcessError:
        return None


def wait_out(waiting: Wait, ask: Callable[[], Step]) -> tuple[Step | None, float]:
    """Ask again every ``waiting.interval`` until the decision is no longer ``waiting``:
    the new step (None once ``waiting.seconds`` passed) and the seconds waited."""

    def moved_on() -> Step | None:
        step = ask()
        return None if step == waiting else step

    return wait_for(
        moved_on, waiting.seconds, interval=waiting.interval, waiting_for=waiting.refusal
    )


def _gated_restart(state: Any, host: Any, spec: RabbitmqInput) -> bool:
    """Execute-time: restart this node only while the whole cluster can spare it, as
    :func:`.decide.next_step` says, one step after the other."""
    roll = RollSpec.of(spec)
    done = RollProgress()

    def ask() -> Step:
        return next_step(read_cluster(host), roll, done)

    step = ask()
    waited = 0.0
    # Each step restarts the node once, or waits (bounded): the loop ends.
    while not isinstance(step, Done):
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        done = done.after(step)
        if isinstance(step, Wait):
            found, waited = wait_out(step, ask)
            if found is not None:
                step = found
            elif step.refusal is not None:
                return refuse(host, step.refusal)
            else:
                done = done.ran_out(waited)
                step = ask()
            continue
        assert isinstance(step, Restart)
        what = f"RabbitMQ restart of {step.node}"
        note(host, f"{what}: cluster healthy and {step.node} not quorum-critical; restarting")
        ok, _, err = run(host, f"systemctl restart {SERVICE}", timeout=600)
        _RESTARTED.add(spec.cluster_name)
        if not ok:
            return refuse(
                host, f"{what} failed: {' '.join(err)[-300:]}; see journalctl -u {SERVICE}"
            )
        step = recovery(roll)
    run(host, f"rm -f {RESTART_MARKER}")
    note(host, f"{spec.node} restarted, all nodes running again in {waited:.1f} s")
    return True


@operation(is_idempotent=False)
def rolling_restart(spec: RabbitmqInput) -> Generator[FunctionCommand, None, None]:
    """Restart this node behind a live gate (run it ``_serial=True``); a stopped node is
    started by :func:`.converge.node_started` instead."""
    if not service_running():
        host.noop("rabbitmq-server is not running yet: nothing to restart")
        return
    yield FunctionCommand(_gated_restart, (spec,), {})


def restarted_in_this_run(cluster_name: str) -> bool:
    """A rolling restart of ``cluster_name`` happened in this run (read by the composition
    once the serial restarts are done)."""
    return cluster_name in _RESTARTED


def _rebalance(state: Any, host: Any, spec: RabbitmqInput) -> bool:
    if spec.cluster_name in _REBALANCED:
        return True
    _REBALANCED.add(spec.cluster_name)
    ok, out, err = run(host, "rabbitmq-queues -q rebalance all", timeout=300)
    if not ok:
        return refuse(host, f"rabbitmq-queues rebalance all failed: {' '.join(out + err)[-300:]}")
    note(host, f"quorum queue leaders rebalanced across {spec.cluster_name}")
    return True


@operation(is_idempotent=False)
def queues_rebalanced(spec: RabbitmqInput) -> Generator[FunctionCommand, None, None]:
    """After a rolling restart (every node done: operations run host by host, op by op),
    spread queue leaders again: restarts leave them on the nodes restarted first."""
    if not service_running():
        host.noop("rabbitmq-server is not running")
        return
    yield FunctionCommand(_rebalance, (spec,), {})
