"""The RabbitMQ gated restart's decisions, without a cluster: one reading of the node's
cluster fact (what ``rabbitmqctl eval`` prints) in, the next step out, the way Patroni's
``tests/test_ha.py`` tests ``ha.py``. Refusals are compared with their whole message
(``plinth up`` prints it)."""

from __future__ import annotations

import json

import pytest

from facts.rabbitmq import _END, _STATUS, RabbitmqClusterState, parse_rabbitmq_cluster
from operations.rabbitmq.decide import (
    HEALTHY_WAIT_SECONDS,
    QUORUM_WAIT_SECONDS,
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

N1, N2, N3 = NODES = tuple(f"rabbit@dc1-n{i}.dc1.lab.plinth.internal" for i in (1, 2, 3))
SPEC = RollSpec(node=N2, nodes=NODES)
WHAT = f"RabbitMQ restart of {N2}"
QUEUE = "queue 'orders' in vhost 'airflow'"


def observed(
    running: tuple[str, ...] = NODES, disk: tuple[str, ...] = NODES, **extra: object
) -> RabbitmqClusterState:
    """The node's reading, through the fact's own parser (the shape RabbitMQ 3.10 prints)."""
    doc: dict[str, object] = {
        "alarms": [],
        "cluster_name": "lab-dc1-rabbitmq",
        "disk_nodes": list(disk),
        "partitions": {n: [] for n in running},
        "quorum_critical": [],
        "running_nodes": list(running),
        "under_maintenance": [],
        "users": ["plinth-admin"],
        "vhosts": ["/"],
    }
    doc.update(extra)
    state = parse_rabbitmq_cluster([_STATUS, json.dumps(doc), "ok", _END])
    assert state is not None
    return state


HEALTHY = observed()
CRITICAL = observed(quorum_critical=[QUEUE])
START = RollProgress()
WAITING = RollProgress(waiting=True)
RESTARTED = RollProgress(waiting=True, restarted=True)
WAIT = Wait(QUORUM_WAIT_SECONDS)


@pytest.mark.parametrize(
    ("seen", "done", "expected"),
    [
        # ---- the first reading: refused at once when something is already wrong ----
        pytest.param(
            None, START,
            Refuse(f"{WHAT} refused: cannot read the cluster from {N2} (is it running?); "
                   "nothing was changed"),
            id="node unreadable (not running)",
        ),
        pytest.param(
            observed(running=(N1, N2)), START,
            Refuse(f"{WHAT} refused: node(s) not running in the cluster: {N3}; "
                   "nothing was changed"),
            id="a node down",
        ),
        pytest.param(
            observed(disk=(*NODES, "rabbit@old")), START,
            Refuse(f"{WHAT} refused: member(s) down: rabbit@old; nothing was changed"),
            id="a disk member the model does not name is down",
        ),
        pytest.param(
            observed(partitions={N1: [N3], N2: [], N3: [N1]}), START,
            Refuse(f"{WHAT} refused: {N1} reports a partition from {N3}; "
                   f"{N3} reports a partition from {N1}; nothing was changed"),
            id="partition",
        ),
        pytest.param(
            observed(alarms=[f"{N1}: memory"]), START,
            Refuse(f"{WHAT} refused: alarm {N1}: memory; nothing was changed"),
            id="alarm",
        ),
        pytest.param(
            observed(under_maintenance=[N3]), START,
            Refuse(f"{WHAT} refused: {N3} is under maintenance; nothing was changed"),
            id="a node under maintenance",
        ),
        pytest.param(
            observed(running=(N1, N2), alarms=[f"{N2}: disk"]), START,
            Refuse(f"{WHAT} refused: node(s) not running in the cluster: {N3}; "
                   f"alarm {N2}: disk; nothing was changed"),
            id="every problem named, in order",
        ),
        pytest.param(
            parse_rabbitmq_cluster([_STATUS, "Error: unable to perform an operation", _END]),
            START,
            Refuse(f"{WHAT} refused: cluster status unreadable: Error: unable to perform an "
                   "operation; nothing was changed"),
            id="the CLI cannot reach the node",
        ),
        # ---- the first reading passed: read again until the node is spareable ----
        pytest.param(HEALTHY, START, WAIT, id="healthy: read again before the restart"),
        pytest.param(
            CRITICAL, START, WAIT,
            id="quorum-critical on the first reading: wait, not refuse",
        ),
        pytest.param(HEALTHY, WAITING, Restart(N2), id="spareable: restart the node"),
        pytest.param(
            CRITICAL, WAITING, WAIT,
            id="quorum-critical queue (a peer restarted just before): wait",
        ),
        pytest.param(
            observed(quorum_critical={"error": "error:undef"}), WAITING, WAIT,
            id="quorum check failed: wait",
        ),
        pytest.param(
            observed(running=(N1, N2)), WAITING, WAIT,
            id="a node down while waiting: wait on (not refused at once)",
        ),
        pytest.param(None, WAITING, WAIT, id="unanswered while waiting: wait on"),
        # ---- the wait ran out: the last reading names why ----
        pytest.param(
            CRITICAL, WAITING.ran_out(60.4),
            Refuse(f"{WHAT} refused after 60 s: {N2} is quorum-critical (stopping it would "
                   f"take quorum queues below their majority): {QUEUE}; nothing was changed"),
            id="still quorum-critical after the wait",
        ),
        pytest.param(
            observed(quorum_critical={"error": "error:undef"}), WAITING.ran_out(61),
            Refuse(f"{WHAT} refused after 61 s: quorum check failed: error:undef; "
                   "nothing was changed"),
            id="quorum check still failing after the wait",
        ),
        pytest.param(
            observed(partitions={N1: [N3]}), WAITING.ran_out(60),
            Refuse(f"{WHAT} refused after 60 s: {N1} reports a partition from {N3}; "
                   "nothing was changed"),
            id="partition after the wait",
        ),
        pytest.param(
            HEALTHY, WAITING.ran_out(60),
            Refuse(f"{WHAT} refused after 60 s: the cluster changed while waiting; "
                   "nothing was changed"),
            id="fit only on the last reading: refused all the same",
        ),
        # ---- restarted: wait for every node, then done ----
        pytest.param(observed(running=(N1, N3)), RESTARTED, recovery(SPEC),
                     id="restarted node not back yet: wait"),
        pytest.param(None, RESTARTED, recovery(SPEC), id="restarted node not answering: wait"),
        pytest.param(
            observed(alarms=[f"{N2}: memory"]), RESTARTED, recovery(SPEC),
            id="back with an alarm: wait",
        ),
        pytest.param(HEALTHY, RESTARTED, Done(), id="all nodes running again: done"),
        pytest.param(
            CRITICAL, RESTARTED, Done(),
            id="done even if now quorum-critical (the next node's gate waits for it)",
        ),
    ],
)  # fmt: skip
def test_next_step(seen: RabbitmqClusterState | None, done: RollProgress, expected: Step) -> None:
    assert next_step(seen, SPEC, done) == expected


def test_recovery_refusal_names_the_node_and_the_wait() -> None:
    assert recovery(SPEC) == Wait(
        HEALTHY_WAIT_SECONDS,
        refusal=f"{N2} restarted but the cluster is not healthy after 180 s; stopping here",
    )


def test_next_node_after_a_peer_restarted() -> None:
    """The roll as the serial hosts meet it: n1 restarted; n2's gate waits while its quorum
    queue members catch up, then restarts n2; n3 is next with a fresh progress."""
    steps = [next_step(CRITICAL, SPEC, START)]
    done = START.after(steps[-1])
    steps += [next_step(CRITICAL, SPEC, done), next_step(HEALTHY, SPEC, done)]
    done = done.after(steps[-1])
    steps += [next_step(HEALTHY, SPEC, done)]
    assert steps == [WAIT, WAIT, Restart(N2), Done()]
    n3 = RollSpec(node=N3, nodes=NODES)
    assert next_step(HEALTHY, n3, START) == WAIT
    assert next_step(HEALTHY, n3, START.after(WAIT)) == Restart(N3)


def test_progress() -> None:
    assert START.after(WAIT) == WAITING
    assert WAITING.after(Restart(N2)) == RESTARTED
    assert RESTARTED.after(recovery(SPEC)) == RESTARTED
    assert START.after(Refuse("x")) == START
