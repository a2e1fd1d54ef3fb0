"""A client of Airflow's REST API through nginx, as an operator's tooling calls it.

The platform root verifies nginx, a platform client certificate opens the ``airflow``
virtual host on the edge VIP, and a JWT from Airflow's ``/auth/token`` (the simple auth
manager's ``admin``) authenticates to Airflow itself. Used by the lab tests and
``bench/airflow_dag.py``; standard library only.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plinth.model import Environment
from plinth.rolling import wait_for

HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
FINISHED = ("success", "failed")


class AirflowApiError(RuntimeError):
    """The API answered something other than what the call needs."""


def api_base(env: Environment, datacenter: str) -> str:
    """``https://<edge VIP address>:<airflow virtual host port>`` of one datacenter.

    By address: a controller in the lab does not resolve the platform's names; nginx's
    certificate names the VIP's address too, so the handshake is verified either way.
    """
    vip = next((v for v in env.vips_in(datacenter) if "airflow" in v.services), None)
    vhost = next((v for v in env.components.nginx.virtual_hosts if v.name == "airflow"), None)
    if vip is None or vhost is None:
        raise AirflowApiError(
            f"datacenter {datacenter!r} has no VIP routing 'airflow' or no 'airflow' "
            "virtual host in components.nginx.virtual_hosts"
        )
    return f"https://{vip.address}:{vhost.port}"


@dataclass
class AirflowApi:
    base: str
    ca: Path
    cert: Path | None
    key: Path | None
    timeout: float = 30
    token: str = field(default="", repr=False)
    unanswered_polls: int = 0
    """Polls of the last ``wait_run`` the api-server did not answer."""

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.cert is not None and self.key is not None:
            context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON or text); HTTP errors are answers, not exceptions."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(
                request, context=self._context(), timeout=self.timeout
            ) as answer:
                return answer.status, _decode(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read())

    def login(self, password: str, user: str = "admin") -> None:
        status, answer = self.call("POST", "/auth/token", {"username": user, "password": password})
        if status not in (200, 201) or not isinstance(answer, dict):
            # the answer never echoes the password; keep only its status
            raise AirflowApiError(f"login as {user!r} refused: HTTP {status}")
        self.token = str(answer["access_token"])

    def health(self) -> dict[str, Any] | None:
        status, answer = self.call("GET", "/api/v2/monitor/health")
        return answer if status == 200 and isinstance(answer, dict) else None

    def wait_healthy(self, components: tuple[str, ...], seconds: float) -> dict[str, Any]:
        """The health JSON once every named component's ``status`` field is healthy."""
        last: list[dict[str, Any] | None] = [None]

        def healthy() -> dict[str, Any] | None:
            last[0] = health = self.health()
            ok = health is not None and all(
                (health.get(c) or {}).get("status") == "healthy" for c in components
            )
            return health if ok else None

        health, _ = wait_for(healthy, seconds, interval=3)
        if health is None:
            raise AirflowApiError(f"Airflow not healthy after {seconds:.0f} s: {last[0]}")
        return health

    def open_dag(self, dag_id: str, seconds: float) -> dict[str, Any]:
        """The DAG, unpaused, once the dag-processor has parsed it."""
        statuses: list[int] = []

        def parsed() -> dict[str, Any] | None:
            status, answer = self.call("GET", f"/api/v2/dags/{dag_id}")
            statuses.append(status)
            return answer if status == 200 and isinstance(answer, dict) else None

        dag, _ = wait_for(parsed, seconds, interval=3)
        if dag is None:
            raise AirflowApiError(f"DAG {dag_id} not known after {seconds:.0f} s: {statuses[-1]}")
        status, answer = self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise AirflowApiError(f"unpausing {dag_id}: HTTP {status} {answer}")
        return dag

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run now; its run id."""
        status, run = self.call(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        if status not in (200, 201) or not isinstance(run, dict):
            raise AirflowApiError(f"triggering {dag_id}: HTTP {status} {run}")
        return str(run["dag_run_id"])

    def set_variable(self, key: str, value: str) -> None:
        """Create or overwrite an Airflow Variable."""
        status, answer = self.call("POST", "/api/v2/variables", {"key": key, "value": value})
        if status == 409:  # exists: overwrite
            status, answer = self.call(
                "PATCH", f"/api/v2/variables/{key}", {"key": key, "value": value}
            )
        if status not in (200, 201):
            raise AirflowApiError(f"setting Variable {key}: HTTP {status} {answer}")

    def delete_variable(self, key: str) -> None:
        status, answer = self.call("DELETE", f"/api/v2/variables/{key}")
        if status not in (204, 404):
            raise AirflowApiError(f"deleting Variable {key}: HTTP {status} {answer}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        status, run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if status != 200 or not isinstance(run, dict):
            raise AirflowApiError(f"run {run_id} of {dag_id}: HTTP {status} {run}")
        return str(run["state"])

    def wait_run(self, dag_id: str, run_id: str, seconds: float) -> str:
        """The run's final state (success or failed); raises when it is still going.

        A poll the api-server does not answer (a timeout, a refused connection, a 5xx) is
        counted in ``unanswered_polls`` and polled again: while PostgreSQL fails over, a
        request can wait on the database longer than the client's timeout (seen: 30 s), and
        the run, not one request, is what the caller waits for."""
        states: list[str] = ["never answered"]
        self.unanswered_polls = 0

        def finished() -> str | None:
            try:
                states.append(self.run_state(dag_id, run_id))
            except (AirflowApiError, OSError) as error:
                self.unanswered_polls += 1
                states.append(f"unknown ({type(error).__name__}: {error})")
                return None
            return states[-1] if states[-1] in FINISHED else None

        state, _ = wait_for(finished, seconds, interval=2)
        if state is None:
            raise AirflowApiError(
                f"run {run_id} of {dag_id} still {states[-1]} after {seconds} s "
                f"({self.unanswered_polls} poll(s) unanswered)"
            )
        return state

    def unfinished_runs(self, dag_id: str) -> list[str]:
        """The run ids of ``dag_id`` still queued or running."""
        status, answer = self.call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running&limit=100"
        )
        if status != 200 or not isinstance(answer, dict):
            raise AirflowApiError(f"runs of {dag_id}: HTTP {status} {answer}")
        return [str(run["dag_run_id"]) for run in answer["dag_runs"]]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        status, answer = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        if status != 200 or not isinstance(answer, dict):
            raise AirflowApiError(f"task instances of {run_id}: HTTP {status} {answer}")
        return list(answer["task_instances"])


def _decode(raw: bytes) -> Any:
    text = raw.decode(errors="replace")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


__all__ = ["HEALTH_COMPONENTS", "AirflowApi", "AirflowApiError", "api_base"]
