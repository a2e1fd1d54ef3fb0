"""The etcd gated restart's decisions, without a cluster: one reading of the members
(health, leadership) in, the next step out. Refusals are compared with their whole
message (``plinth up`` prints it)."""

from __future__ import annotations

import pytest

from facts.etcd import EtcdClusterState, EtcdMember
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

SPEC = RollSpec(member="e2")
START = RollProgress()
MOVED = RollProgress(moved=True)
RESTARTED = RollProgress(moved=True, restarted=True)
NOT_HEALTHY = "etcd restart of e2 refused: cluster not healthy"


def member(
    name: str, leader: bool = False, healthy: bool = True, error: str | None = None
) -> EtcdMember:
    return EtcdMember(
        name=name,
        id=f"{ord(name[-1]):x}a",
        client_url=f"https://10.0.1.1{name[-1]}:2379" if name else None,
        healthy=healthy,
        is_leader=leader,
        raft_index=10,
        raft_term=2,
        error=None if healthy else (error or "unhealthy"),
    )


def observed(*members: EtcdMember) -> EtcdClusterState:
    return EtcdClusterState(tuple(sorted(members, key=lambda m: m.name)))


def cluster(leader: str = "e1", **unhealthy: str) -> EtcdClusterState:
    return observed(
        *(
            member(n, leader=n == leader, healthy=n not in unhealthy, error=unhealthy.get(n))
            for n in ("e1", "e2", "e3")
        )
    )


TIMEOUT = "context deadline exceeded"
# member list failed for want of quorum: the parser reports the endpoints, unnamed.
NO_QUORUM = observed(
    *(
        EtcdMember("", "?", f"https://10.0.1.1{i}:2379", False, False, None, None, TIMEOUT)
        for i in (1, 2, 3)
    )
)


@pytest.mark.parametrize(
    ("seen", "done", "expected"),
    [
        pytest.param(
            None, START,
            Refuse(f"{NOT_HEALTHY} (cannot read the cluster); nothing was changed on this member"),
            id="etcdctl missing: nothing read",
        ),
        pytest.param(
            NO_QUORUM, START,
            Refuse(f"{NOT_HEALTHY} (member ? unhealthy: {TIMEOUT}; member ? unhealthy: "
                   f"{TIMEOUT}; member ? unhealthy: {TIMEOUT}; no single leader); "
                   "nothing was changed on this member"),
            id="not quorate (member list failed)",
        ),
        pytest.param(
            observed(), START,
            Refuse(f"{NOT_HEALTHY} (no member answered); nothing was changed on this member"),
            id="no member answered",
        ),
        pytest.param(
            cluster(e3=TIMEOUT), START,
            Refuse(f"{NOT_HEALTHY} (member e3 unhealthy: {TIMEOUT}); "
                   "nothing was changed on this member"),
            id="a member unhealthy",
        ),
        pytest.param(
            cluster(leader="e2", e1="connection refused", e3=TIMEOUT), START,
            Refuse(f"{NOT_HEALTHY} (member e1 unhealthy: connection refused; member e3 "
                   f"unhealthy: {TIMEOUT}); nothing was changed on this member"),
            id="the leader alone healthy (quorum lost)",
        ),
        pytest.param(cluster(leader="e1"), START, Restart("e2"), id="next member: a follower"),
        pytest.param(
            cluster(leader=""), START, Restart("e2"),
            id="all healthy but no single leader: restarted (health alone gates, as before)",
        ),
        pytest.param(
            cluster(leader="e2"), START, MoveLeader("e2", "e1", "31a", "https://10.0.1.12:2379"),
            id="the leader: leadership handed to the first healthy peer first",
        ),
        pytest.param(
            observed(member("e2", leader=True)), START,
            Refuse("etcd restart of e2 refused: no healthy successor"),
            id="the leader of a one-member cluster: no successor",
        ),
        pytest.param(
            cluster(leader="e2"), MOVED, Restart("e2"),
            id="leadership moved: restart (on the same reading)",
        ),
        pytest.param(cluster(e2=TIMEOUT), RESTARTED, recovery(SPEC), id="restarted, not back yet"),
        pytest.param(None, RESTARTED, recovery(SPEC), id="restarted, nothing read: wait"),
        pytest.param(cluster(leader="e3"), RESTARTED, Done(), id="done: every member healthy"),
    ],
)  # fmt: skip
def test_next_step(seen: EtcdClusterState | None, done: RollProgress, expected: Step) -> None:
    assert next_step(seen, SPEC, done) == expected


def test_recovery_refusal() -> None:
    assert recovery(SPEC) == Wait(
        90, "etcd member e2 restarted but the cluster is not healthy after 90 s; stopping here"
    )


def test_the_leader_in_order() -> None:
    """A leader moves leadership, restarts, waits, is done: each step once."""
    seen = cluster(leader="e2")
    done, steps = START, []
    for _ in range(2):
        step = next_step(seen, SPEC, done)
        steps.append(step)
        done = done.after(step)
    steps.append(next_step(cluster(leader="e1", e2=TIMEOUT), SPEC, done))
    steps.append(next_step(cluster(leader="e1"), SPEC, done))
    assert steps == [
        MoveLeader("e2", "e1", "31a", "https://10.0.1.12:2379"),
        Restart("e2"),
        recovery(SPEC),
        Done(),
    ]
