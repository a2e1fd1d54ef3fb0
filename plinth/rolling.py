"""Helpers for live health gates: commands run inside operation callbacks at execute time.

pyinfra reads facts while preparing; a gate must look at the cluster *right before* it
touches a node, so gates run their own commands from ``FunctionCommand`` callbacks and
parse the output with the same parsers as the facts. A gate that refuses logs one clear
line (which ``plinth up`` shows) and returns False: the host stops, nothing changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from pyinfra import logger
from pyinfra.api import StringCommand
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS

from plinth import progress

T = TypeVar("T")


class GateRefused(Exception):
    """A live health gate said no; the message says why."""


def connector_arguments(host: Any) -> dict[str, Any]:
    """The operation's connector arguments (``_sudo``...) for commands run from a callback."""
    return {
        key: value
        for key, value in (host.current_op_global_arguments or {}).items()
        if key in CONNECTOR_ARGUMENT_KEYS
    }


def run(host: Any, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
    """Run ``command`` on ``host`` now: (succeeded, stdout lines, stderr lines)."""
    arguments = connector_arguments(host)
    arguments.setdefault("_timeout", timeout)
    ok, output = host.run_shell_command(StringCommand(command), print_output=False, **arguments)
    return bool(ok), list(output.stdout_lines), list(output.stderr_lines)


def refuse(host: Any, message: str) -> bool:
    """Log a refused gate on ``host`` and return False (the operation fails there)."""
    host.log_styled(f"error: {message}", fg="red", log_func=logger.error)
    return False


def note(host: Any, message: str) -> None:
    host.log(message, logger.info)
    # fakes in the roll tests carry no name; real pyinfra hosts always do
    progress.note(getattr(host, "name", "?"), message)


def wait_for(
    probe: Callable[[], T | None],
    seconds: float,
    interval: float = 1.0,
    waiting_for: str | None = None,
) -> tuple[T | None, float]:
    """Call ``probe`` until it returns something truthy or ``seconds`` pass.

    ``waiting_for`` says what a wait that does not end at once is waiting for, on the
    operator's progress view (a roll paused for a minute must not look hung).
    Returns (last value, seconds waited).
    """
    started = time.monotonic()
    value = probe()
    if not value and waiting_for:
        progress.note("roll", f"waiting up to {seconds:.0f} s: {waiting_for}")
    while not value and time.monotonic() - started < seconds:
        time.sleep(interval)
        value = probe()
    return value, time.monotonic() - started


def so_far(changed: tuple[str, ...]) -> str:
    """The end of a roll's refusal: what this run already did, or that it changed nothing
    (a refusal mid-roll must not claim nothing was changed)."""
    if not changed:
        return "nothing was changed"
    return f"this run already did: {', '.join(changed)}; the rest is left for the next run"
