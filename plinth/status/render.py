"""The text ``plinth status`` prints for one stack's collected state."""

from __future__ import annotations

from typing import Any


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
