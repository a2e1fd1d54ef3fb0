"""Sample grid-operations pipeline: feeder load measurements into hourly loads in PostgreSQL.

ingest (read the CSV) -> validate (reject bad lines; fail on a suspect file) -> aggregate
(per feeder and UTC hour) -> store (upsert into ``grid.feeder_load_hourly``).

The logic lives in ``feeder_load_logic`` (plain Python, unit-tested on the controller);
this file only wires it into tasks. The database is the connection ``grid_db``, which
plinth puts in the units' environment (``AIRFLOW_CONN_GRID_DB``): the DC's PostgreSQL
VIP, ``sslmode=verify-full``, the host's ``airflow`` client certificate as the login.
Every task is idempotent (the store upserts), so a retry on another worker is safe.
Trigger it with ``conf={"path": ".../data/other.csv"}`` to load another file of the
DAGs' ``data`` folder (nothing outside it is read).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Variable, dag, get_current_context, task

SAMPLE = Path(__file__).resolve().parent / "data" / "feeder_loads.csv"
MAX_HOLD_SECONDS = 600


# A drill ends a hold early by setting this Variable to the run's id (a rolling drill
# releases the task once it has seen the worker's warm shutdown begin).
RELEASE_VARIABLE = "feeder_load_hourly_release"


def hold_first_try(run_id: str, seconds: float) -> None:
    """Wait up to ``seconds`` (capped), or until :data:`RELEASE_VARIABLE` names this run."""
    deadline = time.monotonic() + min(max(seconds, 0.0), MAX_HOLD_SECONDS)
    while time.monotonic() < deadline:
        try:
            if Variable.get(RELEASE_VARIABLE, default=None) == run_id:
                return
        except Exception as error:  # the API unreachable a moment: keep holding
            print(f"hold: could not read {RELEASE_VARIABLE}: {error}")
        time.sleep(1)


@dag(
    dag_id="feeder_load_hourly",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # hold_seconds: ingest's first try waits that long, so a failure drill can stop a
    # worker while a task is in flight (0 in normal runs); see hold_first_try.
    params={"path": str(SAMPLE), "hold_seconds": 0},
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    tags=["grid-operations", "sample"],
)
def feeder_load_hourly() -> None:
    @task
    def ingest() -> str:
        context = get_current_context()
        params = context["params"]
        if context["ti"].try_number == 1:  # a drill holds the first try only
            hold_first_try(context["run_id"], float(params.get("hold_seconds") or 0))
        # Only files under the DAGs' data folder: a run's conf must not read host files.
        path = Path(params["path"]).resolve()
        if not path.is_relative_to(SAMPLE.parent):
            raise ValueError(f"{path} is outside {SAMPLE.parent}")
        return path.read_text(encoding="utf-8")

    @task
    def validate(text: str) -> list[dict[str, Any]]:
        import feeder_load_logic as logic

        good, rejected = logic.parse_measurements(text)
        for r in rejected[:20]:
            print(f"line {r.line} rejected: {r.reason}")
        logic.check_rejections(len(good), len(rejected))
        return logic.to_records(good)

    @task
    def aggregate(records: list[dict[str, Any]]) -> list[list[Any]]:
        import feeder_load_logic as logic

        loads = logic.hourly_loads(logic.from_records(records))
        return [list(row) for row in logic.upsert_rows(loads)]

    @task
    def store(rows: list[list[Any]]) -> int:
        import feeder_load_logic as logic
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id="grid_db")
        with hook.get_conn() as conn, conn.cursor() as cursor:
            cursor.execute(logic.CREATE_SQL)
            cursor.executemany(logic.UPSERT_SQL, [tuple(r) for r in rows])
            conn.commit()
        return len(rows)

    store(aggregate(validate(ingest())))


feeder_load_hourly()
