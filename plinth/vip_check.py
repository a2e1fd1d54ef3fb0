#!/usr/bin/python3 -I
"""keepalived's track script for a VIP: hold it only where it can be served.

This file is uploaded verbatim to the hosts (``/usr/local/libexec/plinth/vip-check``) and
imported by the tests, so it uses the standard library only. keepalived runs it every
``check_interval`` seconds as ``keepalived_script`` with one argument, the JSON
configuration the deploy wrote for the VRRP instance; exit 0 keeps the node eligible,
exit 1 sends the instance to FAULT (the VIP is released). ``decide`` is pure: one
observation in, one verdict out; ``main`` only observes, decides and records.

Why: keepalived's VRRP is blind to reachability. A node cut off from its peers (but not
from the clients) hears no adverts, turns MASTER too, and its gratuitous ARP pulls the VIP
to a node that cannot serve it (issue 21).

PostgreSQL VIP (mode ``postgresql``), from the local haproxy's read-only stats socket;
"answers" means haproxy's last check of that member's Patroni REST API got an HTTP
response (L7OK: it is the primary, L7STS: it is not; L7RSP: garbled, but it answered):

=====================================================  =============================
observation                                            verdict
=====================================================  =============================
stats socket unreadable (haproxy down or reloading)    release
fewer than a majority of the cell's members answer     release (isolated)
a member is UP in the primary backend                  hold
majority answers, no primary, for less than ``grace``  hold (switchover/failover)
majority answers, no primary, for ``grace`` or more    release
standby datacenter: majority answers                   hold (no primary expected)
=====================================================  =============================

- Isolated first: a node that reaches fewer than a majority of the cell cannot tell a
  dead primary from its own isolation; the majority side is where Patroni elects (etcd
  needs a majority), and with synchronous replication an isolated primary cannot commit
  anyway and demotes at ``ttl``. This node's own Patroni counts as one member.
- A standby datacenter (not the model's active site) has no primary by design: its
  cell is a standby cluster whose standby leader replays the active site's WAL. Its VIP
  serves the replica port (local reads) and must be held wherever a majority of the cell
  answers; only isolation releases it there. Promoting the site is a deploy, which
  rewrites this configuration.
- Members whose first check has not completed (``INI``/``UNK``: right after a haproxy
  reload every server starts so) count neither way: they do not make a node isolated,
  and they do not show a primary.
- No primary while connected is what every node sees during a switchover or failover:
  moving the VIP would not help and would flap, so it is held up to ``grace`` (twice
  Patroni's ``ttl`` by default, longer than a failover). Past it, the node releases:
  this covers the asymmetric case where this node reaches the majority but not the
  primary a peer reaches. Cost: when no primary exists anywhere for that long (etcd
  lost), every node releases and the replica port goes with it; it comes back with the
  first primary. The clock is ``time.monotonic`` (wall clocks jump on the lab's
  machines) kept in a small state file per instance, discarded after a reboot.

Edge VIP (mode ``edge``), from TCP connects this node makes itself (a connect, not a TLS
handshake: reachability is the question, and the upstreams demand client certificates):

=====================================================  =============================
observation                                            verdict
=====================================================  =============================
fewer than a majority of the witnesses answer          release (isolated)
some virtual host has no upstream answering            hold (logged)
otherwise                                              hold
=====================================================  =============================

- Witnesses: this node, the VIP's other holders (at the port they serve the VIP on) and
  the upstream hosts of the virtual hosts it fronts (at their upstream port). A node cut
  off from its peers, or from the upstreams behind them, is in the minority and releases.
- A virtual host without an answering upstream does not release the VIP: every edge
  node of the DC proxies to the same upstreams, so in the usual case they all see the
  same, and the VIP also carries squid (the OT network's only way out) and the other
  virtual hosts. The asymmetric case (this node alone cannot reach one role's upstreams
  while still reaching a majority of witnesses) is therefore not acted on; it is logged.
- The daemons' own unit checks (nginx, squid) stay separate track scripts.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

MODE_POSTGRESQL = "postgresql"
MODE_EDGE = "edge"

ANSWERED = frozenset({"L7OK", "L7OKC", "L7STS", "L7RSP"})
"""Check results that prove Patroni's REST API answered over HTTP (status aside)."""
PRIMARY = frozenset({"L7OK", "L7OKC"})
"""``/primary`` answered 200: this member is the primary."""
NOT_YET_CHECKED = frozenset({"", "INI", "UNK"})
"""No completed check yet (haproxy just started or reloaded)."""

