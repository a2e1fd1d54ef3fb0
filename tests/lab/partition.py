"""Network partitions in the lab, a writer that counts what was acknowledged, and the
checks that prove a PostgreSQL cluster did not fork (issue 21). A helper module: the
tests are in ``test_partition*.py``.

A cut is iptables inside one container (``docker exec``, not SSH, so it works whatever
the cut does to sshd): a dedicated chain ``PLINTH-CUT`` hooked first into INPUT and
OUTPUT drops traffic from and to the peers' addresses only. The controller (the Docker
bridge's gateway address) still reaches every node, so clients, SSH and the checks keep
working; a heal deletes the hooks and the chain, and is safe when nothing is cut.

The writer never uses ``statement_timeout`` or a query cancel: PostgreSQL reports a
commit whose wait for synchronous replication was cancelled as a success (with a
WARNING "canceling wait for synchronous replication ... already committed locally"),
so a cancel would turn an unreplicated row into an "acknowledged" one. Dead paths are
found by ``connect_timeout`` and TCP keepalives / ``tcp_user_timeout`` only, and any
result that came with that warning is recorded apart, as not acknowledged.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from facts.etcd import etcd_cluster_command, etcdctl_environment, parse_etcd_cluster
from facts.postgresql import (
    PostgresPosition,
    diverged_members,
    parse_postgres_timeline,
    postgres_timeline_command,
)
from plinth.model import Role
from tests.lab.conftest import REPO, Lab

CHAIN = "PLINTH-CUT"
RESULTS = REPO / ".lab" / "partition-results.txt"
ETCD_TLS = "/etc/plinth/tls/etcd"
PATRONICTL = "PATH=$PATH:/usr/local/bin patronictl -c /etc/patroni/config.yml"
TABLE = "partition_probe"

# TCP settings of the writer's one connection: an unanswered send fails after 5 s, an
# idle connection whose peer is gone after 2 + 3 x 1 s. Nothing cancels a query.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}


# --- the cut ------------------------------------------------------------------------------


def container(host: str) -> str:
    return f"plinth-lab-{host}"


def address_of(lab: Lab, host: str) -> str:
    return next(str(h.address) for h in lab.environment.hosts if h.name == host)


def _exec(host: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", container(host), "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cut_off(lab: Lab, host: str, peers: Sequence[str]) -> float:
    """Drop everything between ``host`` and ``peers`` (host names), both ways, inside
    ``host``'s container. Returns the monotonic time the rules were in place."""
    addresses = [address_of(lab, p) for p in peers if p != host]
    assert addresses, f"cut_off({host}): no peer to cut from"
    rules = "".join(
        f"iptables -w -A {CHAIN} -s {a} -j DROP; iptables -w -A {CHAIN} -d {a} -j DROP; "
        for a in addresses
    )
    script = (
        "set -e; "
        f"iptables -w -N {CHAIN} 2>/dev/null || iptables -w -F {CHAIN}; {rules}"
        f"iptables -w -C INPUT -j {CHAIN} 2>/dev/null || iptables -w -I INPUT 1 -j {CHAIN}; "
        f"iptables -w -C OUTPUT -j {CHAIN} 2>/dev/null || iptables -w -I OUTPUT 1 -j {CHAIN}"
    )
    result = _exec(host, script)
    if result.returncode != 0:
        heal(lab, host)
        raise AssertionError(f"cut_off({host}) failed: {result.stderr.strip()}")
    return time.monotonic()


def heal(lab: Lab, host: str) -> float:
    """Remove the cut from ``host`` (a no-op when there is none). Returns the time."""
    script = (
        f"while iptables -w -D INPUT -j {CHAIN} 2>/dev/null; do :; done; "
        f"while iptables -w -D OUTPUT -j {CHAIN} 2>/dev/null; do :; done; "
        f"iptables -w -F {CHAIN} 2>/dev/null; iptables -w -X {CHAIN} 2>/dev/null; "
        f"! iptables -w -S {CHAIN} >/dev/null 2>&1"
    )
    result = _exec(host, script)
    if result.returncode != 0:
        raise AssertionError(f"heal({host}) failed: {result.stderr.strip() or result.stdout}")
    return time.monotonic()


def heal_all(lab: Lab) -> None:
    for h in lab.environment.hosts:
        heal(lab, h.name)


def is_cut(host: str) -> bool:
    return _exec(host, f"iptables -w -S {CHAIN} >/dev/null 2>&1").returncode == 0


