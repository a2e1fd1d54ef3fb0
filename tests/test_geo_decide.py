"""The DC commands' decisions, without hosts: observations of ``example-prod`` in, a plan
or a refusal out (plinth/geo/decide.py). Refusals are checked for the hosts and
positions they must name; plans for their order (what must come before what) and for
what they report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from facts.postgresql import TimelineSwitch, format_lsn
from facts.redis import RedisNode
from plinth.geo import examples as ex
from plinth.geo.decide import (
    CATCH_UP_LIMIT,
    Action,
    Plan,
    Refusal,
    Rejoin,
    apply_refusal,
    model_agrees_with_live,
    plan_failback,
    plan_failover,
    plan_switchover,
    rejoin_mode,
)
from plinth.geo.observe import Observed, PgMember, PgRole, SiteObservation
from plinth.geo.simulate import apply_all

FLUSHED = ex.FLUSHED


def plan_of(result: Plan | Refusal) -> Plan:
    assert isinstance(result, Plan), "\n".join(result.lines())
    return result


def refusal_of(result: Plan | Refusal) -> Refusal:
    assert isinstance(result, Refusal), "\n".join(result.lines())
    return result


def steps(plan: Plan) -> list[tuple[str, Action]]:
    return [(s.site, s.action) for s in plan.steps]


def at(plan: Plan, site: str, action: Action) -> int:
    return steps(plan).index((site, action))


def after(start: Observed, plan: Plan, site: str, action: Action) -> Observed:
    """The observation once ``plan``'s steps up to and including ``action`` ran."""
    return apply_all(start, plan.steps[: at(plan, site, action) + 1])


def site_change(observed: Observed, name: str, **changes: Any) -> Observed:
    return ex.change(observed, name, lambda s: replace(s, **changes))


def leader_change(observed: Observed, name: str, **changes: Any) -> Observed:
    """The site's leader (primary or standby leader) with ``changes``."""

    def how(site: SiteObservation) -> SiteObservation:
        leader = site.postgresql.leader
        assert leader is not None
        members = tuple(
            replace(m, **changes) if m.name == leader.name else m for m in site.postgresql.members
        )
        return replace(site, postgresql=replace(site.postgresql, members=members))

    return ex.change(observed, name, how)


HEALTHY = ex.healthy()
SWITCH = plan_of(plan_switchover(HEALTHY, "dc2"))
LOST = ex.unreachable(HEALTHY, "dc1")
FAILED_OVER = plan_of(plan_failover(LOST, "dc2", "dc1"))


# ---- dc-switchover ----


def test_switchover_from_a_healthy_platform_in_its_order() -> None:
    assert steps(SWITCH) == [
        ("dc1", Action.STOP_AIRFLOW),
        ("dc2", Action.ADD_STANDBY_SLOT),
        ("dc1", Action.DEMOTE_POSTGRESQL),
        ("dc2", Action.VERIFY_CAUGHT_UP),  # always: the last byte is known only then
        ("dc2", Action.PROMOTE_POSTGRESQL),
        ("dc1", Action.VERIFY_FOLLOWING),
        ("dc1", Action.STOP_SENTINELS),
        ("dc1", Action.PAUSE_REDIS),
        ("dc2", Action.PROMOTE_REDIS),
        ("dc1", Action.FOLLOW_REDIS),
        ("dc2", Action.START_SENTINELS),
        ("dc2", Action.START_AIRFLOW),
        ("dc2", Action.WRITE_MODEL),
        ("dc2", Action.CONVERGE),
        ("dc1", Action.CONVERGE),
    ]
    demote = SWITCH.steps[at(SWITCH, "dc1", Action.DEMOTE_POSTGRESQL)]
    assert demote.source == "dc2" and demote.hosts == ("dc1-db1", "dc1-db2", "dc1-db3")
    redis = SWITCH.steps[at(SWITCH, "dc2", Action.PROMOTE_REDIS)]
    assert redis.hosts[0] == "dc2-db1" and redis.refusal  # equal offsets: the first address
    assert SWITCH.loss is None and not SWITCH.fenced


