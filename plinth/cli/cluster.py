"""``plinth status`` and ``plinth switchover``: the PostgreSQL cell of each DC, live.

pyinfra's connection machinery (gevent) is imported only when a command runs, as in
``plinth pki status``: importing it with the CLI would monkey-patch every command.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import click

from plinth.certificates import host_certificates
from plinth.cli.core import OperatorError, operator_errors
from plinth.model import Environment, Host, Role
from plinth.stacks import Stack, resolve

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
    from operations.etcd import describe
    from plinth.remote import connected

    env, dc = stack.environment, stack.datacenter
    etcd_hosts = env.hosts_with(Role.ETCD, dc)
    pg_hosts = env.hosts_with(Role.POSTGRESQL, dc)
    ka_hosts = env.hosts_with(Role.KEEPALIVED, dc)
    vips = [v for v in env.vips_in(dc) if "postgresql" in v.services]
    out: dict[str, Any] = {"stack": stack.name, "etcd": None, "patroni": None, "vips": []}
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
        for host in pg_hosts:
            tls = _spec(env, host, "patroni")
            cluster = _fact(
                state, host.name, PatroniCluster, ca=tls.ca_path, cert=tls.chain_path,
                key=tls.key_path, api=_api(env, host),
            )  # fmt: skip
            if cluster is not None:
                out["patroni"] = {
                    "scope": cluster.scope,
                    "read_from": host.name,
                    "leader": cluster.leader.name if cluster.leader else None,
                    "paused": cluster.paused,
                    "problems": cluster.problems(tuple(h.name for h in pg_hosts)),
                    "members": [
                        {
                            "name": m.name,
                            "host": m.host,
                            "role": m.role,
                            "state": m.state,
                            "timeline": m.timeline,
                            "lag_bytes": m.lag,
                            "pending_restart": m.pending_restart,
                        }
                        for m in cluster.members
                    ],
                }
                break
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
                    "nodes": nodes,
                }
            )
    return out


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
    return (
        (etcd is None or bool(etcd.get("healthy")))
        and (patroni is None or not patroni["problems"])
        and all(len(v["holders"]) == 1 for v in data["vips"])
        and not (data.get("rabbitmq") or {}).get("problems")
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
        lines.append(
            f"    {'member':<12} {'role':<15} {'state':<10} {'TL':>3} {'lag':>10}  pending restart"
        )
        for m in patroni["members"]:
            lag = "-" if m["lag_bytes"] is None else f"{m['lag_bytes']} B"
            lines.append(
                f"    {m['name']:<12} {m['role']:<15} {m['state']:<10} {m['timeline'] or '-':>3} "
                f"{lag:>10}  {'yes' if m['pending_restart'] else ''}"
            )
    if data.get("rabbitmq"):
        lines += _render_rabbitmq(data["rabbitmq"])
    for vip in data["vips"]:
        holder = ", ".join(vip["holders"]) or "NOBODY"
        states = ", ".join(
            f"{n}={'/'.join(s['instances'].values()) or '?'}{'' if s['running'] else ' (stopped)'}"
            for n, s in vip["nodes"].items()
        )
        lines.append(f"  VIP {vip['name']} {vip['address']}: held by {holder} ({states})")
    return "\n".join(lines)


@click.command()
@click.argument("stack")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@operator_errors
def status(stack: str, as_json: bool) -> None:
    """etcd, Patroni, RabbitMQ and VIP state of STACK (or every DC of an environment). Exit 1
    unless everything is healthy."""
    results = [collect(s) for s in resolve(stack)]
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