def peers_of(lab: Lab, host: str) -> list[str]:
    """Every other host of ``host``'s datacenter."""
    dc = next(h.datacenter for h in lab.environment.hosts if h.name == host)
    return [h.name for h in lab.environment.hosts_in(dc) if h.name != host]


@contextlib.contextmanager
def cut(lab: Lab, host: str, peers: Sequence[str] | None = None) -> Iterator[float]:
    """``with cut(lab, host) as started:`` ... healed on the way out, whatever happened."""
    started = cut_off(lab, host, peers if peers is not None else peers_of(lab, host))
    try:
        yield started
    finally:
        heal(lab, host)


# --- remote commands ----------------------------------------------------------------------


def run(lab: Lab, tmp: Path, host: str, command: str) -> Any:
    """``command`` on ``host`` over SSH as root (testinfra); None when SSH failed."""
    try:
        return lab.host(host, tmp).run(command)
    except RuntimeError:
        return None


def pg_hosts(lab: Lab) -> list[str]:
    return [h.name for h in lab.environment.hosts_with(Role.POSTGRESQL)]


def patroni_views(lab: Lab, tmp: Path) -> dict[str, list[dict[str, Any]] | None]:
    """``patronictl list`` as each member sees it (None: it did not answer)."""
    views: dict[str, list[dict[str, Any]] | None] = {}
    for host in pg_hosts(lab):
        result = run(lab, tmp, host, f"{PATRONICTL} list -f json")
        try:
            views[host] = json.loads(result.stdout) if result and result.rc == 0 else None
        except json.JSONDecodeError:
            views[host] = None
    return views


def members(lab: Lab, tmp: Path) -> list[dict[str, Any]]:
    """``patronictl list`` from the first member that answers."""
    for view in patroni_views(lab, tmp).values():
        if view:
            return view
    raise AssertionError("no Patroni member answers patronictl list")


def leaders(view: list[dict[str, Any]]) -> list[str]:
    return [m["Member"] for m in view if m["Role"] in ("Leader", "Standby Leader")]


def leader(lab: Lab, tmp: Path) -> str:
    found = leaders(members(lab, tmp))
    assert len(found) == 1, f"not exactly one Patroni leader: {found}"
    return found[0]


def timeline_of(view: list[dict[str, Any]], member: str) -> int | None:
    row = next((m for m in view if m["Member"] == member), None)
    value = (row or {}).get("TL")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def replay_lag(member: dict[str, Any]) -> Any:
    """A replica's lag in ``patronictl list -f json``: ``Replay Lag`` on Patroni 4.x,
    ``Lag in MB`` on 3.x (absent or ``unknown`` when Patroni does not know it)."""
    return member.get("Replay Lag", member.get("Lag in MB"))


def health_problems(lab: Lab, tmp: Path) -> list[str]:
    """Why the Patroni cluster is not healthy as every member sees it (empty when it is):
    every member answers, all name the same single leader, which is running, and every
    other member is streaming (or ``running``, as 3.x says) with a known lag."""
    names = set(pg_hosts(lab))
    out = []
    all_views = patroni_views(lab, tmp)
    for host, view in all_views.items():
        if view is None:
            out.append(f"{host}: patronictl does not answer")
            continue
        found = leaders(view)
        if len(found) != 1:
            out.append(f"{host} sees leaders {found}")
            continue
        if {m["Member"] for m in view} != names:
            out.append(f"{host} sees members {sorted(m['Member'] for m in view)}")
        for m in view:
            if m["Member"] == found[0]:
                if m["State"] != "running":
                    out.append(f"{host}: leader {m['Member']} is {m['State']}")
            elif m["State"] not in ("streaming", "running") or replay_lag(m) in (None, "unknown"):
                out.append(f"{host}: {m['Member']} is {m['State']}, lag {replay_lag(m)}")
    views = {tuple(leaders(v)) for v in all_views.values() if v}
    if len(views) > 1:
        out.append(f"members disagree on the leader: {sorted(views)}")
    return out


def wait_healthy(lab: Lab, tmp: Path, seconds: float = 60) -> float | None:
    """Seconds until the cluster was healthy, or None if it was not within ``seconds``."""
    started = time.monotonic()
    while True:
        if not health_problems(lab, tmp):
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            return None
        time.sleep(2)


