"""`plinth up --skip-preview`: the CLI's own logic (which pass runs, what it prints).

The passes themselves (pyinfra over SSH) are proven on the lab, where every test deploy
uses this flag; here they are replaced so only the CLI's choices are under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from plinth import outputs as outputs_module
from plinth import plan as plan_module
from plinth.cli import core, main


def test_skip_preview_without_yes_is_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    touched: list[str] = []

    def resolve(target: str) -> list[object]:
        touched.append(target)
        return []

    monkeypatch.setattr(core, "_stacks", resolve)
    result = CliRunner().invoke(main, ["up", "example-prod", "--skip-preview"])
    assert result.exit_code == 1
    assert "--skip-preview" in result.output and "--yes" in result.output
    assert touched == []


class _Stack:
    def __init__(self, name: str) -> None:
        self.name = name


def test_skip_preview_applies_without_a_preview_and_lists_what_changed(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    stacks = [_Stack("prod-dc1"), _Stack("prod-dc2")]
    applied: list[str] = []

    def no_preview(stack: object, view: object = None) -> None:
        raise AssertionError("the preview ran although it was skipped")

    def apply(stack: _Stack, view: object = None) -> plan_module.ApplyResult:
        applied.append(stack.name)
        changed = {"dc1-db1": ["Configure Patroni"]} if stack.name == "prod-dc1" else {}
        return plan_module.ApplyResult(stack.name, changed, [], 1.5)

    monkeypatch.setattr(core, "_stacks", lambda target, **_: stacks)
    monkeypatch.setattr(core, "ensure_secrets", lambda env: [])
    monkeypatch.setattr(core, "short_secrets", lambda env: [])
    monkeypatch.setattr(plan_module, "preview", no_preview)
    monkeypatch.setattr(plan_module, "apply", apply)
    monkeypatch.setattr(outputs_module, "collect", lambda env, path: {})
    monkeypatch.setattr(outputs_module, "render_text", lambda data: "outputs")
    for stack in stacks:
        stack.environment = None  # type: ignore[attr-defined]
        stack.environment_file = project  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, ["up", "example-prod", "--yes", "--skip-preview"])
    assert result.exit_code == 0, result.output
    assert applied == ["prod-dc1", "prod-dc2"]
    lines = result.output.splitlines()
    assert lines[:3] == [
        "  dc1-db1:",
        "    ~ Configure Patroni",
        "stack prod-dc1: applied, 1 operation(s) changed a host (1.5 s, preview skipped)",
    ]
    assert "stack prod-dc2: applied, 0 operation(s) changed a host (1.5 s, preview skipped)" in (
        lines
    )


def test_preview_writes_the_readable_plan_beside_the_json_from_one_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    passes: list[str] = []

    def preview(stack: _Stack, view: object = None) -> plan_module.StackPlan:
        passes.append(stack.name)
        return plan_module.StackPlan(
            stack=stack.name,
            hosts=["dc1-db1", "dc1-db2"],
            changes={
                "dc1-db1": [
                    plan_module.OperationChange(
                        "Configure Patroni", reasons=("patroni.yml: ttl 30 -> 20",)
                    ),
                    plan_module.OperationChange("Restart Patroni", conditional=True),
                ],
                "dc1-db2": [plan_module.OperationChange("Restart Patroni", conditional=True)],
            },
            seconds=2.0,
        )

    monkeypatch.setattr(core, "_stacks", lambda target, **_: [_Stack("prod-dc1")])
    monkeypatch.setattr(plan_module, "preview", preview)
    summary = tmp_path / "plan.txt"
    result = CliRunner().invoke(
        main, ["preview", "prod-dc1", "--json", "--summary", str(summary), "--expect-no-changes"]
    )
    assert result.exit_code == 2  # drift: one unconditional change
    assert passes == ["prod-dc1"]
    plan = json.loads(result.stdout)
    assert plan["stacks"][0]["change_count"] == 1
    assert summary.read_text().splitlines() == [
        "stack prod-dc1: 1 change(s) (2.0 s)",
        "  dc1-db1:",
        "    ~ Configure Patroni",
        "        reason: patroni.yml: ttl 30 -> 20",
        "    ? Restart Patroni (decided at apply time)",
        "  dc1-db2: no changes",
    ]