def test_switchover_with_lag_waits_for_the_last_byte_after_writes_stop() -> None:
    plan = plan_of(plan_switchover(ex.lagging(HEALTHY, 3_200), "dc2"))
    verify = at(plan, "dc2", Action.VERIFY_CAUGHT_UP)
    assert at(plan, "dc1", Action.DEMOTE_POSTGRESQL) < verify
    assert verify < at(plan, "dc2", Action.PROMOTE_POSTGRESQL)
    step = plan.steps[verify]
    assert step.seconds == 30 and step.source == "dc1"
    assert "3200 bytes" in step.waits_for
    assert step.refusal is not None and "nothing was promoted" in step.refusal
    assert any("lags 3200 bytes" in note for note in plan.notes)


def test_switchover_refused_when_the_target_lags_too_much() -> None:
    lag = CATCH_UP_LIMIT + 1
    refusal = refusal_of(plan_switchover(ex.lagging(HEALTHY, lag), "dc2"))
    assert f"dc2 lags {lag} bytes" in refusal.reason
    assert format_lsn(FLUSHED) in refusal.reason and format_lsn(FLUSHED - lag) in refusal.reason
    assert "nothing was changed" in refusal.reason


def demoted(lag: int) -> Observed:
    """Writes stopped at dc1 (demoted toward dc2), dc2 not promoted yet."""
    start = ex.lagging(HEALTHY, lag)
    plan = plan_of(plan_switchover(start, "dc2"))
    return after(start, plan, "dc1", Action.DEMOTE_POSTGRESQL)


def test_switchover_refused_when_the_target_is_behind_after_writes_stopped() -> None:
    # dc2 received less than dc1 holds and no longer streams: nothing more is coming.
    stuck = leader_change(
        demoted(0), "dc2", received=FLUSHED - 512, replayed=FLUSHED - 512, state="running"
    )
    refusal = refusal_of(plan_switchover(stuck, "dc2"))
    assert f"received only {format_lsn(FLUSHED - 512)} of dc1's {format_lsn(FLUSHED)}" in (
        refusal.reason
    )
    assert "512 bytes short" in refusal.reason
    assert "nothing was promoted" in refusal.reason
    assert "dc-switchover --to dc1" in refusal.reason


def test_switchover_after_writes_stopped_waits_while_replay_catches_up() -> None:
    # Everything received, not all replayed yet: the first step is the bounded wait.
    catching_up = leader_change(demoted(0), "dc2", replayed=FLUSHED - 100, state="running")
    plan = plan_of(plan_switchover(catching_up, "dc2"))
    assert steps(plan)[0] == ("dc2", Action.VERIFY_CAUGHT_UP)
    assert at(plan, "dc2", Action.PROMOTE_POSTGRESQL) > 0
    assert "100 bytes" in plan.steps[0].waits_for


def test_switchover_resumes_after_the_demote_without_a_wait_when_caught_up() -> None:
    plan = plan_of(plan_switchover(after(HEALTHY, SWITCH, "dc1", Action.DEMOTE_POSTGRESQL), "dc2"))
    assert steps(plan)[0] == ("dc2", Action.PROMOTE_POSTGRESQL)
    assert (("dc1", Action.DEMOTE_POSTGRESQL)) not in steps(plan)


def test_a_refused_switchover_is_undone_by_switching_back() -> None:
    stuck = leader_change(
        demoted(0), "dc2", received=FLUSHED - 512, replayed=FLUSHED - 512, state="running"
    )
    back = plan_of(plan_switchover(stuck, "dc1"))
    assert steps(back)[:2] == [("dc1", Action.PROMOTE_POSTGRESQL), ("dc2", Action.VERIFY_FOLLOWING)]
    assert ("dc1", Action.WRITE_MODEL) not in steps(back)  # the model still names dc1