def positions(lab: Lab, tmp: Path, primary: str | None) -> dict[str, PostgresPosition | None]:
    """Every member's timeline, history and WAL position. The replicas are read before
    the primary, so a replica found past the primary really went past it."""
    port = lab.environment.components.patroni.postgresql_port
    order = [h for h in pg_hosts(lab) if h != primary] + ([primary] if primary else [])
    out: dict[str, PostgresPosition | None] = {}
    for host in order:
        result = run(lab, tmp, host, postgres_timeline_command(port))
        out[host] = (
            parse_postgres_timeline(result.stdout.splitlines())
            if result is not None and result.rc == 0
            else None
        )
    return out


def history_files(lab: Lab, tmp: Path, host: str) -> dict[str, str]:
    """Every ``pg_wal/*.history`` of ``host`` (file name -> text), for the report."""
    sql = (
        "select name, encode(pg_read_binary_file('pg_wal/' || name), 'hex') "
        "from pg_ls_waldir() where name like '%.history' order by name"
    )
    result = run(lab, tmp, host, f"cd / && runuser -u postgres -- psql -XAtc {shlex.quote(sql)}")
    if result is None or result.rc != 0:
        return {}
    files = {}
    for line in result.stdout.splitlines():
        name, _, data = line.partition("|")
        files[name] = bytes.fromhex(data).decode(errors="replace")
    return files


# --- placing the roles --------------------------------------------------------------------


def move_patroni_leader(lab: Lab, tmp: Path, target: str) -> None:
    """Make ``target`` the Patroni leader (a switchover). In synchronous mode Patroni
    switches over only to the synchronous standby: when ``target`` is not it, the
    current one's PostgreSQL is restarted first so Patroni picks ``target``."""
    current = leader(lab, tmp)
    if current == target:
        return
    view = members(lab, tmp)
    scope = view[0]["Cluster"]
    sync = [m["Member"] for m in view if m["Role"] == "Sync Standby"]
    if sync and target not in sync:
        for other in sync:
            run(lab, tmp, current, f"{PATRONICTL} restart {scope} {other} --force")
        deadline = time.monotonic() + 90
        while target not in [m["Member"] for m in members(lab, tmp) if m["Role"] == "Sync Standby"]:
            assert time.monotonic() < deadline, f"{target} did not become the sync standby"
            time.sleep(2)
        assert wait_healthy(lab, tmp, 90) is not None, health_problems(lab, tmp)
    done = None
    for flag in ("--leader", "--primary", "--master"):  # 4.x, 3.x, older
        done = run(
            lab, tmp, current,
            f"{PATRONICTL} switchover {scope} {flag} {current} --candidate {target} --force",
        )  # fmt: skip
        if done is not None and "no such option" not in done.stderr:
            break
    assert done is not None and done.rc == 0, done and (done.stdout + done.stderr)
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(AssertionError):
            if leader(lab, tmp) == target and not health_problems(lab, tmp):
                return
        assert time.monotonic() < deadline, f"switchover to {target}: {health_problems(lab, tmp)}"
        time.sleep(2)


def etcd_state(lab: Lab, tmp: Path) -> Any:
    env = lab.environment
    port = env.components.etcd.client_port
    endpoints = tuple(f"https://{h.address}:{port}" for h in env.hosts_with(Role.ETCD))
    command = etcd_cluster_command(
        f"{ETCD_TLS}/ca.crt", f"{ETCD_TLS}/etcd-chain.crt", f"{ETCD_TLS}/etcd.key", endpoints
    )
    for h in env.hosts_with(Role.ETCD):
        result = run(lab, tmp, h.name, command)
        if result is not None and result.rc == 0:
            state = parse_etcd_cluster(result.stdout.splitlines())
            if state is not None and state.members:
                return state
    raise AssertionError("no etcd member answers")


def etcd_leader(lab: Lab, tmp: Path) -> str | None:
    found = etcd_state(lab, tmp).leader
    return str(found) if found else None


def move_etcd_leader(lab: Lab, tmp: Path, target: str) -> None:
    """Make ``target`` the etcd leader (``etcdctl move-leader``, asked of the leader)."""
    deadline = time.monotonic() + 60
    while True:
        state = etcd_state(lab, tmp)
        if state.leader == target and state.healthy:
            return
        assert time.monotonic() < deadline, f"etcd leader is {state.leader}, not {target}"
        current = state.member(state.leader) if state.leader else None
        wanted = state.member(target)
        if current is not None and wanted is not None and current.client_url:
            env = etcdctl_environment(
                f"{ETCD_TLS}/ca.crt", f"{ETCD_TLS}/etcd-chain.crt", f"{ETCD_TLS}/etcd.key",
                (current.client_url,),
            )  # fmt: skip
            run(lab, tmp, target, f"{env}; etcdctl move-leader {wanted.id}")
        time.sleep(2)


