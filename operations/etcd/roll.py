"""The rolling restart, performed: each step :func:`.decide.next_step` gives is done
(``etcdctl move-leader``, ``systemctl restart``), waited out, the cluster read again and
the next step asked for. Nothing here decides what comes next.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation
from pyinfra.facts.systemd import SystemdStatus

from facts.etcd import EtcdClusterState, parse_etcd_cluster
from operations.etcd.decide import (
    Done,
    MoveLeader,
    Refuse,
    Restart,
    RollProgress,
    RollSpec,
    Step,
    Wait,
    next_step,
    recovery,
)
from operations.etcd.settings import EtcdInput
from plinth.rolling import note, refuse, run, wait_for


def read_cluster(target: Any, spec: EtcdInput) -> EtcdClusterState | None:
    ok, out, _ = run(target, spec.cluster_command())
    return parse_etcd_cluster(out) if ok else None


def wait_out(waiting: Wait, ask: Callable[[], Step]) -> tuple[Step | None, float]:
    """Ask again every second until the decision is no longer ``waiting``: the new step
    (None once ``waiting.seconds`` passed) and the seconds waited."""

    def moved_on() -> Step | None:
        step = ask()
        return None if step == waiting else step

    return wait_for(moved_on, waiting.seconds, waiting_for=waiting.refusal)


def _gated_restart(state: Any, host: Any, spec: EtcdInput) -> bool:
    """Execute-time: restart this member only while the whole cluster is healthy, as
    :func:`.decide.next_step` says, one step after the other."""
    roll = RollSpec.of(spec)
    done = RollProgress()
    seen = read_cluster(host, spec)
    step: Step = next_step(seen, roll, done)
    waited = 0.0

    def ask() -> Step:
        return next_step(read_cluster(host, spec), roll, done)

    # A move, a restart, each at most once, and a bounded wait: the loop ends.
    while not isinstance(step, Done):
        if isinstance(step, Refuse):
            return refuse(host, step.message)
        if isinstance(step, Wait):
            after, waited = wait_out(step, ask)
            if after is None:
                return refuse(host, step.refusal)
            step = after
            continue
        done = done.after(step)
        if isinstance(step, MoveLeader):
            note(host, f"etcd: moving leadership from {step.member} to {step.successor}")
            ok, _, err = run(
                host,
                spec.etcdctl_env()
                + f"; ETCDCTL_ENDPOINTS={step.client_url} etcdctl move-leader {step.successor_id}",
            )
            if not ok:
                return refuse(host, f"etcd move-leader failed: {' '.join(err)[-300:]}")
            # The restart follows on the same reading (nothing is read after the move).
            step = next_step(seen, roll, done)
            continue
        assert isinstance(step, Restart)
        ok, _, err = run(host, "systemctl restart etcd.service", timeout=120)
        if not ok:
            return refuse(host, f"etcd restart of {step.member} failed: {' '.join(err)[-300:]}")
        step = recovery(roll)
    note(host, f"etcd member {spec.name} restarted, cluster healthy again in {waited:.1f} s")
    return True


@operation(is_idempotent=False)
def rolling_restart(spec: EtcdInput) -> Generator[FunctionCommand, None, None]:
    """Restart this member behind a live health gate (run it with ``_serial=True``).

    Only a running member is restarted; a stopped one is started by ``member_started``.
    """
    if not host.get_fact(SystemdStatus).get("etcd.service"):
        host.noop("etcd is not running yet: nothing to restart")
        return
    yield FunctionCommand(_gated_restart, (spec,), {})
