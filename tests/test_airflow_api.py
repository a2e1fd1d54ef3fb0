"""The Airflow REST client's wait for a run: unanswered polls are retried, not fatal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from plinth.airflow_api import AirflowApi, AirflowApiError


class ScriptedApi(AirflowApi):
    """The client with its HTTP call replaced by a script of answers (errors raised)."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__(base="https://192.0.2.1:443", ca=Path("/ca"), cert=None, key=None)
        self.answers = answers

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)


def test_a_run_polled_through_a_database_failover_is_waited_for() -> None:
    client = ScriptedApi(
        [
            (200, {"state": "running"}),
            TimeoutError("The read operation timed out"),
            (503, {"detail": "database unavailable"}),
            ConnectionRefusedError(111, "Connection refused"),
            (200, {"state": "success"}),
        ]
    )
    assert client.wait_run("dag", "run-1", 60) == "success"
    assert client.unanswered_polls == 3


def test_a_run_never_answered_fails_naming_the_last_error_and_the_count() -> None:
    client = ScriptedApi([TimeoutError("The read operation timed out")])
    with pytest.raises(AirflowApiError, match=r"TimeoutError.*poll\(s\) unanswered"):
        client.wait_run("dag", "run-1", 0.05)


def test_a_failed_run_is_returned_as_failed() -> None:
    client = ScriptedApi([(200, {"state": "queued"}), (200, {"state": "failed"})])
    assert client.wait_run("dag", "run-1", 60) == "failed"
    assert client.unanswered_polls == 0
