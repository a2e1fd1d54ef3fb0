"""Each DC's live state as ``plinth status`` shows it, read from its hosts with the facts
and shaped by the ``describe`` of each component's facts.

pyinfra's connection machinery (gevent) and the facts are imported only when a stack is
read, as in ``plinth pki status``: importing them with the CLI would monkey-patch every
command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from plinth.certificates import CertificateSpec, host_certificates
from plinth.model import Environment, Host, Role
from plinth.stacks import Stack, resolve

if TYPE_CHECKING:
    from facts.patroni import PatroniClusterState, PatroniMember
    from facts.postgresql import PostgresPosition


def _fact(state: Any, host_name: str, fact: Any, **kwargs: Any) -> Any:
    from pyinfra.api.facts import get_fact
    from pyinfra.context import ctx_state

    host = state.inventory.get_host(host_name)
    with ctx_state.use(state):
        return get_fact(state, host, fact, kwargs=kwargs)


def host_certificate(env: Environment, host: Host, service: str) -> CertificateSpec:
    """The certificate ``host`` holds for ``service``: the client identity status presents."""
    return next(s for s in host_certificates(env, host) if s.service == service)


def patroni_api(env: Environment, host: Host) -> str:
    """Base URL of ``host``'s Patroni REST API."""
    return f"https://{host.address}:{env.components.patroni.rest_api_port}"


def collect(stack: Stack) -> dict[str, Any]:
    """etcd, Patroni and VIP state of one stack, read live from its hosts."""
    from facts.etcd import EtcdCluster, describe
    from facts.keepalived import STATE_DIR, VrrpState
    from facts.patroni import PatroniCluster
    from facts.postgresql import diverged_members
    from plinth.remote import connected

    env, dc = stack.environment, stack.datacenter
    etcd_hosts = env.hosts_with(Role.ETCD, dc)
    pg_hosts = env.hosts_with(Role.POSTGRESQL, dc)
    ka_hosts = env.hosts_with(Role.KEEPALIVED, dc)
    vips = env.vips_in(dc)
    out: dict[str, Any] = {
        "stack": stack.name, "etcd": None, "patroni": None, "vips": [], "redis": None,
        # a stack with PostgreSQL hosts of which no Patroni answers is not healthy
        "patroni_expected": bool(pg_hosts),
    }  # fmt: skip
    rabbitmq_hosts = env.hosts_with(Role.RABBITMQ, dc)
    with connected(stack) as state:
        if rabbitmq_hosts:
            out["rabbitmq"] = _rabbitmq(state, env, rabbitmq_hosts)
        if etcd_hosts:
            tls = host_certificate(env, etcd_hosts[0], "etcd")
            port = env.components.etcd.client_port
            endpoints = tuple(f"https://{h.address}:{port}" for h in etcd_hosts)
            etcd = None
            for host in etcd_hosts:  # the first member that answers
                etcd = _fact(
                    state, host.name, EtcdCluster, cacert=tls.ca_path, cert=tls.chain_path,
                    key=tls.key_path, endpoints=endpoints,
                )  # fmt: skip
                if etcd is not None and etcd.members:
                    break
            out["etcd"] = describe(etcd)

        def read_patroni(host: Host) -> Any:
            tls = host_certificate(env, host, "patroni")
            return _fact(
                state, host.name, PatroniCluster, ca=tls.ca_path, cert=tls.chain_path,
                key=tls.key_path, api=patroni_api(env, host),
            )  # fmt: skip

        # Every member, not just the first that answers: each one's own view of the
        # leader, its Patroni release and its WAL lineage (a fork shows only there).
        views = {host.name: read_patroni(host) for host in pg_hosts}
        answering = [(h, views[h.name]) for h in pg_hosts if views[h.name] is not None]
        if answering:
            host, cluster = answering[0]
            leader = cluster.leader
            leader_view = views.get(leader.name) if leader is not None else None
            port = env.components.patroni.postgresql_port
            lineage = _lineage(state, [h.name for h in pg_hosts], leader, port)
            diverged = diverged_members(lineage, leader.name if leader else None)
            problems = cluster.problems(tuple(h.name for h in pg_hosts))
            seen = sorted({v.leader.name if v.leader else "none" for _, v in answering})
            if len(seen) > 1:
                problems.append(f"members disagree on the leader: {', '.join(seen)}")
            problems += [f"member {name} diverged: {why}" for name, why in diverged.items()]
            out["patroni"] = {
                "scope": cluster.scope,
                "read_from": host.name,
                "leader": leader.name if leader else None,
                "standby": leader is not None and leader.role == "standby_leader",
                "leader_wal": leader_view.local_wal if leader_view else None,
                "paused": cluster.paused,
                "problems": problems,
                "members": [
                    _member(m, views.get(m.name), lineage.get(m.name), diverged.get(m.name))
                    for m in cluster.members
                ],
            }
        out["redis"] = _redis(state, env, dc)
        addresses = tuple(str(v.address) for v in vips)
        holders: dict[str, list[str]] = {a: [] for a in addresses}
        nodes = {}
        for host in ka_hosts:
            vrrp = _fact(state, host.name, VrrpState, vips=addresses, state_dir=STATE_DIR)
            nodes[host.name] = {"running": vrrp.running, "instances": vrrp.instances}
            for address in vrrp.held:
                holders[address].append(host.name)
        for vip in vips:
            out["vips"].append(
                {
                    "name": vip.name,
                    "fqdn": env.vip_fqdn(vip),
                    "address": str(vip.address),
                    "holders": holders[str(vip.address)],
                    # each node's state in this VIP's VRRP instance only (keepalived names
                    # instances <vip>_<dc>)
                    "nodes": {
                        name: {
                            "running": node["running"],
                            "instances": {
                                k: v
                                for k, v in node["instances"].items()
                                if k == f"{vip.name}_{dc}"
                            },
                        }
                        for name, node in nodes.items()
                    },
                }
            )
        out["edge"] = _edge_services(state, env, dc)
        if env.components.airflow.services:
            out["airflow"] = _airflow(state, env, dc)
    return out


