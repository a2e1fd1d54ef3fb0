"""The sample DAG's logic (dags/feeder_load_logic.py), without Airflow on the controller."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "dags"
sys.path.insert(0, str(DAGS))

import feeder_load_logic as logic  # noqa: E402

HEADER = "feeder_id,measured_at,load_kw\n"


def test_valid_lines_become_utc_measurements() -> None:
    good, rejected = logic.parse_measurements(
        HEADER + "FDR-1,2026-03-29T02:30:00+02:00,1200.5\nSUB-7,2026-03-29T01:00:00Z,-350\n"
    )
    assert rejected == []
    assert good == [
        logic.Measurement("FDR-1", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 1200.5),
        logic.Measurement("SUB-7", datetime(2026, 3, 29, 1, 0, tzinfo=UTC), -350.0),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("feeder 1,2026-01-01T00:00:00+00:00,1", "is not like"),
        ("FDR-1,yesterday,1", "is not ISO 8601"),
        ("FDR-1,2026-01-01T00:00:00,1", "has no UTC offset"),
        ("FDR-1,2026-01-01T00:00:00+00:00,n/a", "is not a number"),
        ("FDR-1,2026-01-01T00:00:00+00:00,nan", "outside"),
        ("FDR-1,2026-01-01T00:00:00+00:00,60000", "outside"),
        ("FDR-1,2026-01-01T00:00:00+00:00", "expected 3 fields"),
    ],
)
def test_bad_lines_are_rejected_with_a_reason(line: str, reason: str) -> None:
    good, rejected = logic.parse_measurements(HEADER + line + "\n")
    assert good == []
    assert len(rejected) == 1 and rejected[0].line == 2
    assert reason in rejected[0].reason


def test_a_repeated_reading_keeps_the_first() -> None:
    good, rejected = logic.parse_measurements(
        HEADER + "FDR-1,2026-01-01T00:00:00+00:00,1\nFDR-1,2026-01-01T01:00:00+01:00,2\n"
    )
    assert [m.load_kw for m in good] == [1.0]
    assert rejected == [logic.Rejected(3, "duplicate feeder and time")]


def test_a_wrong_header_fails_the_whole_file() -> None:
    with pytest.raises(logic.ValidationFailed, match="header"):
        logic.parse_measurements("feeder,time,kw\nFDR-1,2026-01-01T00:00:00Z,1\n")


def test_too_many_rejections_fail_the_file() -> None:
    logic.check_rejections(95, 5)
    with pytest.raises(logic.ValidationFailed, match="suspect"):
        logic.check_rejections(94, 6)
    with pytest.raises(logic.ValidationFailed, match="no valid"):
        logic.check_rejections(0, 0)


def test_hourly_aggregation_per_feeder_and_utc_hour() -> None:
    at = datetime(2026, 1, 1, 6, tzinfo=UTC)
    measurements = [
        logic.Measurement("FDR-2", at.replace(minute=10), 10.0),
        logic.Measurement("FDR-1", at.replace(minute=0), 100.0),
        logic.Measurement("FDR-1", at.replace(minute=30), 200.0),
        logic.Measurement("FDR-1", at.replace(hour=7, minute=5), 50.0),
    ]
    assert logic.hourly_loads(measurements) == [
        logic.HourlyLoad("FDR-1", at, 2, 150.0, 100.0, 200.0),
        logic.HourlyLoad("FDR-1", at.replace(hour=7), 1, 50.0, 50.0, 50.0),
        logic.HourlyLoad("FDR-2", at, 1, 10.0, 10.0, 10.0),
    ]
    rows = logic.upsert_rows(logic.hourly_loads(measurements))
    assert rows[0] == ("FDR-1", "2026-01-01T06:00:00+00:00", 2, 150.0, 100.0, 200.0)
    assert logic.UPSERT_SQL.count("%s") == len(rows[0])


def test_records_round_trip_between_tasks() -> None:
    good, _ = logic.parse_measurements(HEADER + "FDR-1,2026-01-01T00:00:00Z,1.5\n")
    assert logic.from_records(logic.to_records(good)) == good


def test_the_shipped_sample_passes_validation() -> None:
    good, rejected = logic.parse_measurements((DAGS / "data" / "feeder_loads.csv").read_text())
    logic.check_rejections(len(good), len(rejected))
    loads = logic.hourly_loads(good)
    assert {h.feeder_id for h in loads} == {"FDR-101", "FDR-102", "SUB-7"}
    assert len(loads) == 9 and all(h.samples == 12 for h in loads)
    assert len(rejected) == 3


def test_the_dag_file_parses_and_imports_the_logic_only_inside_tasks() -> None:
    # Top-level imports run on every parse by the dag-processor; the logic (and the
    # Postgres provider) are imported where the tasks run.
    tree = ast.parse((DAGS / "feeder_load.py").read_text())
    top = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "feeder_load_logic" not in top
    assert "airflow.sdk" in top
    ignored = (DAGS / ".airflowignore").read_text().splitlines()
    assert "feeder_load_logic.py" in ignored