BOOT_ID = "/proc/sys/kernel/random/boot_id"


# --- what is observed ------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStat:
    """One server line of haproxy's ``show stat``."""

    proxy: str
    server: str
    status: str
    """``UP``, ``DOWN``, ``UP 1/2`` (going down), ``DOWN 1/2`` (going up), ``MAINT``..."""
    check_status: str
    """Last health check result (``L7OK``, ``L7STS``, ``L4TOUT``...), without the ``* ``
    haproxy prefixes while a check is in progress."""

    @property
    def up(self) -> bool:
        return self.status.split(" ")[0] == "UP"


@dataclass(frozen=True)
class PrimaryObservation:
    """The PostgreSQL cell as the local haproxy sees it."""

    members: tuple[str, ...]
    """The cell's members (the model's PostgreSQL hosts of the DC = haproxy server names)."""
    servers: tuple[ServerStat, ...] | None
    """Servers of the primary backend; None when the stats socket could not be read."""
    error: str = ""
    """Why the stats could not be read."""
    primary_expected: bool = True
    """False in a standby datacenter (from the configuration)."""


@dataclass(frozen=True)
class EdgeObservation:
    """What this edge node reaches."""

    witnesses: Mapping[str, bool]
    """Host name -> answered a TCP connect (this node is a witness that always answers)."""
    upstreams: Mapping[str, bool]
    """Virtual host -> at least one of its upstreams answered."""


Observation = PrimaryObservation | EdgeObservation


@dataclass(frozen=True)
class CheckState:
    """What the script remembers between runs (one JSON file per VRRP instance)."""

    primary_missing_since: float | None = None
    """Monotonic time at which a connected node first saw no primary; None while it does."""
    case: str = ""
    """Case of the last verdict (logged when it changes)."""
    boot_id: str = ""
    """Kernel boot the monotonic times belong to."""


@dataclass(frozen=True)
class Verdict:
    hold: bool
    case: str
    """Short, stable name of the row of the table (``isolated``, ``primary``...)."""
    why: str
    state: CheckState


# --- the decision -----------------------------------------------------------------------


def majority(count: int) -> int:
    return count // 2 + 1


def decide(observation: Observation, now: float, state: CheckState, grace: float = 0.0) -> Verdict:
    """Hold or release the VIP, given what this node observes now (see the module's table).

    + observation: the PostgreSQL cell through haproxy, or the edge's reachability
    + now: monotonic seconds
    + state: what the previous run remembered
    + grace: seconds a connected node keeps the PostgreSQL VIP without seeing a primary
    """
    if isinstance(observation, EdgeObservation):
        return _decide_edge(observation, state)
    return _decide_primary(observation, now, state, grace)


def _decide_primary(
    observed: PrimaryObservation, now: float, state: CheckState, grace: float
) -> Verdict:
    if observed.servers is None:
        why = f"haproxy stats unreadable ({observed.error or 'no answer'})"
        return Verdict(False, "unreadable", why, replace(state, case="unreadable"))
    by_name = {s.server: s for s in observed.servers}
    members = [by_name.get(name) for name in observed.members]
    answering = [s.server for s in members if s is not None and s.check_status in ANSWERED]
    unknown = [
        name
        for name, s in zip(observed.members, members, strict=True)
        if s is not None and s.check_status in NOT_YET_CHECKED
    ]
    needed = majority(len(observed.members))
    if len(answering) + len(unknown) < needed:
        why = (
            f"isolated: {len(answering)} of {len(observed.members)} cell members answer "
            f"({', '.join(answering) or 'none'}); {needed} needed"
        )
        return Verdict(False, "isolated", why, replace(state, case="isolated"))
    if not observed.primary_expected:
        why = f"standby datacenter: {len(answering)} of {len(observed.members)} members answer"
        return Verdict(
            True, "standby", why, replace(state, primary_missing_since=None, case="standby")
        )
    primaries = [s.server for s in members if s is not None and s.up and s.check_status in PRIMARY]
    if primaries:
        why = f"primary {', '.join(primaries)} up; {len(answering)} members answer"
        return Verdict(
            True, "primary", why, replace(state, primary_missing_since=None, case="primary")
        )
    since = state.primary_missing_since
    if since is None or since > now:
        since = now
    waited = now - since
    if waited < grace:
        why = f"no primary for {waited:.0f}s (grace {grace:.0f}s): switchover or failover"
        return Verdict(
            True, "no-primary", why, replace(state, primary_missing_since=since, case="no-primary")
        )
    why = f"no primary for {waited:.0f}s, past the grace of {grace:.0f}s"
    return Verdict(
        False, "no-primary-past-grace", why,
        replace(state, primary_missing_since=since, case="no-primary-past-grace"),
    )  # fmt: skip


