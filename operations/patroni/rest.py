"""Patroni's REST API as the operations use it, over mutual TLS: facts while preparing,
and, while executing, live readings, the gate before each change, and ``POST``.

Prepare-time facts decide whether an operation has anything to do; the execute-time
helpers run their own commands from ``FunctionCommand`` callbacks, because a gate must
look at the cluster right before it touches a member (:mod:`plinth.rolling`).
"""

from __future__ import annotations

from typing import Any

from pyinfra import host

from facts.patroni import (
    PatroniCluster,
    PatroniClusterState,
    PatroniDynamicConfig,
    parse_patroni_cluster,
)
from operations.patroni.decide import RollSpec, refusal
from operations.patroni.settings import PatroniInput, config_difference, dynamic_settings
from plinth.rolling import refuse, run, wait_for
from plinth.topology.patroni import unsafe_call

# ---- prepare time: facts ----


def cluster_fact(spec: PatroniInput) -> PatroniClusterState | None:
    """The cluster as this member's REST API reports it now (mutual TLS)."""
    state: PatroniClusterState | None = host.get_fact(
        PatroniCluster,
        ca=spec.tls.ca_path,
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        api=spec.api,
    )
    return state


def pending_config_patch(spec: PatroniInput) -> dict[str, Any]:
    """What ``PATCH /config`` must send for the live dynamic config to match the model."""
    current = host.get_fact(
        PatroniDynamicConfig,
        ca=spec.tls.ca_path,
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        api=spec.api,
    )
    return config_difference(current or {}, dynamic_settings(spec))


# ---- execute time: live readings, the gate, POST ----


def read_cluster(host: Any, spec: PatroniInput) -> PatroniClusterState | None:
    """The cluster through this member's REST API, read now; None if it did not answer."""
    ok, out, _ = run(host, spec.cluster_command())
    return parse_patroni_cluster(out) if ok else None


def gate(host: Any, spec: PatroniInput, what: str) -> PatroniClusterState | None:
    """The live cluster if it is fit for ``what`` (:func:`.decide.refusal`: every member
    present and running or streaming, lag within bounds); otherwise log why, return None."""
    cluster = read_cluster(host, spec)
    refused = refusal(cluster, RollSpec.of(spec), what)
    if refused is not None:
        refuse(host, refused)
        return None
    return cluster


def member_api(spec: PatroniInput, member: str, cluster: PatroniClusterState) -> str:
    """Member ``member``'s REST API at the address ``cluster`` reports for it (its name
    when the cluster does not list it)."""
    found = cluster.member(member)
    address = found.host if found else member
    return f"https://{address}:{spec.settings.rest_api_port}"


def post(host: Any, spec: PatroniInput, api: str, path: str, body: dict[str, Any]) -> bool:
    """``POST`` ``body`` as JSON to ``api + path`` from ``host``, with the REST API
    password from the member's curlrc (:func:`unsafe_call`); True when Patroni accepted it
    (2xx: ``curl -f``)."""
    ok, _, _ = run(host, post_command(spec, api, path, body), timeout=90)
    return ok


def post_command(spec: PatroniInput, api: str, path: str, body: dict[str, Any]) -> str:
    """The command :func:`post` runs on the executing member."""
    return unsafe_call(spec.tls, "POST", api + path, body, "-f", timeout=60)


def wait_healthy(host: Any, spec: PatroniInput, seconds: float = 120) -> PatroniClusterState | None:
    """The cluster once it is fit for the next step again (the gate's rule), or None
    after ``seconds``."""

    def probe() -> PatroniClusterState | None:
        cluster = read_cluster(host, spec)
        if cluster is None or cluster.problems(spec.members, spec.settings.maximum_lag_on_failover):
            return None
        return cluster

    return wait_for(probe, seconds, waiting_for="the PostgreSQL cluster to be healthy")[0]
