"""What each switchover step runs on which host (plinth/dc/actions.py), with the hosts'
answers given as data: the commands, their arguments and their order. That they do what
they say on real hosts is the full lab's drill (tests/lab/test_dc_switchover.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from facts.redis import RedisNode, ReplicationState
from plinth.dc.actions import HostExecutor
from plinth.dc.live import LiveSites
from plinth.geo import examples as ex
from plinth.geo.decide import Action, Plan, Step, plan_switchover
from plinth.geo.execute import StepFailed
from plinth.geo.simulate import apply_all
from plinth.model import load_environment
from plinth.stacks import Stack

ENV = ex.environment()
ADDRESS = {h.name: str(h.address) for h in ENV.hosts}


class RecordingSites(LiveSites):
    """Every host answers; each command is recorded and answers ``OK``."""

    def __init__(self, path: Path = ex.EXAMPLE) -> None:
        env = load_environment(path)
        super().__init__([Stack(env, path, dc.name) for dc in env.datacenters], "dc2")
        self.commands: list[tuple[str, str]] = []
        self.answers: dict[str, tuple[bool, list[str]]] = {}

    def pyinfra_host(self, name: str) -> Any | None:
        return object()

    def run(self, name: str, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
        self.commands.append((name, command))
        for needle, (ok, out) in self.answers.items():
            if needle in command:
                return ok, out, []
        return True, ["OK"], []

    def fact(self, name: str, fact: Any, **kwargs: Any) -> Any:
        assert fact.__name__ == "RedisReplication"
        return ReplicationState(
            tuple(RedisNode(address=a, role="slave", offset=ex.OFFSET) for a in kwargs["addresses"])
        )


LAGGING = ex.lagging(ex.healthy(), 3_200)


def _plan() -> Plan:
    plan = plan_switchover(LAGGING, "dc2")
    assert isinstance(plan, Plan), plan
    return plan


PLAN = _plan()


def step_of(action: Action) -> tuple[Step, Any]:
    """The plan's step ``action`` and the observation it is performed from."""
    index = next(i for i, s in enumerate(PLAN.steps) if s.action is action)
    return PLAN.steps[index], apply_all(LAGGING, PLAN.steps[:index])


def perform(action: Action, sites: RecordingSites | None = None) -> list[tuple[str, str]]:
    sites = sites or RecordingSites()
    step, observed = step_of(action)
    HostExecutor(sites, lambda line: None, sleep=lambda s: None).perform(step, observed)
    return sites.commands


def test_airflow_stops_the_scheduler_first() -> None:
    commands = perform(Action.STOP_AIRFLOW)
    assert [h for h, _ in commands] == ["dc1-app1", "dc1-app2", "dc1-app3"]
    for host, command in commands:
        units = [w for w in command.split() if w.endswith(".service")]
        if "airflow-scheduler.service" in units:
            assert units[0] == "airflow-scheduler.service", (host, command)
        assert all(part.startswith("systemctl disable --now") for part in command.split(" && "))


def test_the_slot_is_patched_into_the_target_through_its_standby_leader() -> None:
    [(host, command)] = perform(Action.ADD_STANDBY_SLOT)
    assert host == "dc2-db1"
    assert "-XPATCH" in command and "-K /etc/patroni/restapi.curlrc" in command
    assert '{"slots": {"standby_dc1": {"type": "physical"}}}' in command
    assert command.endswith(f"https://{ADDRESS['dc2-db1']}:8008/config")


def test_the_demote_names_the_targets_vip_and_the_slot_then_drops_the_old_slot() -> None:
    (host, demote), (again, patch) = perform(Action.DEMOTE_POSTGRESQL)
    vip = ENV.vip_serving("postgresql", "dc2")
    assert vip is not None
    assert host == again == "dc1-db1"
    assert demote.startswith("timeout 170 /usr/local/bin/patronictl -c /etc/patroni/config.yml")
    assert (
        f"demote-cluster pg-dc1 --force --host {vip.address} "
        f"--port {ENV.components.haproxy.primary_port} --primary-slot-name standby_dc1"
    ) in demote
    assert '{"slots": {"standby_dc2": null}}' in patch and "-XPATCH" in patch


def test_a_role_already_changed_is_not_a_failure_but_another_answer_is() -> None:
    sites = RecordingSites()
    sites.answers["promote-cluster"] = (False, ["Error: Cluster is already in the required state"])
    [(host, command)] = perform(Action.PROMOTE_POSTGRESQL, sites)
    assert host == "dc2-db1" and "promote-cluster pg-dc2 --force" in command
    sites = RecordingSites()
    sites.answers["promote-cluster"] = (False, ["Error: Cluster has no leader"])
    with pytest.raises(StepFailed, match="Cluster has no leader"):
        perform(Action.PROMOTE_POSTGRESQL, sites)


def test_redis_pause_promote_and_follow() -> None:
    [(host, pause)] = perform(Action.PAUSE_REDIS)
    assert host == "dc1-db1" and pause.endswith("CLIENT PAUSE 90000 WRITE")
    assert f"-h {ADDRESS['dc1-db1']}" in pause and "--tls" in pause and "REDISCLI_AUTH" in pause

    promoted = perform(Action.PROMOTE_REDIS)
    tails = [(h, c.rsplit(" -p 6379 ", 1)[1]) for h, c in promoted]
    assert tails[:3] == [
        ("dc2-db1", "REPLICAOF NO ONE"),
        ("dc2-db1", "CONFIG SET replica-priority 100"),
        ("dc2-db1", "CONFIG REWRITE"),
    ]
    assert ("dc2-db2", f"REPLICAOF {ADDRESS['dc2-db1']} 6379") in tails

    followed = perform(Action.FOLLOW_REDIS)
    tails = [(h, c.rsplit(" -p 6379 ", 1)[1]) for h, c in followed]
    assert tails[:4] == [
        ("dc1-db1", f"REPLICAOF {ADDRESS['dc2-db1']} 6379"),
        ("dc1-db1", "CONFIG SET replica-priority 0"),
        ("dc1-db1", "CONFIG REWRITE"),
        ("dc1-db1", "CLIENT UNPAUSE"),
    ]


def test_a_redis_error_fails_the_step() -> None:
    sites = RecordingSites()
    sites.answers["CLIENT PAUSE"] = (True, ["ERR syntax error"])
    with pytest.raises(StepFailed, match="ERR syntax error"):
        perform(Action.PAUSE_REDIS, sites)


def test_the_model_is_written_and_read_again(tmp_path: Path) -> None:
    path = tmp_path / ex.EXAMPLE.name
    shutil.copy(ex.EXAMPLE, path)
    sites = RecordingSites(path)
    step, observed = step_of(Action.WRITE_MODEL)
    executor = HostExecutor(sites, lambda line: None)
    assert "active_datacenter: dc2 (commit it)" in executor.perform(step, observed)
    assert sites.env.active_site == "dc2" and sites.topology().model_active == "dc2"
    assert "already names dc2" in executor.perform(step, observed)
    assert sites.commands == []


def test_failover_steps_are_not_built_and_say_so() -> None:
    step = Step("dc1", Action.FENCE_POSTGRESQL, ("dc1-db1",), "stopped", "fence")
    with pytest.raises(StepFailed, match="fence-postgresql is not built yet"):
        HostExecutor(RecordingSites(), lambda line: None).perform(step, ex.healthy())