def _lineage(
    state: Any, names: list[str], leader: Any, port: int
) -> dict[str, PostgresPosition | None]:
    """Each member's timeline, history and WAL position. The leader is read last: a
    replica read after it could rightly have replayed past that reading."""
    from facts.postgresql import PostgresTimeline

    first = leader.name if leader is not None else None
    order = [n for n in names if n != first] + ([first] if first in names else [])
    return {name: _fact(state, name, PostgresTimeline, port=port) for name in order}


def _member(
    m: PatroniMember,
    own: PatroniClusterState | None,
    position: PostgresPosition | None,
    diverged: str | None,
) -> dict[str, Any]:
    """One member's status entry: /cluster's view, its own /patroni and its lineage."""
    from facts.postgresql import format_lsn

    return {
        "name": m.name,
        "host": m.host,
        "role": m.role,
        "state": m.state,
        "timeline": m.timeline,
        "lag_bytes": m.lag,
        "pending_restart": m.pending_restart,
        "patroni_version": own.local_version if own else None,
        "history": position.history_checksum if position else None,
        "wal": format_lsn(position.lsn) if position and position.lsn is not None else None,
        "diverged": diverged,
    }


def _airflow(state: Any, env: Environment, dc: str) -> dict[str, Any] | None:
    """The DC's Airflow: units per host, each api-server's health JSON (services on only)."""
    from pyinfra.facts.systemd import SystemdStatus

    from facts.airflow import AirflowHealth, describe
    from plinth.topology.airflow import COMPONENTS, expected_components, has_airflow

    hosts = [h for h in env.hosts_in(dc) if has_airflow(h.roles)]
    if not hosts:
        return None
    units: dict[str, dict[str, bool]] = {}
    health: dict[str, Any] = {}
    port = env.components.airflow.api_port
    for host in hosts:
        active = _fact(state, host.name, SystemdStatus) or {}
        units[host.name] = {
            unit: bool(active.get(f"{unit}.service"))
            for role, (unit, _) in COMPONENTS.items()
            if role in host.roles
        }
        if Role.AIRFLOW_API in host.roles:
            ca = host_certificate(env, host, "airflow-api").ca_path
            health[host.name] = _fact(
                state, host.name, AirflowHealth, fqdn=env.fqdn(host), port=port, ca_path=ca
            )
    expected = expected_components([h.roles for h in hosts])
    return describe(dc == env.active_site, expected, health, units)