def postgres_vip(lab: Lab) -> Any:
    return next(v for v in lab.environment.vips if "postgresql" in v.services)


def vip_holders(lab: Lab, tmp: Path, vip: Any = None) -> list[str]:
    vip = vip or postgres_vip(lab)
    held = []
    for h in lab.environment.hosts_with(Role.KEEPALIVED):
        result = run(lab, tmp, h.name, "ip -4 -o addr show")
        if result is not None and f" {vip.address}/" in result.stdout:
            held.append(h.name)
    return held


def place_vip(lab: Lab, tmp: Path, target: str) -> None:
    """Put the PostgreSQL VIP on ``target``. keepalived runs with ``nopreempt``, so the
    others are stopped until ``target`` holds it, then started again (as BACKUP)."""
    if vip_holders(lab, tmp) == [target]:
        return
    others = [h.name for h in lab.environment.hosts_with(Role.KEEPALIVED) if h.name != target]
    run(lab, tmp, target, "systemctl start keepalived")
    try:
        for other in others:
            run(lab, tmp, other, "systemctl stop keepalived")
        deadline = time.monotonic() + 30
        while vip_holders(lab, tmp) != [target]:
            assert time.monotonic() < deadline, f"VIP held by {vip_holders(lab, tmp)}"
            time.sleep(0.5)
    finally:
        for other in others:
            run(lab, tmp, other, "systemctl start keepalived")
    time.sleep(3)  # the restarted ones settle as BACKUP
    assert vip_holders(lab, tmp) == [target], vip_holders(lab, tmp)


# --- the writer ---------------------------------------------------------------------------


def vip_conninfo(lab: Lab, bundle: Path) -> str:
    from tests.lab.test_postgresql import dsn

    env = lab.environment
    vip = postgres_vip(lab)
    return dsn(
        lab, bundle, env.vip_fqdn(vip), str(vip.address),
        port=str(env.components.haproxy.primary_port),
    )  # fmt: skip


def connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True, **KEEPALIVES)


def create_table(conninfo: str) -> None:
    with connect(conninfo) as conn:
        conn.execute(
            f"create table if not exists {TABLE} (id bigserial primary key, "
            "token text not null unique, at timestamptz not null default now())"
        )


def is_sync_cancel(diag: psycopg.errors.Diagnostic) -> bool:
    """The WARNING of a commit whose wait for synchronous replication was cut short."""
    text = f"{diag.message_primary or ''} {diag.message_detail or ''}".lower()
    return "synchronous replication" in text or "committed locally" in text


