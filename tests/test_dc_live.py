"""The DC commands' observer (plinth/dc/live.py) assembling an Observed from what each
host answers: the facts' values are given as data (as pyinfra's own operation tests give
faked facts), the transport is left out. The reading over SSH itself is drilled in the
full lab (tests/lab/test_dc_switchover.py)."""

from __future__ import annotations

from typing import Any

from facts.redis import RedisNode, ReplicationState
from plinth.dc.live import MARKERS, LiveSites
from plinth.geo import examples as ex
from plinth.geo.decide import Plan, Refusal, plan_switchover
from plinth.model import Role
from plinth.stacks import Stack

ENV = ex.environment()
ADDRESS = {h.name: str(h.address) for h in ENV.hosts}
PRIMARY_PORT = ENV.components.haproxy.primary_port


def patroni(host: str) -> dict[str, Any]:
    """Each member's own /patroni, as in the doc's healthy example."""
    if host == "dc1-db1":
        return {
            "state": "running",
            "role": "primary",
            "timeline": 3,
            "xlog": {"location": ex.FLUSHED},
        }
    role = "standby_leader" if host == "dc2-db1" else "replica"
    return {
        "state": "running",
        "role": role,
        "timeline": 3,
        "replication_state": "streaming",
        "xlog": {"received_location": ex.FLUSHED, "replayed_location": ex.FLUSHED},
    }


def config(dc: str) -> dict[str, Any]:
    if dc == "dc1":
        return {"ttl": 20, "slots": {"standby_dc2": {"type": "physical"}}}
    vip = ENV.vip_serving("postgresql", "dc1")
    assert vip is not None
    return {"ttl": 20, "standby_cluster": {"host": str(vip.address), "port": PRIMARY_PORT}}


def redis_nodes(dc: str) -> ReplicationState:
    master = ADDRESS["dc1-db1"]
    nodes = []
    for host in ENV.hosts_with(Role.REDIS, dc):
        is_master = host.name == "dc1-db1"
        nodes.append(
            RedisNode(
                address=ADDRESS[host.name],
                role="master" if is_master else "slave",
                master_host=None if is_master else master,
                master_link_up=not is_master,
                offset=ex.OFFSET,
                settings={"replica-priority": "0" if dc == "dc2" else "100"},
            )
        )
    return ReplicationState(tuple(nodes))


class AnsweringSites(LiveSites):
    """LiveSites whose hosts answer with the data above (``silent``: no SSH answer)."""

    def __init__(self, silent: frozenset[str] = frozenset(), target: str = "dc2") -> None:
        stacks = [Stack(ENV, ex.EXAMPLE, dc.name) for dc in ENV.datacenters]
        super().__init__(stacks, target)
        self.silent = silent
        self.commands: list[tuple[str, str]] = []

    def pyinfra_host(self, name: str) -> Any | None:
        return None if name in self.silent else object()

    def run(self, name: str, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
        self.commands.append((name, command))
        if command == MARKERS:
            return True, ["applied=dc1"], []
        if "list_queues" in command and "messages" in command:
            return True, ["0"], []
        raise AssertionError(f"unexpected command on {name}: {command}")

    def rabbitmq_missing(self, source: str, target: str) -> Any:
        class Nothing:
            created = 0

        return Nothing()

    def fact(self, name: str, fact: Any, **kwargs: Any) -> Any:
        if name in self.silent:
            return None
        host = self.model_host(name)
        kind = fact.__name__
        if kind == "SystemdStatus":
            active = host.datacenter == "dc1"
            units = {"etcd.service": Role.ETCD in host.roles}
            units["keepalived.service"] = Role.KEEPALIVED in host.roles
            units["redis-sentinel.service"] = active and Role.SENTINEL in host.roles
            for unit in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                         "airflow-triggerer", "airflow-worker"):  # fmt: skip
                units[f"{unit}.service"] = active
            return units
        if kind == "PatroniSelf":
            return patroni(name)
        if kind == "PostgresTimeline":
            return None  # psql did not answer: the member keeps Patroni's view
        if kind == "PatroniDynamicConfig":
            return config(host.datacenter)
        if kind == "RedisReplication":
            return redis_nodes(host.datacenter)
        raise AssertionError(f"unexpected fact {kind} on {name}")


def test_the_reading_gives_the_docs_healthy_observation_and_plan() -> None:
    observed = AnsweringSites().observe()
    expected = ex.healthy()
    for site in expected.sites:
        seen = observed.site(site.name)
        assert seen.reachable == site.reachable
        assert seen.unreachable == frozenset()
        assert [(m.name, m.role, m.state) for m in seen.postgresql.members] == [
            (m.name, m.role, m.state) for m in site.postgresql.members
        ]
        assert seen.postgresql.standby_of == site.postgresql.standby_of
        assert seen.postgresql.slots == site.postgresql.slots
        assert [(n.address, n.role, n.master_host) for n in seen.redis.nodes] == [
            (n.address, n.role, n.master_host) for n in site.redis.nodes
        ]
        assert seen.redis.sentinels_running == site.redis.sentinels_running
        assert seen.airflow_units == site.airflow_units
        assert seen.applied_active == "dc1"
    assert observed.site("dc2").rabbitmq_missing == 0
    assert observed.site("dc1").rabbitmq_missing is None  # not read: not the target
    plan = plan_switchover(observed, "dc2")
    assert isinstance(plan, Plan)
    wanted = plan_switchover(expected, "dc2")
    assert isinstance(wanted, Plan)
    assert [(s.site, s.action, s.hosts) for s in plan.steps] == [
        (s.site, s.action, s.hosts) for s in wanted.steps
    ]


def test_a_silent_host_is_recorded_and_the_switchover_refused() -> None:
    sites = AnsweringSites(silent=frozenset({"dc2-edge2", "dc1-db2"}))
    observed = sites.observe()
    assert observed.site("dc2").unreachable == {"dc2-edge2"}
    assert observed.site("dc1").unreachable == {"dc1-db2"}
    assert "dc1-db2" not in {m.name for m in observed.site("dc1").postgresql.members}
    assert not any(name == "dc1-db2" for name, _ in sites.commands)
    refusal = plan_switchover(observed, "dc2")
    assert isinstance(refusal, Refusal)
    assert "no answer from dc1-db2, dc2-edge2" in refusal.reason


def test_a_clean_rabbitmq_is_not_read_again() -> None:
    sites = AnsweringSites()
    sites.observe()
    first = sum("list_queues" in c for _, c in sites.commands)
    sites.observe()
    assert first == 1
    assert sum("list_queues" in c for _, c in sites.commands) == 1
