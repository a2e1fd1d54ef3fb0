"""The Patroni rolls' decisions, without a cluster: one reading of ``/cluster`` (and each
member's release) in, the next step out, the way Patroni's ``tests/test_ha.py`` tests
``ha.py``. Refusals are compared with their whole message (``plinth up`` prints it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facts.patroni import PatroniClusterState, parse_cluster_document
from operations.patroni.decide import (
    Done,
    Refuse,
    RestartLeader,
    RestartReplica,
    RollProgress,
    RollSpec,
    Step,
    Switchover,
    Wait,
    next_restart_step,
    next_upgrade_step,
)

SPEC = RollSpec(
    reader="n1", members=("n1", "n2", "n3"), max_lag=1024, synchronous=True, version="4.1.5"
)
ASYNC = replace(SPEC, synchronous=False)
V3, V4 = "3.0.2", SPEC.version


def member(
    name: str,
    role: str,
    state: str | None = None,
    lag: int | str | None = 0,
    pending: bool = False,
) -> dict[str, object]:
    """One ``/cluster`` member as Patroni reports it (a leader has no lag)."""
    leading = role in ("leader", "standby_leader")
    raw: dict[str, object] = {
        "name": name,
        "host": f"10.0.0.1{name[-1]}",
        "role": role,
        "state": state or ("running" if leading else "streaming"),
        "pending_restart": pending,
    }
    if not leading:
        raw["lag"] = lag
    return raw


def observed(*members: dict[str, object], paused: bool = False) -> PatroniClusterState:
    return parse_cluster_document({"members": list(members), "pause": paused}, None)


def leader(pending: bool = False, state: str | None = None) -> dict[str, object]:
    return member("n1", "leader", state, pending=pending)


def sync(name: str = "n2", pending: bool = False) -> dict[str, object]:
    return member(name, "sync_standby", pending=pending)


def replica(
    name: str = "n3", pending: bool = False, state: str | None = None, lag: int | str = 0
) -> dict[str, object]:
    return member(name, "replica", state, lag, pending)


ALL_PENDING = observed(leader(True), sync(pending=True), replica(pending=True))
NO_SYNC_STANDBY = "switchover away from n1 refused: no synchronous standby"

# Where the roll is: nothing done; one replica restarted; both replicas restarted; turned
# to the old leader (waiting for a candidate); switched over.
START = RollProgress()
ONE_REPLICA = RollProgress(leader="n1", restarted=frozenset({"n2"}))
REPLICAS = RollProgress(leader="n1", restarted=frozenset({"n2", "n3"}))
TURNED = replace(REPLICAS, turned=True)
SWITCHED = replace(TURNED, switched=True)
# n2 leads after the switchover, the demoted n1 is a synchronous standby.
AFTER_SWITCHOVER = (member("n2", "leader"), member("n1", "sync_standby"), replica())


@pytest.mark.parametrize(
    ("seen", "spec", "done", "expected"),
    [
        # ---- the first reading ----
        pytest.param(
            observed(leader(), sync(), replica()), SPEC, START, Done(),
            id="nothing pending: done",
        ),
        pytest.param(
            None, SPEC, START, Done(),
            id="first reading unanswered (Patroni cannot read etcd): nothing touched, done",
        ),
        pytest.param(
            ALL_PENDING, SPEC, START, RestartReplica("n2"),
            id="all pending: replicas first, by name",
        ),
        pytest.param(
            observed(leader(True), sync(pending=True), replica(pending=True, lag=2048)),
            SPEC, START,
            Refuse("rolling restart refused: replica n3 lags 2048 bytes; nothing was changed"),
            id="a replica lags",
        ),
        pytest.param(
            observed(leader(True), sync(pending=True), replica(pending=True, lag="unknown")),
            SPEC, START,
            Refuse("rolling restart refused: replica n3 lags unknown; nothing was changed"),
            id="a replica's lag is unknown",
        ),
        pytest.param(
            observed(leader(True), sync(pending=True)), SPEC, START,
            Refuse(
                "rolling restart refused: member n3 is missing (stopped?); nothing was changed"
            ),
            id="a member already down (gone from /cluster)",
        ),
        pytest.param(
            observed(leader(True), sync(pending=True), replica(pending=True, state="stopped")),
            SPEC, START,
            Refuse("rolling restart refused: replica n3 is stopped; nothing was changed"),
            id="a member already down (listed, stopped)",
        ),
        pytest.param(
            observed(replica("n2", pending=True), replica(pending=True)), SPEC, START,
            Refuse(
                "rolling restart refused: no leader; member n1 is missing (stopped?); "
                "nothing was changed"
            ),
            id="leader missing",
        ),
        pytest.param(
            observed(leader(True), member("n2", "leader", pending=True), replica()),
            SPEC, START,
            Refuse("rolling restart refused: no leader; nothing was changed"),
            id="two leaders seen",
        ),
        pytest.param(
            observed(leader(True, state="starting"), sync(), replica()), SPEC, START,
            Refuse("rolling restart refused: leader n1 is starting; nothing was changed"),
            id="leader not running",
        ),
        pytest.param(
            observed(leader(True), sync(), replica(), paused=True), SPEC, START,
            Refuse(
                "rolling restart refused: cluster is paused (maintenance mode); "
                "nothing was changed"
            ),
            id="maintenance mode",
        ),
        # ---- the leader ----
        pytest.param(
            observed(leader(True), sync(), replica()), SPEC, START, Switchover("n1", "n2"),
            id="pending on the leader only: switchover to the synchronous standby",
        ),
        pytest.param(
            observed(leader(True), replica("n2"), replica()), SPEC, START,
            Wait(30, NO_SYNC_STANDBY),
            id="synchronous standby absent: wait for Patroni to name one",
        ),
        pytest.param(
            observed(leader(True), sync(pending=True), replica()), SPEC, REPLICAS,
            Wait(30, NO_SYNC_STANDBY),
            id="the synchronous standby still pending is no candidate: wait",
        ),
        pytest.param(
            observed(leader(True), replica("n2"), replica()), ASYNC, START,
            Switchover("n1", "n2"),
            id="asynchronous: any replica not pending takes over",
        ),
        pytest.param(
            observed(leader(True), replica("n2", True), replica(pending=True)), ASYNC, REPLICAS,
            Refuse(NO_SYNC_STANDBY),
            id="asynchronous, every replica still pending after its restart: refused",
        ),
        pytest.param(
            observed(member("n1", "standby_leader", pending=True), replica("n2"), replica()),
            ASYNC, REPLICAS, Switchover("n1", "n2"),
            id="standby cluster: the standby leader is handed over like a leader",
        ),
        # ---- mid-roll ----
        pytest.param(
            observed(leader(True), sync(), replica(pending=True)), SPEC, ONE_REPLICA,
            RestartReplica("n3"),
            id="mid-roll: the next replica",
        ),
        pytest.param(
            observed(leader(True), sync(), replica(pending=True, state="stopped")),
            SPEC, ONE_REPLICA,
            Refuse(
                "restart of the next replica refused: replica n3 is stopped; this run already "
                "did: restarted n2; the rest is left for the next run"
            ),
            id="mid-roll: a member stopped",
        ),
        pytest.param(
            None, SPEC, ONE_REPLICA,
            Refuse("restart of the next replica refused: cannot read the Patroni cluster from n1"),
            id="mid-roll: /cluster unanswered (Patroni cannot read etcd)",
        ),
        pytest.param(
            observed(leader(True), sync(), replica(pending=True)), SPEC, REPLICAS,
            Switchover("n1", "n2"),
            id="a replica restarted but still pending is not restarted twice",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), SPEC, REPLICAS, Done(),
            id="replicas done, leader not pending: done",
        ),
        pytest.param(
            observed(leader(), sync(), replica(lag=4096)), SPEC, REPLICAS,
            Refuse(
                "restart of the next replica refused: replica n3 lags 4096 bytes; "
                "this run already did: restarted n2, restarted n3; the rest is left for the "
                "next run"
            ),
            id="replicas done: the gate still applies with nothing left",
        ),
        pytest.param(
            observed(member("n3", "leader", pending=True), replica("n1"), sync()),
            SPEC, ONE_REPLICA, Done(),
            id="failover mid-roll: the roll concerns the leader it began with",
        ),
        # ---- waiting for a candidate ----
        pytest.param(
            observed(leader(True), sync(), replica()), SPEC, TURNED, Switchover("n1", "n2"),
            id="waiting: a synchronous standby is named",
        ),
        pytest.param(
            None, SPEC, TURNED, Wait(30, NO_SYNC_STANDBY),
            id="waiting: /cluster unanswered, still waiting",
        ),
        pytest.param(
            observed(leader(True), sync(), replica(pending=True, state="stopped")),
            SPEC, TURNED, Switchover("n1", "n2"),
            id="waiting: only a candidate is looked for (gated when the roll turned)",
        ),
        # ---- after the switchover ----
        pytest.param(
            observed(*AFTER_SWITCHOVER[:1], member("n1", "sync_standby", pending=True),
                     replica()),
            SPEC, SWITCHED, RestartLeader("n1"),
            id="demoted leader still pending: restarted",
        ),
        pytest.param(
            observed(*AFTER_SWITCHOVER), SPEC, SWITCHED, Done(),
            id="demoted leader already on the new settings: done",
        ),
        pytest.param(
            observed(*AFTER_SWITCHOVER[:1], member("n1", "sync_standby", pending=True),
                     replica(state="stopped")),
            SPEC, SWITCHED,
            Refuse(
                "restart of the old leader n1 refused: replica n3 is stopped; this run already "
                "did: restarted n2, restarted n3, switchover away from n1; the rest is left "
                "for the next run"
            ),
            id="demoted leader pending, a member stopped: refused",
        ),
        pytest.param(
            None, SPEC, SWITCHED,
            Refuse(
                "restart of the old leader n1 refused: cannot read the Patroni cluster from n1"
            ),
            id="after the switchover: /cluster unanswered",
        ),
        pytest.param(
            observed(*AFTER_SWITCHOVER[:1], member("n1", "sync_standby", pending=True),
                     replica()),
            SPEC, replace(SWITCHED, restarted=SWITCHED.restarted | {"n1"}), Done(),
            id="all done",
        ),
    ],
)  # fmt: skip
def test_next_restart_step(
    seen: PatroniClusterState | None, spec: RollSpec, done: RollProgress, expected: Step
) -> None:
    assert next_restart_step(seen, spec, done) == expected


def test_progress_remembers_the_leader_the_roll_began_with() -> None:
    first = START.after(RestartReplica("n2"), ALL_PENDING)
    assert first == ONE_REPLICA
    assert first.after(Wait(30, NO_SYNC_STANDBY), None) == replace(ONE_REPLICA, turned=True)
    switched = first.after(Switchover("n1", "n2"), None)
    assert (switched.leader, switched.turned, switched.switched) == ("n1", True, True)
    assert switched.after(RestartLeader("n1"), None).restarted == {"n1", "n2"}


def test_a_whole_roll_replayed_against_the_decisions() -> None:
    """Each step applied as Patroni would; the roll restarts each replica once, hands over
    once, and finds the demoted leader already restarted."""
    members = {m["name"]: m for m in (leader(True), sync(pending=True), replica(pending=True))}
    done, steps = START, []
    while True:
        seen = observed(*members.values())
        step = next_restart_step(seen, SPEC, done)
        steps.append(step)
        if isinstance(step, Done | Refuse | Wait):
            break
        done = done.after(step, seen)
        if isinstance(step, RestartReplica | RestartLeader):
            members[step.member]["pending_restart"] = False
        elif isinstance(step, Switchover):
            # A demoted primary restarts as a replica, with the new settings.
            members[step.leader].update(role="sync_standby", pending_restart=False, lag=0)
            members[step.candidate].update(role="leader", state="running")
            members["n3"]["role"] = "replica"
    assert steps == [
        RestartReplica("n2"),
        RestartReplica("n3"),
        Switchover("n1", "n2"),
        Done(),
    ]


# ---- the release roll ----

OLD = dict.fromkeys(SPEC.members, V3)
REPLICAS_UPGRADED = {"n1": V3, "n2": V4, "n3": V4}


@pytest.mark.parametrize(
    ("seen", "versions", "done", "expected"),
    [
        pytest.param(
            None, {}, START,
            Refuse(
                "Patroni upgrade refused: cannot read the cluster from n1; "
                "nothing was changed"
            ),
            id="unanswered",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), dict.fromkeys(SPEC.members, V4), START,
            Done(), id="every member current",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), OLD, START, RestartReplica("n3"),
            id="asynchronous replicas first",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), {"n1": V3, "n2": V3, "n3": V3},
            RollProgress(restarted=frozenset({"n3"})),
            Refuse("n3 still runs Patroni 3.0.2 after its restart"),
            id="a member restarted and still on the old release",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), REPLICAS_UPGRADED, START,
            Switchover("n1", "n2"), id="replicas done: to the upgraded synchronous standby",
        ),
        pytest.param(
            observed(leader(), replica("n2"), replica()), REPLICAS_UPGRADED, START,
            Wait(60, "switchover away from n1 refused: no upgraded synchronous standby yet"),
            id="no synchronous standby named yet: wait",
        ),
        pytest.param(
            observed(*AFTER_SWITCHOVER), REPLICAS_UPGRADED, START, RestartReplica("n1"),
            id="after the switchover: the old leader, a replica now",
        ),
        pytest.param(
            observed(leader()), {"n1": V3}, START, RestartLeader("n1"),
            id="one-member cluster: restarted in place",
        ),
        pytest.param(
            observed(leader(), sync(), replica(lag=2048)), OLD, START,
            Refuse(
                "Patroni upgrade refused: replica n3 lags 2048 bytes; nothing was changed"
            ),
            id="a replica lags",
        ),
        pytest.param(
            observed(leader(), sync(), replica()), {"n1": V3, "n2": None, "n3": V3}, START,
            Refuse(
                "Patroni upgrade refused: the Patroni release of n2 is unknown "
                "(its /patroni did not answer); nothing was changed"
            ),
            id="a member's release unread",
        ),
    ],
)  # fmt: skip
def test_next_upgrade_step(
    seen: PatroniClusterState | None,
    versions: dict[str, str | None],
    done: RollProgress,
    expected: Step,
) -> None:
    spec = replace(SPEC, members=("n1",)) if seen is not None and len(seen.members) == 1 else SPEC
    assert next_upgrade_step(seen, versions, spec, done) == expected