@pytest.mark.parametrize(
    ("why", "observed", "words"),
    [
        (
            "a host does not answer",
            ex.unreachable(HEALTHY, "dc1", ["dc1-app3"]),
            ["no answer from dc1-app3", "dc-failover --to dc2"],
        ),
        (
            "the target does not stream",
            leader_change(HEALTHY, "dc2", state="running"),
            ["dc2 does not stream from dc1", "standby leader dc2-db1 running"],
        ),
        (
            "the target has not followed a promotion",
            leader_change(HEALTHY, "dc2", timeline=2),
            ["dc2 is on timeline 2, dc1 on 3"],
        ),
        (
            "two writable primaries",
            leader_change(HEALTHY, "dc2", role=PgRole.PRIMARY, state="running", flushed=FLUSHED),
            ["two writable PostgreSQL primaries (dc1-db1, dc2-db1)", "split brain"],
        ),
        (
            "a fenced site",
            site_change(HEALTHY, "dc1", fenced=frozenset({"dc1-db1"})),
            ["dc1 is fenced (dc1-db1)", "dc-failback --to dc1"],
        ),
        (
            "a paused cluster",
            ex.change(
                HEALTHY,
                "dc2",
                lambda s: replace(s, postgresql=replace(s.postgresql, paused=True)),
            ),
            ["dc2's Patroni cluster is paused"],
        ),
        (
            "a Redis node down",
            ex.change(
                HEALTHY,
                "dc2",
                lambda s: replace(
                    s,
                    redis=replace(
                        s.redis,
                        nodes=(RedisNode(address="10.40.2.13", error="Connection refused"),),
                    ),
                ),
            ),
            ["dc2-db3 (Connection refused)"],
        ),
        (
            "an unknown datacenter",
            HEALTHY,
            ["unknown datacenter 'dc3'; known: dc1, dc2"],
        ),
    ],
)
def test_switchover_refusals(why: str, observed: Observed, words: list[str]) -> None:
    target = "dc3" if "unknown" in why else "dc2"
    refusal = refusal_of(plan_switchover(observed, target))
    for word in words:
        assert word in refusal.reason, why


def test_switchover_twice_changes_nothing_and_says_what_it_found() -> None:
    switched = apply_all(HEALTHY, SWITCH.steps)
    again = plan_of(plan_switchover(switched, "dc2"))
    assert again.done
    assert again.found.startswith("dc2 is already the active site and dc1 follows it")
    assert "PostgreSQL primary dc2-db1 (timeline 4" in again.found
    assert "the model names dc2 active" in again.found
    assert "nothing to do" in "\n".join(again.lines())


def test_switchover_to_the_active_site_is_empty() -> None:
    plan = plan_of(plan_switchover(HEALTHY, "dc1"))
    assert plan.done and plan.found.startswith("dc1 is already the active site")


def test_switchover_converges_a_site_whose_files_follow_the_old_model() -> None:
    switched = site_change(apply_all(HEALTHY, SWITCH.steps), "dc1", applied_active="dc1")
    assert steps(plan_of(plan_switchover(switched, "dc2"))) == [("dc1", Action.CONVERGE)]


def test_switchover_syncs_rabbitmq_definitions_before_airflow_starts() -> None:
    plan = plan_of(plan_switchover(site_change(HEALTHY, "dc2", rabbitmq_missing=None), "dc2"))
    sync = at(plan, "dc2", Action.SYNC_RABBITMQ)
    assert sync < at(plan, "dc2", Action.START_AIRFLOW)
    assert plan.steps[sync].source == "dc1" and "missing: unknown" in plan.steps[sync].why


@pytest.mark.parametrize("messages", [None, 12])
def test_stale_task_messages_are_purged_before_airflow_starts(messages: int | None) -> None:
    stale = site_change(HEALTHY, "dc2", rabbitmq_messages=messages)
    for plan in (
        plan_of(plan_switchover(stale, "dc2")),
        plan_of(plan_failover(ex.unreachable(stale, "dc1"), "dc2", "dc1")),
    ):
        purge = at(plan, "dc2", Action.PURGE_RABBITMQ)
        assert purge < at(plan, "dc2", Action.START_AIRFLOW)
        assert plan.steps[purge].hosts == ("dc2-db1", "dc2-db2", "dc2-db3")
        assert "run tasks twice" in plan.steps[purge].why
    assert Action.PURGE_RABBITMQ not in {a for _, a in steps(SWITCH)}


