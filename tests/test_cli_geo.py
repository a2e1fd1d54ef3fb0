"""`plinth dc-switchover`: what the command refuses before it connects anywhere, and its
wiring of the loop (--dry, the question before the first step, a goal already reached),
with the sites replaced by the decision layer's example observation. The reading and the
steps over SSH are drilled in the full lab (tests/lab/test_dc_switchover.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from click.testing import CliRunner

from plinth.cli import main
from plinth.geo import examples as ex
from plinth.geo.decide import Step
from plinth.geo.observe import Observed
from plinth.geo.simulate import apply


class FakeSites:
    """Stands in for plinth.dc.live.LiveSites: no connection."""

    observed: Observed = ex.healthy()

    def __init__(self, stacks: list[Any], target: str | None = None) -> None:
        self.stacks = stacks

    def __enter__(self) -> FakeSites:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeExecutor:
    performed: ClassVar[list[Step]] = []

    def __init__(self, live: FakeSites, say: Any) -> None:
        self.live = live

    def observe(self) -> Observed:
        return self.live.observed

    def perform(self, step: Step, observed: Observed) -> str:
        FakeExecutor.performed.append(step)
        self.live.observed = apply(self.live.observed, step)
        return ""


@pytest.fixture()
def fake_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    import plinth.dc.actions
    import plinth.dc.live

    FakeSites.observed = ex.healthy()
    FakeExecutor.performed = []
    monkeypatch.setattr(plinth.dc.live, "LiveSites", FakeSites)
    monkeypatch.setattr(plinth.dc.actions, "HostExecutor", FakeExecutor)


def test_one_datacenter_is_refused(project: Path, fake_sites: None) -> None:
    data = {
        "name": "single",
        "datacenters": [{"name": "dc1", "subnet": "10.231.1.0/24", "domain": "dc1.x.internal"}],
        "hosts": [
            {"name": f"n{i}", "address": f"10.231.1.1{i}", "datacenter": "dc1", "roles": ["etcd"]}
            for i in (1, 2, 3)
        ],
    }
    (project / "inventory" / "single.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["dc-switchover", "single", "--to", "dc1"])
    assert result.exit_code == 1
    assert "single has one datacenter (dc1)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["example-prod", "--to", "dc9"], "--to dc9: not a datacenter of example-prod (dc1, dc2)"),
        (["example-prod-dc1", "--to", "dc2"], "name the environment (example-prod)"),
    ],
)
def test_bad_targets_are_refused_before_connecting(
    project: Path, fake_sites: None, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(main, ["dc-switchover", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert FakeExecutor.performed == []


def test_dry_prints_the_plan_and_changes_nothing(project: Path, fake_sites: None) -> None:
    result = CliRunner().invoke(main, ["dc-switchover", "example-prod", "--to", "dc2", "--dry"])
    assert result.exit_code == 0, result.output
    assert "1. dc1: stop-airflow [dc1-app1, dc1-app2, dc1-app3]" in result.output
    assert FakeExecutor.performed == []


def test_the_active_healthy_site_needs_nothing(project: Path, fake_sites: None) -> None:
    result = CliRunner().invoke(main, ["dc-switchover", "example-prod", "--to", "dc1"])
    assert result.exit_code == 0, result.output
    assert "nothing to do: the goal is already reached" in result.output
    assert FakeExecutor.performed == []


def test_it_asks_before_the_first_step(project: Path, fake_sites: None) -> None:
    result = CliRunner().invoke(main, ["dc-switchover", "example-prod", "--to", "dc2"], input="n\n")
    assert result.exit_code == 1
    assert "Perform these" in result.output and "declined: nothing was done" in result.output
    assert FakeExecutor.performed == []


def test_with_yes_it_runs_to_the_goal(project: Path, fake_sites: None) -> None:
    result = CliRunner().invoke(main, ["dc-switchover", "example-prod", "--to", "dc2", "--yes"])
    assert result.exit_code == 0, result.output
    assert "done: dc2 is already the active site and dc1 follows it" in result.output
    assert "it names dc2 active now" in result.output.splitlines()[-1]
    assert FakeExecutor.performed[0].action.value == "stop-airflow"
