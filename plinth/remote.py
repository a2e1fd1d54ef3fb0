"""Read facts from a stack's hosts in-process, through pyinfra's API.

Used by read-only commands (``pki status``, and cluster status as components
land). Every host must connect: an unreachable host is an error naming it,
never a silently shorter table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import get_facts
from pyinfra.context import ctx_state
from pyinfra_cli.inventory import make_inventory  # type: ignore[import-untyped]

from plinth.plan import PlanError, check_reachable
from plinth.stacks import Stack, project_root


@contextmanager
def connected(stack: Stack) -> Iterator[State]:
    """A pyinfra State with every host of ``stack`` connected."""
    check_reachable(stack)
    state = State()
    with ctx_state.use(state):
        inventory = make_inventory(str(stack.inventory_file), cwd=str(project_root()))
    state.init(inventory, Config(FAIL_PERCENT=0, CONNECT_TIMEOUT=10))  # type: ignore[no-untyped-call]
    try:
        connect_all(state)
    except PyinfraError as error:
        raise PlanError(f"stack {stack.name}: cannot connect: {error}") from None
    missing = [h.name for h in inventory if h not in state.activated_hosts]
    if missing:
        raise PlanError(f"stack {stack.name}: cannot connect to {', '.join(missing)}")
    try:
        yield state
    finally:
        disconnect_all(state)


def fact_by_host(state: State, fact: Any, **kwargs: Any) -> dict[str, Any]:
    """``{host name: fact value}`` for every connected host."""
    with ctx_state.use(state):
        results = get_facts(state, fact, kwargs=kwargs)  # type: ignore[no-untyped-call]
    return {host.name: value for host, value in results.items()}


@contextmanager
def connected_answering(stack: Stack, connect_timeout: int = 10) -> Iterator[State]:
    """A pyinfra State of ``stack`` with every host that answers connected, for the
    commands that must see a site with silent hosts (the DC commands): a host that does
    not connect is in ``state.failed_hosts``, never dropped without a trace; callers
    record it as not answering. No host answering at all is a State with none active."""
    state = State()
    with ctx_state.use(state):
        inventory = make_inventory(str(stack.inventory_file), cwd=str(project_root()))
    # No FAIL_PERCENT: a silent host is an observation here, not a reason to stop.
    state.init(inventory, Config(FAIL_PERCENT=None, CONNECT_TIMEOUT=connect_timeout))  # type: ignore[no-untyped-call]
    with suppress(PyinfraError):  # "No hosts remaining!": every host is in failed_hosts
        connect_all(state)
    try:
        yield state
    finally:
        disconnect_all(state)