# ---- dc-failover ----


def test_failover_of_an_unreachable_site_is_refused_without_the_acknowledgement() -> None:
    refusal = refusal_of(plan_failover(LOST, "dc2"))
    assert "no host of dc1 answers (dc1-app1, dc1-app2" in refusal.reason
    assert "nothing was changed" in refusal.reason
    assert "--acknowledge-lost dc1" in refusal.reason


def test_failover_of_an_unreachable_site_with_the_acknowledgement() -> None:
    plan = FAILED_OVER
    assert steps(plan) == [
        ("dc2", Action.ADD_STANDBY_SLOT),
        ("dc2", Action.PROMOTE_POSTGRESQL),
        ("dc2", Action.PROMOTE_REDIS),
        ("dc2", Action.START_SENTINELS),
        ("dc2", Action.START_AIRFLOW),
        ("dc2", Action.WRITE_MODEL),
        ("dc2", Action.CONVERGE),
    ]
    assert not plan.fenced
    assert plan.acknowledged == tuple(sorted(ex.topology().site("dc1").hosts))
    loss = plan.loss
    assert loss is not None and not loss.exact
    assert loss.received == FLUSHED and loss.last_known == FLUSHED
    assert "last reported to dc2-db1 by dc1's WAL sender" in loss.known_from
    assert loss.postgresql_bytes == 0 and loss.redis_offset_gap is None
    assert "at least 0 bytes" in loss.describe()


@pytest.mark.parametrize(
    ("ack", "words"),
    [
        ("dc2", "names dc2, the site to promote"),
        ("dc3", "names 'dc3', not a datacenter of example-prod (dc1, dc2)"),
    ],
)
def test_failover_refuses_an_acknowledgement_naming_the_wrong_site(ack: str, words: str) -> None:
    assert words in refusal_of(plan_failover(LOST, "dc2", ack)).reason


def test_failover_reports_the_loss_window_from_the_senders_last_report() -> None:
    # dc2 received 1 MiB less than dc1's sender last said it had.
    behind = leader_change(LOST, "dc2", received=FLUSHED - 2**20, replayed=FLUSHED - 2**20)
    loss = plan_of(plan_failover(behind, "dc2", "dc1")).loss
    assert loss is not None and loss.postgresql_bytes == 2**20


def test_failover_fences_every_answering_host_of_the_old_site_first() -> None:
    plan = plan_of(plan_failover(HEALTHY, "dc2"))
    promote = at(plan, "dc2", Action.PROMOTE_POSTGRESQL)
    for action in (
        Action.STOP_AIRFLOW,
        Action.FENCE_POSTGRESQL,
        Action.STOP_SENTINELS,
        Action.FENCE_REDIS,
        Action.RELEASE_VIPS,
    ):
        assert at(plan, "dc1", action) < promote, action
    assert at(plan, "dc1", Action.STOP_AIRFLOW) < at(plan, "dc2", Action.START_AIRFLOW)
    assert plan.fenced == (
        "dc1-app1",
        "dc1-app2",
        "dc1-app3",
        "dc1-db1",
        "dc1-db2",
        "dc1-db3",
        "dc1-edge1",
        "dc1-edge2",
    )
    assert not plan.acknowledged
    assert Action.FENCE_ETCD not in {a for _, a in steps(plan)}  # every member answers
    assert any("dc-switchover --to dc2 would lose nothing" in n for n in plan.notes)
    assert plan.loss is not None and plan.loss.redis_offset_gap == 0


def test_failover_with_an_acknowledgement_that_was_not_needed_still_fences() -> None:
    plan = plan_of(plan_failover(HEALTHY, "dc2", "dc1"))
    assert plan.fenced and not plan.acknowledged
    assert any("--acknowledge-lost dc1 was not needed" in note for note in plan.notes)


