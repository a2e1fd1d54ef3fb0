"""``plinth status`` and ``plinth switchover``: each DC's cells and edge, live.

pyinfra's connection machinery (gevent) is imported only when a command runs, as in
``plinth pki status``: importing it with the CLI would monkey-patch every command.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from plinth.certificates import host_certificates
from plinth.cli.core import OperatorError, operator_errors
from plinth.model import Environment, Host, Role
from plinth.stacks import Stack, resolve

if TYPE_CHECKING:
    from facts.patroni import PatroniClusterState, PatroniMember
    from facts.postgresql import PostgresPosition

KEEPALIVED_STATE_DIR = "/var/lib/keepalived-plinth"


def _fact(state: Any, host_name: str, fact: Any, **kwargs: Any) -> Any:
    from pyinfra.api.facts import get_fact
    from pyinfra.context import ctx_state

    host = state.inventory.get_host(host_name)
    with ctx_state.use(state):
        return get_fact(state, host, fact, kwargs=kwargs)


def _spec(env: Environment, host: Host, service: str) -> Any:
    return next(s for s in host_certificates(env, host) if s.service == service)


def _api(env: Environment, host: Host) -> str:
    return f"https://{host.address}:{env.components.patroni.rest_api_port}"


def collect(stack: Stack) -> dict[str, Any]:
    """etcd, Patroni and VIP state of one stack, read live from its hosts."""
    from facts.etcd import EtcdCluster
    from facts.keepalived import VrrpState
    from facts.patroni import PatroniCluster
    from facts.postgresql import diverged_members
    from operations.etcd import describe
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
            tls = _spec(env, etcd_hosts[0], "etcd")
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
            tls = _spec(env, host, "patroni")
            return _fact(
                state, host.name, PatroniCluster, ca=tls.ca_path, cert=tls.chain_path,
                key=tls.key_path, api=_api(env, host),
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
            vrrp = _fact(
                state, host.name, VrrpState, vips=addresses, state_dir=KEEPALIVED_STATE_DIR
            )
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

    from facts.airflow import AirflowHealth
    from operations.airflow import AIRFLOW_ROLES, COMPONENTS, describe, expected_components

    hosts = [h for h in env.hosts_in(dc) if any(r in h.roles for r in AIRFLOW_ROLES)]
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
            ca = _spec(env, host, "airflow-api").ca_path
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
    from facts.redis import RedisReplication, SentinelState, SentinelView
    from operations.redis import describe, redis_input
    from plinth.context import HostContext

    cell = None
    for host in env.hosts_with(Role.REDIS, dc):
        context = HostContext(env, Path(), host, env.datacenters_by_name[dc])
        spec = redis_input(context, _spec(env, host, "redis"), None)
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


def _render_redis(redis: dict[str, Any]) -> list[str]:
    """The cell's headline and its data nodes (the Sentinels follow in :func:`render`)."""
    problems = "; ".join(redis["problems"]) or "healthy"
    follows = redis.get("follows")
    if follows:
        head = f"replicas of {follows['datacenter']}'s master {follows['master'] or '-'}"
    else:
        head = f"master {redis['master'] or '-'}"
    lines = [f"  redis {redis['master_name']}: {head}: {problems}"]
    for n in redis["nodes"]:
        state = n["role"] or f"DOWN ({n['error']})"
        if n.get("master_host"):
            state += f" of {n['master_host']}"
        link = "" if n["link_up"] is None else f" link {'up' if n['link_up'] else 'DOWN'}"
        priority = n.get("replica_priority")
        extra = f" priority {priority}" if priority not in (None, "100") else ""
        lines.append(f"    {n['address']:<15} {state}{link} offset {n['offset']}{extra}")
    for r in redis.get("remote_replicas") or ():
        lines.append(
            f"    {r['address']:<15} replica in another DC: {r['state']}, lag {r['lag']} s"
        )
    return lines


def _rabbitmq(state: Any, env: Environment, hosts: list[Host]) -> dict[str, Any]:
    """Every RabbitMQ node's own view (quorum-critical is per node), one cluster summary."""
    from facts.rabbitmq import RabbitmqCluster
    from operations.rabbitmq import describe

    nodes = tuple(f"rabbit@{env.fqdn(h)}" for h in hosts)
    return describe({h.name: _fact(state, h.name, RabbitmqCluster) for h in hosts}, nodes)