def _decide_edge(observed: EdgeObservation, state: CheckState) -> Verdict:
    answering = sorted(name for name, ok in observed.witnesses.items() if ok)
    needed = majority(len(observed.witnesses))
    if len(answering) < needed:
        why = (
            f"isolated: {len(answering)} of {len(observed.witnesses)} witnesses answer "
            f"({', '.join(answering) or 'none'}); {needed} needed"
        )
        return Verdict(False, "isolated", why, replace(state, case="isolated"))
    unserved = sorted(name for name, ok in observed.upstreams.items() if not ok)
    if unserved:
        why = f"no upstream answers for {', '.join(unserved)} (held: the VIP carries more)"
        return Verdict(True, "upstream-missing", why, replace(state, case="upstream-missing"))
    why = f"{len(answering)} of {len(observed.witnesses)} witnesses answer"
    return Verdict(True, "connected", why, replace(state, case="connected"))


# --- configuration (written by operations/keepalived.py) --------------------------------


@dataclass(frozen=True)
class Target:
    address: str
    port: int


@dataclass(frozen=True)
class CheckConfig:
    """The JSON file the deploy writes per VRRP instance."""

    mode: str
    instance: str
    state_file: str
    stats_socket: str = ""
    """postgresql: haproxy's read-only stats socket."""
    proxy: str = ""
    """postgresql: haproxy's primary backend (``postgresql_primary``)."""
    members: tuple[str, ...] = ()
    """postgresql: the cell's members, by haproxy server name."""
    grace: float = 0.0
    """postgresql: seconds without a primary a connected node keeps the VIP."""
    primary_expected: bool = True
    """postgresql: False in a standby datacenter (its cell is a standby cluster)."""
    witnesses: Mapping[str, Sequence[Target]] = field(default_factory=dict)
    """edge: host -> where to connect (empty for this node: it always answers)."""
    upstreams: Mapping[str, Sequence[Target]] = field(default_factory=dict)
    """edge: virtual host -> its upstreams."""
    timeout: float = 1.0
    """Seconds for the stats read or for each TCP connect (they run in parallel)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def load_config(text: str) -> CheckConfig:
    raw = json.loads(text)
    if raw.get("mode") not in (MODE_POSTGRESQL, MODE_EDGE):
        raise ValueError(f"mode: {raw.get('mode')!r} is neither {MODE_POSTGRESQL} nor {MODE_EDGE}")

    def targets(value: Mapping[str, list[dict[str, object]]]) -> dict[str, tuple[Target, ...]]:
        return {
            name: tuple(Target(str(t["address"]), int(str(t["port"]))) for t in items)
            for name, items in value.items()
        }

    return CheckConfig(
        mode=str(raw["mode"]),
        instance=str(raw["instance"]),
        state_file=str(raw["state_file"]),
        stats_socket=str(raw.get("stats_socket", "")),
        proxy=str(raw.get("proxy", "")),
        members=tuple(str(m) for m in raw.get("members", ())),
        grace=float(raw.get("grace", 0.0)),
        primary_expected=bool(raw.get("primary_expected", True)),
        witnesses=targets(raw.get("witnesses", {})),
        upstreams=targets(raw.get("upstreams", {})),
        timeout=float(raw.get("timeout", 1.0)),
    )


# --- observing ---------------------------------------------------------------------------


def parse_show_stat(text: str, proxy: str) -> tuple[ServerStat, ...]:
    """Server lines of ``proxy`` in haproxy's ``show stat`` CSV (fields found by header
    name, so added columns in later releases do not matter)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"not show stat CSV: {text[:60]!r}")
    header = lines[0][2:].split(",")
    try:
        px, sv = header.index("pxname"), header.index("svname")
        st, chk = header.index("status"), header.index("check_status")
    except ValueError as missing:
        raise ValueError(f"show stat header lacks a column: {missing}") from None
    servers = []
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) <= max(px, sv, st, chk) or fields[px] != proxy:
            continue
        if fields[sv] in ("FRONTEND", "BACKEND"):
            continue
        check = fields[chk].lstrip("* ").strip()
        servers.append(ServerStat(fields[px], fields[sv], fields[st], check))
    return tuple(servers)