def test_failover_of_a_partly_reachable_site_takes_the_quorum_and_waits() -> None:
    # dc1-db1 (primary, Redis master, an etcd member) does not answer.
    plan = plan_of(plan_failover(ex.unreachable(HEALTHY, "dc1", ["dc1-db1"]), "dc2"))
    fence_etcd = at(plan, "dc1", Action.FENCE_ETCD)
    wait = at(plan, "dc1", Action.WAIT_SELF_DEMOTION)
    assert at(plan, "dc1", Action.FENCE_POSTGRESQL) < fence_etcd < wait
    assert wait < at(plan, "dc2", Action.PROMOTE_POSTGRESQL)
    assert plan.steps[fence_etcd].hosts == ("dc1-db2", "dc1-db3")
    assert plan.steps[wait].hosts == ("dc1-db1",) and plan.steps[wait].seconds == 22
    redis = plan.steps[at(plan, "dc2", Action.PROMOTE_REDIS)]
    assert redis.seconds == 12 and "writes held 12 s" in redis.waits_for
    assert "dc1-db1" not in plan.fenced and "dc1-db2" in plan.fenced
    assert not plan.acknowledged


def test_failover_resumes_the_self_demotion_wait_where_it_was() -> None:
    start = ex.unreachable(HEALTHY, "dc1", ["dc1-db1"])
    plan = plan_of(plan_failover(start, "dc2"))
    fenced = after(start, plan, "dc1", Action.FENCE_ETCD)
    waited = site_change(fenced, "dc1", fence_age={"etcd": 15.0})
    again = plan_of(plan_failover(waited, "dc2"))
    wait = again.steps[at(again, "dc1", Action.WAIT_SELF_DEMOTION)]
    assert wait.seconds == 7
    done = site_change(fenced, "dc1", fence_age={"etcd": 30.0})
    assert Action.WAIT_SELF_DEMOTION not in {
        a for _, a in steps(plan_of(plan_failover(done, "dc2")))
    }


def test_failover_refused_when_the_unreachable_part_keeps_an_etcd_quorum() -> None:
    cut = ex.unreachable(HEALTHY, "dc1", ["dc1-db1", "dc1-db2"])
    refusal = refusal_of(plan_failover(cut, "dc2"))
    assert "PostgreSQL members dc1-db1, dc1-db2 do not answer" in refusal.reason
    assert "only 1 of 3 etcd members" in refusal.reason
    assert "--acknowledge-lost dc1" in refusal.reason
    plan = plan_of(plan_failover(cut, "dc2", "dc1"))
    assert plan.acknowledged == ("dc1-db1", "dc1-db2")
    assert "dc1-db3" in plan.fenced
    assert Action.WAIT_SELF_DEMOTION not in {a for _, a in steps(plan)}


def test_failover_refused_when_unreachable_redis_nodes_could_keep_writing() -> None:
    # Two Redis nodes that do not answer could be a master and its replica: with
    # min-replicas-to-write 1 they keep taking writes. Their PostgreSQL is fenced by
    # etcd: make etcd answer there.
    cut = ex.unreachable(HEALTHY, "dc1", ["dc1-db1", "dc1-db2"])
    topology = replace(HEALTHY.topology, redis_min_replicas_to_write=1)
    refusal = refusal_of(plan_failover(replace(cut, topology=topology), "dc2"))
    assert "dc1-db1, dc1-db2 do not answer" in refusal.reason


def test_failover_of_a_site_with_no_running_standby_leader_is_refused() -> None:
    down = leader_change(LOST, "dc2", role=None, state="stopped")
    refusal = refusal_of(plan_failover(down, "dc2", "dc1"))
    assert "dc2's PostgreSQL has no running leader" in refusal.reason
    assert "nothing to promote" in refusal.reason


def test_failover_twice_changes_nothing_and_says_what_it_found() -> None:
    done = apply_all(LOST, FAILED_OVER.steps)
    for ack in ("dc1", None):
        again = plan_of(plan_failover(done, "dc2", ack))
        assert again.done, again.lines()
        assert again.found.startswith("dc2 is already the active site; dc1 is fenced or lost")
        assert any("whether it is still fenced cannot be checked" in n for n in again.notes)
    fenced = plan_of(plan_failover(HEALTHY, "dc2"))
    second = plan_of(plan_failover(apply_all(HEALTHY, fenced.steps), "dc2"))
    assert second.done and second.loss is not None and second.loss.exact


