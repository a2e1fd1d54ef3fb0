"""Feeder load measurements: parse, validate and aggregate (pure Python, no scheduler).

The sample pipeline ``feeder_load.py`` calls these functions from its tasks; keeping them
here lets the controller's unit tests check them without installing the scheduler, and
keeps this module out of pipeline discovery (the folder's ignore file).

Input: CSV with a header ``feeder_id,measured_at,load_kw``; ``measured_at`` is ISO 8601
with a UTC offset (a naive time is ambiguous across a DST change and is rejected);
``load_kw`` may be negative (reverse flow from distributed generation) within the limit.
Output: one row per feeder and UTC hour: samples, mean, min and max load.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

FEEDER_ID = re.compile(r"^[A-Z]{2,4}-\d{1,4}$")
LOAD_LIMIT_KW = 50_000.0
"""Beyond this magnitude a reading is a meter fault, not a load (a 20 kV feeder carries
a few MW)."""
COLUMNS = ("feeder_id", "measured_at", "load_kw")
TABLE = "grid.feeder_load_hourly"


@dataclass(frozen=True)
class Measurement:
    feeder_id: str
    measured_at: datetime
    """Aware, in UTC."""
    load_kw: float


@dataclass(frozen=True)
class Rejected:
    line: int
    """Line number in the file (the header is line 1)."""
    reason: str


@dataclass(frozen=True)
class HourlyLoad:
    feeder_id: str
    hour: datetime
    """Start of the UTC hour."""
    samples: int
    mean_kw: float
    min_kw: float
    max_kw: float


class ValidationFailed(ValueError):
    """Too many rejected lines: the file is suspect as a whole."""


def parse_measurements(text: str) -> tuple[list[Measurement], list[Rejected]]:
    """Every line of the CSV, either as a measurement or as a rejection with its reason.

    A repeated (feeder, time) keeps the first reading and rejects the others.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != COLUMNS:
        raise ValidationFailed(f"header must be {','.join(COLUMNS)}, got {header!r}")
    good: list[Measurement] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, datetime]] = set()
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        result = _measurement(row)
        if isinstance(result, str):
            rejected.append(Rejected(number, result))
            continue
        key = (result.feeder_id, result.measured_at)
        if key in seen:
            rejected.append(Rejected(number, "duplicate feeder and time"))
            continue
        seen.add(key)
        good.append(result)
    return good, rejected


def _measurement(row: list[str]) -> Measurement | str:
    if len(row) != len(COLUMNS):
        return f"expected {len(COLUMNS)} fields, got {len(row)}"
    feeder, when, load = (cell.strip() for cell in row)
    if not FEEDER_ID.match(feeder):
        return f"feeder id {feeder!r} is not like 'FDR-12'"
    try:
        measured = datetime.fromisoformat(when)
    except ValueError:
        return f"time {when!r} is not ISO 8601"
    if measured.tzinfo is None:
        return f"time {when!r} has no UTC offset"
    try:
        value = float(load)
    except ValueError:
        return f"load {load!r} is not a number"
    if not math.isfinite(value) or abs(value) > LOAD_LIMIT_KW:
        return f"load {load!r} is outside +/-{LOAD_LIMIT_KW:.0f} kW"
    return Measurement(feeder, measured.astimezone(UTC), value)


def check_rejections(accepted: int, rejected: int, max_ratio: float = 0.05) -> None:
    """Raise when more than ``max_ratio`` of the lines were rejected (or none is left)."""
    total = accepted + rejected
    if accepted == 0:
        raise ValidationFailed(f"no valid measurement in {total} line(s)")
    if rejected / total > max_ratio:
        raise ValidationFailed(
            f"{rejected} of {total} lines rejected, more than {max_ratio:.0%}: file is suspect"
        )


def hourly_loads(measurements: list[Measurement]) -> list[HourlyLoad]:
    """Per feeder and UTC hour, sorted by feeder then hour."""
    groups: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    for m in measurements:
        hour = m.measured_at.replace(minute=0, second=0, microsecond=0)
        groups[(m.feeder_id, hour)].append(m.load_kw)
    return [
        HourlyLoad(
            feeder_id=feeder,
            hour=hour,
            samples=len(values),
            mean_kw=round(sum(values) / len(values), 3),
            min_kw=min(values),
            max_kw=max(values),
        )
        for (feeder, hour), values in sorted(groups.items())
    ]


CREATE_SQL = f"""
CREATE SCHEMA IF NOT EXISTS grid;
CREATE TABLE IF NOT EXISTS {TABLE} (
    feeder_id text NOT NULL,
    hour timestamptz NOT NULL,
    samples integer NOT NULL,
    mean_kw double precision NOT NULL,
    min_kw double precision NOT NULL,
    max_kw double precision NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feeder_id, hour)
);
"""

# Re-running a day replaces its hours: the task can be retried (or re-run) safely.
UPSERT_SQL = f"""
INSERT INTO {TABLE} (feeder_id, hour, samples, mean_kw, min_kw, max_kw)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (feeder_id, hour) DO UPDATE SET
    samples = EXCLUDED.samples, mean_kw = EXCLUDED.mean_kw,
    min_kw = EXCLUDED.min_kw, max_kw = EXCLUDED.max_kw, loaded_at = now()
"""


def upsert_rows(loads: list[HourlyLoad]) -> list[tuple[str, str, int, float, float, float]]:
    """Parameters of :data:`UPSERT_SQL`, one tuple per hour (times as ISO text)."""
    return [
        (h.feeder_id, h.hour.isoformat(), h.samples, h.mean_kw, h.min_kw, h.max_kw) for h in loads
    ]


def to_records(measurements: list[Measurement]) -> list[dict[str, object]]:
    """JSON-friendly form, for passing between tasks."""
    return [
        {"feeder_id": m.feeder_id, "measured_at": m.measured_at.isoformat(), "load_kw": m.load_kw}
        for m in measurements
    ]


def from_records(records: list[dict[str, object]]) -> list[Measurement]:
    return [
        Measurement(
            str(r["feeder_id"]),
            datetime.fromisoformat(str(r["measured_at"])),
            float(str(r["load_kw"])),
        )
        for r in records
    ]
