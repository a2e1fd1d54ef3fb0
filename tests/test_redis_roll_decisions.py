"""The Redis roll's decisions, without a cell: one reading of the data nodes and the
Sentinels in, the next step out (as ``tests/test_patroni_roll_decisions.py`` does for
Patroni). Refusals are compared with their whole message (``plinth up`` prints it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facts.redis import RedisNode, ReplicaLink, ReplicationState, SentinelReport, SentinelView
from operations.redis.decide import (
    Done,
    Failover,
    Observed,
    Pending,
    Refuse,
    RestartOldMaster,
    RestartReplica,
    RestartSentinel,
    RollPlan,
    RollProgress,
    RollSpec,
    Start,
    Step,
    back_after_restart,
    caught_up,
    moved_from,
    next_step,
)

N1, N2, N3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
REMOTE = ("10.1.0.1", "10.1.0.2", "10.1.0.3")
STATIC = {"tls-port": "6379", "io-threads": "2"}
NEW, OLD = "7.2.4", "7.0.15"
SPEC = RollSpec(static=STATIC, version=NEW)
FOLLOWER = replace(SPEC, upstream=REMOTE)
DRIFT = {"tls-port": "6379", "io-threads": "4"}  # a drop-in changed since the start


def link(address: str, state: str = "online", lag: int = 0, offset: int = 1000) -> ReplicaLink:
    return ReplicaLink(address, 6379, state, offset, lag)


def master(
    address: str = N1,
    links: tuple[ReplicaLink, ...] | None = None,
    settings: dict[str, str] = STATIC,
    version: str = NEW,
) -> RedisNode:
    return RedisNode(
        address,
        role="master",
        version=version,
        replicas=(link(N2), link(N3)) if links is None else links,
        offset=1000,
        run_id=f"run-{address}",
        settings=settings,
    )


def replica(
    address: str,
    follows: str = N1,
    up: bool = True,
    syncing: bool = False,
    settings: dict[str, str] = STATIC,
    version: str = NEW,
) -> RedisNode:
    return RedisNode(
        address,
        role="slave",
        version=version,
        master_host=follows,
        master_link_up=up,
        sync_in_progress=syncing,
        offset=1000,
        run_id=f"run-{address}",
        settings=settings,
    )


def down(address: str) -> RedisNode:
    return RedisNode(address, error="Connection refused")


def sentinel(
    address: str,
    watches: str = N1,
    quorum: str = "OK 3 usable Sentinels",
    flags: str = "master",
    others: int = 2,
    version: str = NEW,
) -> SentinelReport:
    return SentinelReport(
        address,
        master=(watches, 6379),
        quorum_ok=quorum.startswith("OK"),
        quorum_message=quorum,
        flags=flags,
        other_sentinels=others,
        replicas=2,
        version=version,
        run_id=f"s-{address}",
    )


def s_down(address: str) -> SentinelReport:
    return SentinelReport(address, error="Connection refused")


def seen(*nodes: RedisNode, sentinels: tuple[SentinelReport, ...] | None = None) -> Observed:
    view = SentinelView(
        (sentinel(N1), sentinel(N2), sentinel(N3)) if sentinels is None else sentinels
    )
    return Observed(ReplicationState(nodes), view)


HEALTHY = seen(master(), replica(N2), replica(N3))
AFTER_FAILOVER = seen(
    replica(N1, follows=N2),
    master(N2, links=(link(N1), link(N3))),
    replica(N3, follows=N2),
    sentinels=(sentinel(N1, N2), sentinel(N2, N2), sentinel(N3, N2)),
)
NOT_READ = Observed(None, None)

# The plans: every data node's drop-in drifted; every node and Sentinel on an old release.
ALL_DATA = RollPlan((f"{N1} (io-threads)", f"{N2} (io-threads)", f"{N3} (io-threads)"), ())
UPGRADE = RollPlan(
    tuple(f"{a} (runs {OLD}, {NEW} installed)" for a in (N1, N2, N3)),
    tuple(f"{a} (runs {OLD}, {NEW} installed)" for a in (N1, N2, N3)),
)
# Where the roll is: the plan found; started with N1 the master; replicas restarted;
# Sentinels restarted too; failed over.
PLANNED = RollProgress(plan=UPGRADE)
STARTED = replace(PLANNED, started=True, master=N1)
ONE_REPLICA = replace(STARTED, restarted=frozenset({N2}))
REPLICAS = replace(STARTED, restarted=frozenset({N2, N3}))
SENTINELS = replace(REPLICAS, sentinels=frozenset({N1, N2, N3}))
FAILED_OVER = replace(SENTINELS, failed_over=True)
ALL_DONE = replace(FAILED_OVER, restarted=frozenset({N1, N2, N3}))
GATE = f"rolling restart of {UPGRADE.describe()} refused"


@pytest.mark.parametrize(
    ("observed", "spec", "done", "expected"),
    [
        # ---- the first reading: what is pending ----
        pytest.param(HEALTHY, SPEC, RollProgress(), Done(), id="nothing pending: done"),
        pytest.param(
            NOT_READ, SPEC, RollProgress(), Done(),
            id="first reading unanswered: nothing pending, nothing touched",
        ),
        pytest.param(
            seen(master(), replica(N2, settings=DRIFT), replica(N3)), SPEC, RollProgress(),
            Pending(RollPlan((f"{N2} (io-threads)",), ())),
            id="one replica's drop-in drifted",
        ),
        pytest.param(
            seen(
                master(version=OLD), replica(N2, version=OLD), replica(N3, version=OLD),
                sentinels=tuple(sentinel(a, version=OLD) for a in (N1, N2, N3)),
            ),
            SPEC, RollProgress(), Pending(UPGRADE),
            id="a package upgrade: every data node and Sentinel pending",
        ),
        pytest.param(
            seen(master(), replica(N2), down(N3), sentinels=(sentinel(N1, version=OLD),)),
            replace(SPEC, version=None), RollProgress(), Done(),
            id="installed version unknown: no version drift, a node down is not pending",
        ),
        # ---- the roll's gate (the second reading) ----
        pytest.param(HEALTHY, SPEC, PLANNED, Start(N1), id="healthy: start, N1 the master"),
        pytest.param(
            seen(down(N1), replica(N2, up=False), replica(N3, up=False)), SPEC, PLANNED,
            Refuse(
                f"{GATE}: redis {N1} is down (Connection refused); no redis master; "
                f"replica {N2} has its master link down; replica {N3} has its master link "
                "down; nothing was changed"
            ),
            id="master missing",
        ),
        pytest.param(
            seen(master(), master(N2, links=()), replica(N3)), SPEC, PLANNED,
            Refuse(f"{GATE}: several redis masters: {N1}, {N2}; nothing was changed"),
            id="two masters",
        ),
        pytest.param(
            seen(
                master(), replica(N2), replica(N3),
                sentinels=(sentinel(N1), sentinel(N2), sentinel(N3, watches=N2)),
            ),
            SPEC, PLANNED,
            Refuse(f"{GATE}: sentinels disagree on the master; nothing was changed"),
            id="Sentinels disagree",
        ),
        pytest.param(
            seen(master(links=(link(N2), link(N3, "wait_bgsave", -1))), replica(N2),
                 replica(N3, up=False)),
            SPEC, PLANNED,
            Refuse(
                f"{GATE}: replica {N3} has its master link down; replica {N3} is "
                "wait_bgsave, lag -1 s; nothing was changed"
            ),
            id="a replica's link down",
        ),
        pytest.param(
            seen(master(links=(link(N2), link(N3, lag=30))), replica(N2), replica(N3)),
            SPEC, PLANNED,
            Refuse(f"{GATE}: replica {N3} is online, lag 30 s; nothing was changed"),
            id="a replica lags",
        ),
        pytest.param(
            seen(master(), replica(N2), replica(N3, syncing=True)), SPEC, PLANNED,
            Refuse(f"{GATE}: replica {N3} is still syncing; nothing was changed"),
            id="a replica still syncing",
        ),
        pytest.param(
            seen(
                master(), replica(N2), replica(N3),
                sentinels=(
                    sentinel(N1, quorum="NOQUORUM 1 usable Sentinels", others=0),
                    s_down(N2), s_down(N3),
                ),
            ),
            SPEC, PLANNED,
            Refuse(
                f"{GATE}: sentinel {N1}: CKQUORUM failed (NOQUORUM 1 usable Sentinels); "
                f"sentinel {N2} is down (Connection refused); sentinel {N3} is down "
                "(Connection refused); nothing was changed"
            ),
            id="Sentinel quorum lost",
        ),
        pytest.param(
            seen(
                master(), replica(N2), replica(N3),
                sentinels=(sentinel(N1), sentinel(N2, flags="s_down,master"), sentinel(N3)),
            ),
            SPEC, PLANNED,
            Refuse(f"{GATE}: sentinel {N2} sees the master as s_down,master; nothing was changed"),
            id="a Sentinel sees the master subjectively down",
        ),
        pytest.param(
            Observed(HEALTHY.state, None), SPEC, PLANNED,
            Refuse(f"{GATE}: cannot read the Sentinels; nothing was changed"),
            id="Sentinels unread",
        ),
        # ---- replicas, Sentinels, failover, old master ----
        pytest.param(HEALTHY, SPEC, STARTED, RestartReplica(N2), id="replicas first, in order"),
        pytest.param(HEALTHY, SPEC, ONE_REPLICA, RestartReplica(N3), id="the next replica"),
        pytest.param(
            seen(master(), replica(N2), down(N3)), SPEC, ONE_REPLICA,
            Refuse(
                f"restart of replica {N3} refused: redis {N3} is down (Connection refused); "
                f"this run already did: restarted {N2}; the rest is left for the next run"
            ),
            id="a member down before its restart: says what the run already did",
        ),
        pytest.param(HEALTHY, SPEC, REPLICAS, RestartSentinel(N1), id="then the Sentinels"),
        pytest.param(
            HEALTHY, SPEC, replace(REPLICAS, sentinels=frozenset({N1})), RestartSentinel(N2),
            id="the next Sentinel",
        ),
        pytest.param(
            seen(
                master(), replica(N2), replica(N3),
                sentinels=(sentinel(N1), sentinel(N2, others=1), sentinel(N3)),
            ),
            SPEC, replace(REPLICAS, sentinels=frozenset({N1})),
            Refuse(
                f"restart of sentinel {N2} refused: sentinel {N2} knows 1 other Sentinel(s), "
                f"expected 2; this run already did: restarted {N2}, restarted {N3}, "
                f"restarted Sentinel {N1}; the rest is left for the next run"
            ),
            id="a restarted Sentinel not yet known to its peers",
        ),
        pytest.param(HEALTHY, SPEC, SENTINELS, Failover(N1, N1), id="failover needed"),
        pytest.param(
            seen(master(), replica(N2), replica(N3),
                 sentinels=(s_down(N1), sentinel(N2), sentinel(N3))),
            SPEC, SENTINELS,
            Refuse(
                f"failover away from {N1} refused: sentinel {N1} is down (Connection "
                f"refused); this run already did: restarted {N2}, restarted {N3}, restarted "
                f"Sentinel {N1}, restarted Sentinel {N2}, restarted Sentinel {N3}; the rest is "
                "left for the next run"
            ),
            id="failover with a Sentinel down",
        ),
        pytest.param(
            AFTER_FAILOVER, SPEC, FAILED_OVER, RestartOldMaster(N1),
            id="after the failover: the old master, a replica now",
        ),
        pytest.param(
            seen(replica(N1, follows=N2, up=False), master(N2, links=(link(N3),)),
                 replica(N3, follows=N2),
                 sentinels=(sentinel(N1, N2), sentinel(N2, N2), sentinel(N3, N2))),
            SPEC, FAILED_OVER,
            Refuse(
                f"restart of old master {N1} refused: replica {N1} has its master link down; "
                f"this run already did: restarted {N2}, restarted {N3}, restarted Sentinel "
                f"{N1}, restarted Sentinel {N2}, restarted Sentinel {N3}, failover away from "
                f"{N1}; the rest is left for the next run"
            ),
            id="after the failover, the old master not linked yet",
        ),
        pytest.param(NOT_READ, SPEC, ALL_DONE, Done(), id="all done: no reading needed"),
        pytest.param(
            HEALTHY, SPEC,
            RollProgress(RollPlan((f"{N1} (io-threads)",), ()), started=True, master=N1),
            Failover(N1, N1),
            id="only the master pending: straight to the failover",
        ),
        pytest.param(
            seen(master(), replica(N2), replica(N3), sentinels=()), SPEC,
            RollProgress(RollPlan((f"{N1} (io-threads)",), ()), started=True, master=N1),
            Refuse(
                f"failover away from {N1} refused: no Sentinel watches this cell; "
                "nothing was changed"
            ),
            id="master pending, no Sentinel to fail over with",
        ),
        pytest.param(
            seen(master(), replica(N2, settings=DRIFT), replica(N3, settings=DRIFT)), SPEC,
            RollProgress(RollPlan((f"{N2} (io-threads)",), ()), True, N1, frozenset({N2})),
            Done(),
            id="a node that drifted after the first reading waits for the next run",
        ),
        # ---- a following DC: replicas of the active DC, no Sentinel of its own ----
        pytest.param(
            seen(*(replica(a, follows=REMOTE[0]) for a in (N1, N2, N3)), sentinels=()),
            FOLLOWER, RollProgress(ALL_DATA), Start(None),
            id="following DC: no master of its own",
        ),
        pytest.param(
            seen(*(replica(a, follows=REMOTE[0]) for a in (N1, N2, N3)), sentinels=()),
            FOLLOWER, RollProgress(ALL_DATA, True, None, frozenset({N1, N2})),
            RestartReplica(N3),
            id="following DC: every node restarted as a replica, no failover",
        ),
        pytest.param(
            seen(master(), replica(N2), replica(N3), sentinels=()),
            FOLLOWER, RollProgress(ALL_DATA),
            Refuse(
                f"rolling restart of {ALL_DATA.describe()} refused: redis {N1} is a master, "
                f"expected a replica of the active DC; replica {N2} follows {N1}, not the "
                f"active DC; replica {N3} follows {N1}, not the active DC; nothing was changed"
            ),
            id="following DC with a master of its own",
        ),
    ],
)  # fmt: skip
def test_next_step(observed: Observed, spec: RollSpec, done: RollProgress, expected: Step) -> None:
    assert next_step(observed, spec, done) == expected


def test_a_whole_roll_in_order() -> None:
    """Read, decide, 'perform' (the cell as it is after each step), to the end."""
    done = RollProgress()
    upgrade_cell = seen(
        master(version=OLD), replica(N2, version=OLD), replica(N3, version=OLD),
        sentinels=tuple(sentinel(a, version=OLD) for a in (N1, N2, N3)),
    )  # fmt: skip
    readings = iter([upgrade_cell, HEALTHY, *[HEALTHY] * 6, AFTER_FAILOVER])
    steps: list[Step] = []
    while not done.finished:
        step = next_step(next(readings), SPEC, done)
        steps.append(step)
        if isinstance(step, Done | Refuse):
            break
        done = done.after(step)
    assert steps == [
        Pending(UPGRADE),
        Start(N1),
        RestartReplica(N2),
        RestartReplica(N3),
        RestartSentinel(N1),
        RestartSentinel(N2),
        RestartSentinel(N3),
        Failover(N1, N1),
        RestartOldMaster(N1),
    ]
    assert done == ALL_DONE and done.finished


def test_waits_read_the_effect_of_a_step() -> None:
    restarted = replace(HEALTHY.state.nodes[1], run_id="new")  # type: ignore[union-attr]
    after = Observed(ReplicationState((master(), restarted, replica(N3))), HEALTHY.view)
    assert not back_after_restart(HEALTHY, SPEC, N2, f"run-{N2}", sentinel=False)
    assert back_after_restart(after, SPEC, N2, f"run-{N2}", sentinel=False)
    assert not back_after_restart(
        Observed(after.state, None), SPEC, N2, f"run-{N2}", sentinel=False
    )
    assert not back_after_restart(HEALTHY, SPEC, N3, f"s-{N3}", sentinel=True)
    assert back_after_restart(HEALTHY, SPEC, N3, "s-before", sentinel=True)
    behind = ReplicationState((master(links=(link(N2), link(N3, offset=990))),))
    assert caught_up(HEALTHY.state, N1) and not caught_up(behind, N1)
    assert not caught_up(ReplicationState((master(links=()),)), N1)
    assert moved_from(HEALTHY.view, N1) is None
    assert moved_from(AFTER_FAILOVER.view, N1) == (N2, 6379)