def test_failover_fences_an_old_site_that_comes_back_still_writable() -> None:
    # After an acknowledged failover, dc1 answers again as it was: a writable primary.
    back = ex.reachable_again(apply_all(LOST, FAILED_OVER.steps), "dc1", HEALTHY)
    plan = plan_of(plan_failover(back, "dc2"))
    assert {site for site, _ in steps(plan)} == {"dc1"}
    assert ("dc1", Action.FENCE_POSTGRESQL) in steps(plan)
    assert ("dc1", Action.FENCE_REDIS) in steps(plan)
    assert ("dc1", Action.STOP_AIRFLOW) in steps(plan)


def test_failover_to_a_site_that_already_follows_the_other_way_is_a_no_op() -> None:
    switched = apply_all(HEALTHY, SWITCH.steps)
    plan = plan_of(plan_failover(switched, "dc2"))
    assert plan.done and plan.found.startswith("dc2 is already the active site; dc1 follows it")


# ---- dc-failback ----


def failed_over_and_back(extra: int = 2**20) -> Observed:
    """dc1 wrote ``extra`` bytes dc2 never received, was lost (acknowledged), came back
    as it was, and a second dc-failover fenced it."""
    ahead = leader_change(HEALTHY, "dc1", flushed=FLUSHED + extra)
    back = ex.reachable_again(apply_all(LOST, FAILED_OVER.steps), "dc1", ahead)
    return apply_all(back, plan_of(plan_failover(back, "dc2")).steps)


def test_failback_with_diverged_timelines_rewinds_then_switches_back() -> None:
    plan = plan_of(plan_failback(failed_over_and_back(), "dc1"))
    kinds = steps(plan)
    assert kinds[:5] == [
        ("dc1", Action.UNFENCE),
        ("dc1", Action.REJOIN_POSTGRESQL),
        ("dc1", Action.FOLLOW_REDIS),
        ("dc1", Action.VERIFY_STANDBY),
        ("dc1", Action.CONVERGE),
    ]
    assert at(plan, "dc2", Action.DEMOTE_POSTGRESQL) < at(plan, "dc1", Action.PROMOTE_POSTGRESQL)
    assert kinds[-3:] == [
        ("dc1", Action.WRITE_MODEL),
        ("dc1", Action.CONVERGE),
        ("dc2", Action.CONVERGE),
    ]
    rejoin = plan.steps[1]
    assert rejoin.hosts == ("dc1-db1", "dc1-db2", "dc1-db3") and rejoin.source == "dc2"
    assert "pg_rewind on dc1-db1" in rejoin.why
    assert any(
        n.startswith("dc1-db1: rewind: wrote past the promotion point")
        and "1048576 bytes of it are discarded" in n
        for n in plan.notes
    )
    assert any(n.startswith("dc1-db2: follow:") for n in plan.notes)


def test_failback_twice_changes_nothing() -> None:
    start = failed_over_and_back()
    plan = plan_of(plan_failback(start, "dc1"))
    again = plan_of(plan_failback(apply_all(start, plan.steps), "dc1"))
    assert again.done and again.found.startswith("dc1 is already the active site")


@pytest.mark.parametrize(
    ("why", "make", "words"),
    [
        (
            "the old site does not answer entirely",
            lambda: ex.unreachable(failed_over_and_back(), "dc1", ["dc1-edge2"]),
            ["needs every host of dc1; no answer from dc1-edge2"],
        ),
        (
            "the old site still has a writable primary",
            lambda: ex.reachable_again(apply_all(LOST, FAILED_OVER.steps), "dc1", HEALTHY),
            ["dc1 has a writable primary (dc1-db1) while dc2 is active", "split brain"],
        ),
        (
            "the old site still runs a Redis master",
            lambda: ex.change(
                failed_over_and_back(),
                "dc1",
                lambda s: replace(
                    s, redis=replace(s.redis, nodes=(RedisNode("10.40.1.11", role="master"),))
                ),
            ),
            ["dc1's Redis dc1-db1 is a master"],
        ),
    ],
)
def test_failback_refusals(why: str, make: Callable[[], Observed], words: list[str]) -> None:
    refusal = refusal_of(plan_failback(make(), "dc1"))
    for word in words:
        assert word in refusal.reason, why