EDGE_UNITS = {Role.SQUID: "squid", Role.NGINX: "nginx", Role.REGISTRY: "docker-registry"}


def _edge_services(state: Any, env: Environment, dc: str) -> dict[str, dict[str, bool]]:
    """{host: {unit: active}} for the edge daemons (squid, nginx, registry) of the DC."""
    from pyinfra.facts.systemd import SystemdStatus

    edge: dict[str, dict[str, bool]] = {}
    for host in env.hosts_in(dc):
        units = [unit for role, unit in EDGE_UNITS.items() if role in host.roles]
        if not units:
            continue
        active = _fact(state, host.name, SystemdStatus) or {}
        edge[host.name] = {unit: bool(active.get(f"{unit}.service")) for unit in units}
    return edge


def add_standby_lag(results: list[dict[str, Any]], env: Environment) -> None:
    """Give each standby site's Patroni entry its lag behind the active site's primary
    (bytes of WAL: the primary's position minus what the standby leader replayed; read
    a moment apart, so a busy primary shows a little more than the true lag)."""
    active = next((r for r in results if r["stack"] == f"{env.name}-{env.active_site}"), None)
    for result in results:
        patroni = result["patroni"]
        if not patroni or not patroni["standby"]:
            continue
        if active is None:
            active = collect(next(s for s in resolve(env.name) if s.datacenter == env.active_site))
        source = active["patroni"] or {}
        primary_wal, replayed = source.get("leader_wal"), patroni["leader_wal"]
        patroni["standby_of"] = {
            "datacenter": env.active_site,
            "lag_bytes": None
            if primary_wal is None or replayed is None
            else max(0, primary_wal - replayed),
        }


def _redis(state: Any, env: Environment, dc: str) -> dict[str, Any] | None:
    """The DC's Redis cell as the first Redis host that answers sees it."""
    from facts.redis import RedisReplication, SentinelState, SentinelView, describe
    from plinth.context import HostContext
    from plinth.topology.redis import redis_input

    cell = None
    for host in env.hosts_with(Role.REDIS, dc):
        context = HostContext(env, Path(), host, env.datacenters_by_name[dc])
        spec = redis_input(context, host_certificate(env, host, "redis"), None)
        nodes = _fact(
            state, host.name, RedisReplication, tls=spec.cli("default"),
            addresses=spec.redis_nodes, port=spec.settings.port,
        )  # fmt: skip
        view = (
            _fact(
                state, host.name, SentinelState, tls=spec.cli("sentinel"),
                addresses=spec.cell_sentinels, port=spec.settings.sentinel_port,
                master=spec.master_name,
            )
            if spec.cell_sentinels
            else SentinelView(())
        )  # fmt: skip
        cell = describe(spec.master_name, nodes, view, spec.upstream) | {"read_from": host.name}
        if nodes is not None and any(n.up for n in nodes.nodes):
            break
    return cell


def _rabbitmq(state: Any, env: Environment, hosts: list[Host]) -> dict[str, Any]:
    """Every RabbitMQ node's own view (quorum-critical is per node), one cluster summary."""
    from facts.rabbitmq import RabbitmqCluster, describe

    nodes = tuple(f"rabbit@{env.fqdn(h)}" for h in hosts)
    return describe({h.name: _fact(state, h.name, RabbitmqCluster) for h in hosts}, nodes)


def collect_all(stacks: list[Stack]) -> list[dict[str, Any]]:
    """What `plinth status` shows for ``stacks`` (the DCs of one environment)."""
    results = [collect(s) for s in stacks]
    add_standby_lag(results, stacks[0].environment)
    return results