def _render_rabbitmq(rabbitmq: dict[str, Any]) -> list[str]:
    problems = "; ".join(rabbitmq["problems"]) or "healthy"
    lines = [f"  rabbitmq {rabbitmq['cluster_name'] or '?'}: {problems}"]
    lines.append(f"    {'node':<12} {'state':<8} quorum-critical")
    for name, node in rabbitmq["nodes"].items():
        if node is None:
            lines.append(f"    {name:<12} {'STOPPED':<8} -")
            continue
        critical = {True: "YES", False: "no", None: "?"}[node["quorum_critical"]]
        lines.append(f"    {name:<12} {'running':<8} {critical}  {node['detail'][:80]}")
    return lines


def healthy(data: dict[str, Any]) -> bool:
    etcd = data["etcd"]
    patroni = data["patroni"]
    redis = data.get("redis")
    return (
        (etcd is None or bool(etcd.get("healthy")))
        and (not patroni["problems"] if patroni else not data.get("patroni_expected"))
        and (redis is None or not redis["problems"])
        and all(len(v["holders"]) == 1 for v in data["vips"])
        and all(all(units.values()) for units in data.get("edge", {}).values())
        and not (data.get("rabbitmq") or {}).get("problems")
        and not (data.get("airflow") or {}).get("problems")
    )


def render(data: dict[str, Any]) -> str:
    lines = [f"stack {data['stack']}:"]
    etcd = data["etcd"]
    if etcd is not None:
        state = "healthy" if etcd.get("healthy") else "NOT HEALTHY"
        lines.append(f"  etcd: {state}, leader {etcd.get('leader') or '-'}")
        lines.append(f"    {'member':<12} {'health':<8} {'leader':<7} {'raft index':>10}  error")
        for m in etcd["members"]:
            lines.append(
                f"    {m['name'] or m['id']:<12} {'ok' if m['healthy'] else 'DOWN':<8} "
                f"{'*' if m['leader'] else '':<7} {m['raft_index'] or '-':>10}  {m['error'] or ''}"
            )
    patroni = data["patroni"]
    if patroni is None:
        lines.append("  patroni: no member answers")
    else:
        problems = "; ".join(patroni["problems"]) or "healthy"
        lines.append(f"  patroni {patroni['scope']}: {problems}")
        standby_of = patroni.get("standby_of")
        if standby_of:
            lag = standby_of["lag_bytes"]
            shown = "unknown" if lag is None else f"{lag} B"
            lines.append(f"    standby cluster of {standby_of['datacenter']}: lag {shown}")
        lines.append(
            f"    {'member':<12} {'role':<15} {'state':<10} {'TL':>3} {'lag':>10} "
            f"{'patroni':<8} {'history':<16} {'wal':<13} pending restart"
        )
        for m in patroni["members"]:
            lag = "-" if m["lag_bytes"] is None else f"{m['lag_bytes']} B"
            lines.append(
                f"    {m['name']:<12} {m['role']:<15} {m['state']:<10} {m['timeline'] or '-':>3} "
                f"{lag:>10} {m.get('patroni_version') or '?':<8} {m.get('history') or '?':<16} "
                f"{m.get('wal') or '-':<13} {'yes' if m['pending_restart'] else ''}"
            )
            if m.get("diverged"):
                lines.append(f"      DIVERGED: {m['diverged']}")
    redis = data.get("redis")
    if redis is not None:
        lines += _render_redis(redis)
        for s in redis["sentinels"]:
            quorum = s["quorum"] if s["up"] else f"DOWN ({s['error']})"
            lines.append(f"    sentinel {s['address']:<15} master {s['master'] or '-'}: {quorum}")
    if data.get("rabbitmq"):
        lines += _render_rabbitmq(data["rabbitmq"])
    for vip in data["vips"]:
        holder = ", ".join(vip["holders"]) or "NOBODY"
        states = ", ".join(
            f"{n}={'/'.join(s['instances'].values()) or '?'}{'' if s['running'] else ' (stopped)'}"
            for n, s in vip["nodes"].items()
        )
        lines.append(f"  VIP {vip['name']} {vip['address']}: held by {holder} ({states})")
    for host_name, units in data.get("edge", {}).items():
        shown = " ".join(f"{u}={'active' if up else 'DOWN'}" for u, up in units.items())
        lines.append(f"  edge {host_name}: {shown}")
    airflow = data.get("airflow")
    if airflow:
        site = "active" if airflow["active"] else "standby"
        lines.append(f"  airflow ({site}): {'; '.join(airflow['problems']) or 'healthy'}")
        for host_name, units in airflow["units"].items():
            shown = " ".join(f"{u}={'active' if up else 'stopped'}" for u, up in units.items())
            lines.append(f"    {host_name}: {shown}")
    return "\n".join(lines)