def test_failback_of_a_site_that_already_follows_is_the_switchover() -> None:
    switched = apply_all(HEALTHY, SWITCH.steps)
    back = plan_of(plan_failback(switched, "dc1"))
    assert back.command == "dc-failback"
    assert steps(back) == steps(plan_of(plan_switchover(switched, "dc1")))


PRIMARY4 = PgMember(
    "dc2-db1",
    PgRole.PRIMARY,
    "running",
    4,
    flushed=FLUSHED + 5000,
    history=(*ex.HISTORY, TimelineSwitch(3, FLUSHED)),
    system_id="7",
)


@pytest.mark.parametrize(
    ("member", "mode", "words"),
    [
        (
            PgMember("m", None, "stopped", 3, replayed=FLUSHED - 10, history=ex.HISTORY),
            Rejoin.FOLLOW,
            "before the promotion point",
        ),
        (
            PgMember("m", None, "stopped", 3, checkpoint=FLUSHED, history=ex.HISTORY),
            Rejoin.REWIND,  # its shutdown checkpoint record begins at the promotion point
            "wrote past the promotion point",
        ),
        (
            PgMember("m", None, "stopped", 3, checkpoint=FLUSHED + 99, system_id="7"),
            Rejoin.REWIND,
            "to 0/5A3C0F8B",
        ),
        (
            PgMember("m", None, "stopped", 3, checkpoint=FLUSHED + 99, system_id="8"),
            Rejoin.RECLONE,
            "another database (system identifier 8, active 7)",
        ),
        (PgMember("m", None, "stopped"), Rejoin.RECLONE, "no readable data directory"),
        (
            PgMember("m", None, "stopped", 7, checkpoint=FLUSHED, history=ex.HISTORY),
            Rejoin.RECLONE,
            "newer than the active 4 on another lineage",
        ),
        (
            PgMember(
                "m",
                None,
                "stopped",
                5,
                checkpoint=FLUSHED + 20,
                history=(*ex.HISTORY, TimelineSwitch(3, FLUSHED), TimelineSwitch(4, FLUSHED + 9)),
            ),
            Rejoin.REWIND,
            "promoted itself later",
        ),
        (
            PgMember("m", None, "stopped", 3, checkpoint=10, history=(TimelineSwitch(1, 5),)),
            Rejoin.RECLONE,
            "not a prefix",
        ),
        (
            PgMember("m", None, "stopped", 4, checkpoint=FLUSHED + 10),
            Rejoin.FOLLOW,
            "behind it",
        ),
        (
            PgMember("m", None, "stopped", 4, checkpoint=FLUSHED + 9000),
            Rejoin.RECLONE,
            "ahead of the active primary on its own timeline 4",
        ),
    ],
)
def test_how_a_member_rejoins(member: PgMember, mode: Rejoin, words: str) -> None:
    got, why, _ = rejoin_mode(PRIMARY4, member)
    assert (got, words in why) == (mode, True), why


def test_rejoin_without_the_active_lineage_leaves_it_to_patroni() -> None:
    got, why, _ = rejoin_mode(
        replace(PRIMARY4, history=None), PgMember("m", None, "stopped", 3, checkpoint=1)
    )
    assert got is Rejoin.REWIND and "Patroni compares timelines" in why


# ---- the environment file ----


def test_the_model_agrees_with_a_healthy_platform() -> None:
    assert model_agrees_with_live("dc1", HEALTHY) is None
    assert apply_refusal(HEALTHY, ["dc1", "dc2"]) is None