def read_show_stat(path: str, timeout: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(b"show stat\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def observe_primary(config: CheckConfig) -> PrimaryObservation:
    try:
        text = read_show_stat(config.stats_socket, config.timeout)
        servers = parse_show_stat(text, config.proxy)
    except (OSError, ValueError) as error:
        return PrimaryObservation(
            config.members, None, f"{config.stats_socket}: {error}", config.primary_expected
        )
    if not servers:
        return PrimaryObservation(
            config.members, None, f"no servers in {config.proxy}", config.primary_expected
        )
    return PrimaryObservation(config.members, servers, primary_expected=config.primary_expected)


def answers(target: Target, timeout: float) -> bool:
    try:
        with socket.create_connection((target.address, target.port), timeout=timeout):
            return True
    except OSError:
        return False


def observe_edge(config: CheckConfig) -> EdgeObservation:
    probes = sorted(
        {t for group in (config.witnesses, config.upstreams) for ts in group.values() for t in ts},
        key=lambda t: (t.address, t.port),
    )
    # All at once: the run lasts one connect timeout however many hosts stay silent
    # (keepalived kills a check that outlives its own timeout, and counts it failed).
    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        answered = list(pool.map(lambda t: answers(t, config.timeout), probes))
    results = dict(zip(probes, answered, strict=True))
    return EdgeObservation(
        witnesses={n: not ts or any(results[t] for t in ts) for n, ts in config.witnesses.items()},
        upstreams={n: any(results[t] for t in ts) for n, ts in config.upstreams.items()},
    )


# --- state and the executable ------------------------------------------------------------


def current_boot_id() -> str:
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def load_state(path: str, boot_id: str) -> CheckState:
    """The previous run's memory; a fresh one after a reboot (monotonic times restart)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        since = raw.get("primary_missing_since")
        state = CheckState(
            primary_missing_since=None if since is None else float(since),
            case=str(raw.get("case", "")),
            boot_id=str(raw.get("boot_id", "")),
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return CheckState(boot_id=boot_id)
    return state if state.boot_id == boot_id else CheckState(boot_id=boot_id)


def save_state(path: str, state: CheckState, verdict: Verdict) -> None:
    record = {**asdict(state), "hold": verdict.hold, "why": verdict.why}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def log_change(instance: str, verdict: Verdict) -> None:
    """One syslog line per change of case (``journalctl -t plinth-vip-check``): keepalived
    discards the script's output, and logging every run would drown the journal."""
    import syslog

    syslog.openlog("plinth-vip-check", 0, syslog.LOG_DAEMON)
    level = syslog.LOG_INFO if verdict.hold else syslog.LOG_WARNING
    action = "hold" if verdict.hold else "release"
    syslog.syslog(level, f"{instance}: {action}: {verdict.why}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: vip-check CONFIG.json", file=sys.stderr)
        return 2
    try:
        with open(args[0], encoding="utf-8") as f:
            config = load_config(f.read())
    except (OSError, ValueError, KeyError, TypeError) as error:
        # A broken configuration must not keep a VIP on a node nobody can check.
        print(f"vip-check: {args[0]}: {error}", file=sys.stderr)
        return 1
    import time

    boot_id = current_boot_id()
    state = load_state(config.state_file, boot_id)
    observation: Observation = (
        observe_edge(config) if config.mode == MODE_EDGE else observe_primary(config)
    )
    verdict = decide(observation, time.monotonic(), state, config.grace)
    new_state = replace(verdict.state, boot_id=boot_id)
    if verdict.case != state.case:
        log_change(config.instance, verdict)
    # Written only when it changes: the check runs every second.
    if new_state != state:
        try:
            save_state(config.state_file, new_state, verdict)
        except OSError as error:
            # The verdict stands; only the grace clock is lost (it restarts next run).
            print(f"vip-check: {config.state_file}: {error}", file=sys.stderr)
    return 0 if verdict.hold else 1


if __name__ == "__main__":
    sys.exit(main())