@dataclass
class Writer:
    """ONE connection through the VIP, autocommit, one numbered row per attempt
    (``insert ... returning id``); reconnects on error. Each row carries a token unique
    to this writer and attempt: after a fork a sequence can hand out the same id twice,
    the token cannot."""

    conninfo: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acknowledged: list[tuple[int, str, float]] = field(default_factory=list)
    """(id, token, monotonic time) of every insert the server acknowledged."""
    warned: list[tuple[int, str, float]] = field(default_factory=list)
    """Results that came with the 'canceling wait for synchronous replication' warning:
    committed locally, maybe not replicated; not counted as acknowledged."""
    failed: int = 0
    errors: list[tuple[float, str]] = field(default_factory=list)
    connects: int = 0
    in_flight_since: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warning: str | None = None
    _thread: threading.Thread | None = None

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if is_sync_cancel(diag):
            self._warning = f"{diag.severity_nonlocalized}: {diag.message_primary}"

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        for number in itertools.count(1):
            if self.stop.is_set():
                break
            token = f"{self.run_id}-{number}"
            try:
                if conn is None or conn.closed:
                    conn = connect(self.conninfo)
                    conn.add_notice_handler(self._notice)
                    self.connects += 1
                self._warning = None
                self.in_flight_since = time.monotonic()
                row = conn.execute(
                    f"insert into {TABLE} (token) values (%s) returning id", (token,)
                ).fetchone()
                now = time.monotonic()
                self.in_flight_since = None
                if row is None:
                    raise psycopg.InterfaceError("insert returned no row")
                with self._lock:
                    if self.stop.is_set():
                        break  # acknowledged after the figures were taken: not counted
                    target = self.warned if self._warning else self.acknowledged
                    target.append((int(row[0]), token, now))
            except psycopg.Error as error:
                self.in_flight_since = None
                with self._lock:
                    self.failed += 1
                    self.errors.append((time.monotonic(), str(error).strip()[:200]))
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(0.2)
                continue
            time.sleep(0.05)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self.run, name="pg-writer", daemon=True)
        self._thread.start()
        return self

    def finish(self, seconds: float = 30) -> bool:
        """Stop; True when the thread ended. A thread stuck in an insert is left alone (no
        cancel, see the module docstring): whatever it gets later is not counted."""
        with self._lock:
            self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=seconds)
            return not self._thread.is_alive()
        return True

    def times(self) -> list[float]:
        return [t for _, _, t in self.acknowledged]

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time without an acknowledged write inside [start, end] (its edges
        count: no write at all is a gap of end - start)."""
        times = [start, *(t for t in self.times() if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def first_after(self, when: float) -> float | None:
        return next((t for t in self.times() if t > when), None)

    def lost(self, conninfo: str | None = None) -> list[tuple[int, str, float]]:
        """Acknowledged rows missing from the table, read through the VIP."""
        with connect(conninfo or self.conninfo) as conn:
            rows = conn.execute(
                f"select token from {TABLE} where token like %s", (f"{self.run_id}-%",)
            ).fetchall()
        present = {r[0] for r in rows}
        return [a for a in self.acknowledged if a[1] not in present]


# --- after the heal -----------------------------------------------------------------------


@dataclass
class Invariants:
    """What a heal must leave behind."""

    healthy_after: float | None
    leaders: dict[str, list[str]]
    """Each member's view of the leader(s)."""
    leader: str | None
    timeline: int | None
    positions: dict[str, PostgresPosition | None]
    diverged: dict[str, str]
    lost: list[tuple[int, str, float]]
    lost_unknown: str | None = None
    """Why the acknowledged rows could not be read back (None: they were)."""

    @property
    def timelines_identical(self) -> bool:
        known = [p for p in self.positions.values() if p is not None]
        return (
            len(known) == len(self.positions)
            and len({(p.timeline, p.history) for p in known}) == 1
            and not self.diverged
        )

    def problems(self) -> list[str]:
        out = []
        if self.healthy_after is None:
            out.append("the cluster was not healthy within 60 s of the heal")
        distinct = {tuple(v) for v in self.leaders.values()}
        if len(distinct) != 1 or len(next(iter(distinct))) != 1:
            out.append(f"not exactly one leader: {self.leaders}")
        if self.lost_unknown:
            out.append(f"acknowledged rows not checked: {self.lost_unknown}")
        if self.lost:
            ids = [i for i, _, _ in self.lost]
            out.append(f"{len(self.lost)} acknowledged rows lost (ids {ids[:10]}...)")
        out += [f"{name} diverged: {why}" for name, why in self.diverged.items()]
        missing = [n for n, p in self.positions.items() if p is None]
        if missing:
            out.append(f"could not read the WAL position of {missing}")
        elif not self.timelines_identical:
            shown = {n: (p.timeline, p.history_checksum) for n, p in self.positions.items() if p}
            out.append(f"timeline histories differ: {shown}")
        return out


def check_invariants(lab: Lab, tmp: Path, heal_wait: float = 60) -> Invariants:
    """Wait for health (up to ``heal_wait`` s), then read every member: one leader,
    identical timeline histories, no replica past its primary. ``lost`` is left empty:
    the caller fills it in from :meth:`Writer.lost` once its writer has stopped."""
    healthy_after = wait_healthy(lab, tmp, heal_wait)
    views = patroni_views(lab, tmp)
    seen = {h: leaders(v) if v else [] for h, v in views.items()}
    agreed = {tuple(v) for v in seen.values() if v}
    primary = next(iter(agreed))[0] if len(agreed) == 1 and len(next(iter(agreed))) == 1 else None
    read = positions(lab, tmp, primary)
    diverged = diverged_members(read, primary)
    at_primary = read.get(primary) if primary else None
    timeline = at_primary.timeline if at_primary else None
    return Invariants(healthy_after, seen, primary, timeline, read, diverged, [])


def reinit_diverged(lab: Lab, tmp: Path, invariants: Invariants) -> None:
    """Repair a fork so the next drill starts clean: ``patronictl reinit`` of every
    diverged member (its data is rebuilt from the leader)."""
    if not invariants.diverged or invariants.leader is None:
        return
    view = members(lab, tmp)
    scope = view[0]["Cluster"]
    for name in invariants.diverged:
        run(lab, tmp, invariants.leader, f"{PATRONICTL} reinit {scope} {name} --force --wait")


def record(line: str) -> None:
    """Print one table line and append it to the results file the lead pastes from."""
    print(f"\n{line}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}\n")