def test_a_stale_model_is_refused() -> None:
    switched = apply_all(HEALTHY, SWITCH.steps)
    refusal = model_agrees_with_live("dc1", switched)
    assert refusal is not None
    assert "inventory/example-prod.yaml names dc1 active, but the writable primary is dc2-db1" in (
        refusal.reason
    )
    assert "timeline 4" in refusal.reason and "nothing was applied" in refusal.reason
    assert model_agrees_with_live("dc2", switched) is None


@pytest.mark.parametrize(
    ("why", "observed", "words"),
    [
        (
            "two writable primaries",
            leader_change(HEALTHY, "dc2", role=PgRole.PRIMARY, state="running", flushed=FLUSHED),
            "two sites have a writable PostgreSQL primary: dc1-db1 (dc1), dc2-db1 (dc2)",
        ),
        (
            "a switchover half-way",
            after(HEALTHY, SWITCH, "dc1", Action.DEMOTE_POSTGRESQL),
            "a DC switchover or failover is half-way",
        ),
        (
            "mid-switchover, PostgreSQL already moved",
            after(HEALTHY, SWITCH, "dc2", Action.PROMOTE_REDIS),
            "the file is stale",  # PostgreSQL moved before Redis
        ),
        (
            "schedulers in the other site",
            site_change(HEALTHY, "dc2", airflow_units={"dc2-app1": {"airflow-scheduler": True}}),
            "Airflow schedulers run on dc2-app1 (dc2)",
        ),
        (
            "nothing runs and a host does not answer",
            ex.unreachable(
                ex.change(
                    HEALTHY,
                    "dc1",
                    lambda s: replace(s, postgresql=replace(s.postgresql, members=())),
                ),
                "dc2",
            ),
            "cannot be told",
        ),
    ],
)
def test_the_model_is_refused_while_the_live_state_is_not_its(
    why: str, observed: Observed, words: str
) -> None:
    refusal = model_agrees_with_live("dc1", observed)
    assert refusal is not None, why
    assert words in refusal.reason, why


def test_a_redis_master_left_in_the_other_site_is_refused() -> None:
    # PostgreSQL in dc1, but a dc2 node was made master by hand.
    observed = ex.change(
        HEALTHY,
        "dc2",
        lambda s: replace(
            s, redis=replace(s.redis, nodes=(RedisNode("10.40.2.11", role="master"),))
        ),
    )
    refusal = model_agrees_with_live("dc1", observed)
    assert refusal is not None and "Redis dc2-db1 (dc2) is a writable master too" in refusal.reason


def test_a_first_deploy_with_nothing_running_is_accepted() -> None:
    empty = ex.change(
        ex.change(
            HEALTHY, "dc1", lambda s: replace(s, postgresql=replace(s.postgresql, members=()))
        ),
        "dc2",
        lambda s: replace(s, postgresql=replace(s.postgresql, members=())),
    )
    assert model_agrees_with_live("dc1", empty) is None


def test_a_fenced_site_is_not_applied() -> None:
    fenced = apply_all(HEALTHY, plan_of(plan_failover(HEALTHY, "dc2")).steps)
    assert model_agrees_with_live("dc2", fenced) is None
    refusal = apply_refusal(fenced, ["dc1"])
    assert refusal is not None and "dc1 is fenced since a dc-failover" in refusal.reason
    assert "dc-failback --to dc1" in refusal.reason
    assert apply_refusal(fenced, ["dc2"]) is None


def test_the_examples_are_what_they_say() -> None:
    dc1, dc2 = HEALTHY.site("dc1"), HEALTHY.site("dc2")
    assert [m.name for m in dc1.postgresql.writable] == ["dc1-db1"]
    assert dc2.postgresql.standby_of == "dc1" and not dc2.postgresql.writable
    assert dc1.schedulers_running == ("dc1-app1", "dc1-app2") and not dc2.airflow_running
    assert HEALTHY.host_of(dc1.redis.masters[0]) == "dc1-db1"
    cut = ex.unreachable(HEALTHY, "dc1", ["dc1-db1"])
    assert cut.site("dc1").unreachable == {"dc1-db1"}
    assert cut.site("dc1").postgresql.member("dc1-db1") is None
    assert not cut.site("dc1").redis.nodes[0].up