def collect_all(stacks: list[Stack]) -> list[dict[str, Any]]:
    """What `plinth status` shows for ``stacks`` (the DCs of one environment)."""
    results = [collect(s) for s in stacks]
    add_standby_lag(results, stacks[0].environment)
    return results


class Unhealthy(Exception):
    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__("not healthy")
        self.results = results


def wait_healthy(target: str, seconds: float, interval: float = 2.0) -> list[dict[str, Any]]:
    """Poll what `plinth status TARGET` shows until every stack is healthy; the results.
    Raises Unhealthy (with the last results) after ``seconds``.

    A host that does not answer SSH yet is "not healthy yet" while the wait lasts (right
    after a restart sshd is not up); when the time is up it is the error, named loudly."""
    from plinth.plan import PlanError

    stacks = resolve(target)
    deadline = time.monotonic() + seconds
    while True:
        try:
            results = collect_all(stacks)
        except PlanError:
            if time.monotonic() > deadline:
                raise
        else:
            if all(healthy(r) for r in results):
                return results
            if time.monotonic() > deadline:
                raise Unhealthy(results)
        time.sleep(interval)


@click.command()
@click.argument("stack")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.IntRange(0, 3600),
    default=0,
    help="Poll until everything is healthy, up to this many seconds (after a restart).",
)
@operator_errors
def status(stack: str, as_json: bool, wait_seconds: int) -> None:
    """etcd, Patroni, Redis, RabbitMQ, edge and VIP state of STACK (or every DC of an
    environment). Exit 1 unless everything is healthy."""
    if wait_seconds:
        try:
            results = wait_healthy(stack, wait_seconds)
        except Unhealthy as unhealthy:
            results = unhealthy.results
    else:
        results = collect_all(resolve(stack))
    if as_json:
        click.echo(json.dumps({"stacks": results}, indent=2))
    else:
        click.echo("\n".join(render(r) for r in results))
    if not all(healthy(r) for r in results):
        sys.exit(1)


@click.command()
@click.argument("stack")
@click.option("--candidate", default=None, help="Member to promote (default: Patroni picks).")
@operator_errors
def switchover(stack: str, candidate: str | None) -> None:
    """Planned switchover of STACK's Patroni cluster (refused unless the cluster is healthy)."""
    stacks = resolve(stack)
    if len(stacks) != 1:
        raise OperatorError(
            f"{stack}: name one datacenter's stack ({', '.join(s.name for s in stacks)})"
        )
    current = stacks[0]
    env = current.environment
    data = collect(current)
    patroni = data["patroni"]
    if patroni is None or patroni["leader"] is None:
        raise OperatorError(f"stack {current.name}: no Patroni leader answers")
    if patroni["problems"]:
        raise OperatorError(
            f"stack {current.name}: switchover refused: {'; '.join(patroni['problems'])}"
        )
    leader = patroni["leader"]
    names = [m["name"] for m in patroni["members"]]
    if candidate is not None and (candidate not in names or candidate == leader):
        raise OperatorError(f"--candidate {candidate}: not a replica of {patroni['scope']}")
    host = next(h for h in env.hosts if h.name == leader)
    tls = _spec(env, host, "patroni")
    body = {"leader": leader, **({"candidate": candidate} if candidate else {})}
    q = shlex.quote
    command = (
        f"curl -s -m 60 -w '\\n%{{http_code}}' --cacert {q(tls.ca_path)} --cert "
        f"{q(tls.chain_path)} --key {q(tls.key_path)} -XPOST -H 'Content-Type: application/json' "
        f"-d {q(json.dumps(body))} {q(_api(env, host) + '/switchover')}"
    )
    from pyinfra.api import StringCommand

    from plinth.remote import connected

    with connected(current) as state:
        target = state.inventory.get_host(leader)
        ok, output = target.run_shell_command(StringCommand(command))
    lines = output.stdout_lines
    code = lines[-1] if lines else "?"
    message = " ".join(lines[:-1])
    if not ok or code != "200":
        raise OperatorError(f"stack {current.name}: switchover refused ({code}): {message}")
    click.echo(f"stack {current.name}: {message}")
    after = collect(current)["patroni"]
    click.echo(f"leader now: {after['leader'] if after else '?'}")
