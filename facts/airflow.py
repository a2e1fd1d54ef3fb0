"""Facts of Airflow: whether the metadata database needs ``airflow db migrate``.

Read through the host's ``plinth-airflow`` wrapper (the units' environment and the
secrets file, as the ``airflow`` user), so the fact sees exactly what the services see.
"""

from __future__ import annotations

from pyinfra.api import FactBase

CURRENT = "__PLINTH_AIRFLOW_MIGRATIONS_CURRENT__"
PENDING = "__PLINTH_AIRFLOW_MIGRATIONS_PENDING__"


class AirflowMigrations(FactBase[bool | None]):
    """True when the database schema matches the installed Airflow, False when migrations
    are pending (or the database cannot be read: the operation then tries, and fails with
    Airflow's own message), None when Airflow is not configured on this host yet."""

    def command(self, wrapper: str) -> str:
        return (
            f"[ -x {wrapper} ] || {{ echo {PENDING}; exit 0; }}; "
            f"if {wrapper} db check-migrations --migration-wait-timeout 0 >/dev/null 2>&1; "
            f"then echo {CURRENT}; else echo {PENDING}; fi"
        )

    @staticmethod
    def default() -> bool | None:
        return None

    def process(self, output: list[str]) -> bool | None:
        lines = {line.strip() for line in output}
        if CURRENT in lines:
            return True
        if PENDING in lines:
            return False
        return None
