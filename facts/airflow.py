"""Facts of Airflow: whether the metadata database needs ``airflow db migrate``, and
the components' health as an api-server reports it.

Read through the host's ``plinth-airflow`` wrapper (the units' environment and the
secrets file, as the ``airflow`` user), so the fact sees exactly what the services see.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

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


HEALTH_PATH = "/api/v2/monitor/health"
NO_ANSWER = "__PLINTH_AIRFLOW_NO_ANSWER__"
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


@dataclass(frozen=True)
class AirflowHealthState:
    """What an api-server's health endpoint says, component by component.

    The endpoint answers 200 even when the scheduler is dead: only its JSON fields say
    whether a component is healthy. ``None`` means the component never ran (Airflow
    reports ``null`` for a triggerer or dag-processor that has no job record).
    """

    status: dict[str, str | None]
    heartbeats: dict[str, str | None]

    def problems(self, expected: tuple[str, ...] = HEALTH_COMPONENTS) -> list[str]:
        """One line per expected component that is not ``healthy``."""
        out = []
        for name in expected:
            state = self.status.get(name)
            if state != "healthy":
                beat = self.heartbeats.get(name)
                since = f" (last heartbeat {beat})" if beat else ""
                out.append(f"{name}: {state or 'never seen'}{since}")
        return out


def parse_health(text: str) -> AirflowHealthState:
    """Parse the JSON of ``GET /api/v2/monitor/health``; raise ValueError when it is not."""
    data = json.loads(text)
    if not isinstance(data, dict) or "metadatabase" not in data:
        raise ValueError("not an Airflow health answer")
    status: dict[str, str | None] = {}
    heartbeats: dict[str, str | None] = {}
    for name in HEALTH_COMPONENTS:
        entry = data.get(name) or {}
        if not isinstance(entry, dict):
            raise ValueError(f"{name}: expected an object")
        status[name] = entry.get("status")
        heartbeats[name] = entry.get(f"latest_{name}_heartbeat")
    return AirflowHealthState(status, heartbeats)


class AirflowHealth(FactBase[AirflowHealthState | None]):
    """The local api-server's health (TLS, verified against the platform root); None when
    it does not answer or answers something else."""

    def command(self, fqdn: str, port: int, ca_path: str) -> str:
        # The model's FQDN, not ``hostname -f``: that may be the short name (containers,
        # hosts without a domain), which the api-server's certificate does not carry.
        return (
            f"curl -s -m 10 --cacert {shlex.quote(ca_path)} "
            f"https://{shlex.quote(fqdn)}:{port}{HEALTH_PATH} || echo {NO_ANSWER}"
        )

    @staticmethod
    def default() -> AirflowHealthState | None:
        return None

    def process(self, output: list[str]) -> AirflowHealthState | None:
        text = "\n".join(output)
        if NO_ANSWER in text:
            return None
        try:
            return parse_health(text)
        except ValueError:
            return None


def describe(
    active: bool,
    expected: tuple[str, ...],
    health: dict[str, AirflowHealthState | None],
    units: dict[str, dict[str, bool]],
) -> dict[str, Any]:
    """The DC's Airflow for ``plinth status``.

    + health: {api host: AirflowHealthState or None (no answer)}
    + units: {host: {unit: active}}
    Active site: every unit runs and every api-server reports the expected components
    healthy (JSON fields, not the HTTP status). Standby site: every unit is stopped.
    """
    problems: list[str] = []
    for name, host_units in units.items():
        for unit, running in host_units.items():
            if active and not running:
                problems.append(f"{name}: {unit} is not running")
            if not active and running:
                problems.append(f"{name}: {unit} runs on the standby site")
    if active:
        for name, state in health.items():
            if state is None:
                problems.append(f"{name}: the api-server's health endpoint does not answer")
            else:
                problems += [f"{name}: {p}" for p in state.problems(expected)]
    return {
        "active": active,
        "problems": problems,
        "health": {n: (s.status if s is not None else None) for n, s in health.items()},
        "units": units,
    }


CELERY_MODULE = "airflow.providers.celery.executors.celery_executor_utils"
IMPORT_OK = "__PLINTH_AIRFLOW_IMPORT_OK__"
IMPORT_FAILED = "__PLINTH_AIRFLOW_IMPORT_FAILED__"
NOT_YET = "__PLINTH_AIRFLOW_NOT_CONFIGURED__"


def celery_import_command(python: str, home: str, workdir: str) -> str:
    """Import the Celery executor as the units would (user airflow, their configuration)."""
    q = shlex.quote
    return (
        f"cd {q(workdir)} && runuser -u airflow -- env AIRFLOW_HOME={q(home)} "
        f"AIRFLOW_CONFIG={q(home + '/airflow.cfg')} {q(python)} -c 'import {CELERY_MODULE}'"
    )


class AirflowCeleryImport(FactBase[bool | None]):
    """Whether the installed Airflow can import its Celery executor (a wheelhouse resolved
    without the needed constraints cannot); None before Airflow is installed and configured."""

    def command(self, python: str, home: str, workdir: str) -> str:
        check = celery_import_command(python, home, workdir)
        return (
            f"[ -x {shlex.quote(python)} ] && [ -f {shlex.quote(home + '/airflow.cfg')} ] "
            f"|| {{ echo {NOT_YET}; exit 0; }}; "
            f"if {check} >/dev/null 2>&1; then echo {IMPORT_OK}; else echo {IMPORT_FAILED}; fi"
        )

    @staticmethod
    def default() -> bool | None:
        return None

    def process(self, output: list[str]) -> bool | None:
        lines = {line.strip() for line in output}
        if IMPORT_OK in lines:
            return True
        if IMPORT_FAILED in lines:
            return False
        return None
