"""Facts of Redis and Sentinel, read over TLS with the release's client (``redis-cli``,
``valkey-cli``: :attr:`CliTls.cli`) as a client would.

Both facts take the addresses to ask, so the same commands serve the local node (a
deploy), every node of the DC (the rolling gate) and ``plinth status``. Passwords are
never part of a command: the client reads them from root-only files on the host
(``REDISCLI_AUTH``), written by the deploy.

* :class:`RedisReplication`: per data node, ``INFO replication``/``INFO server`` and the
  settings fixed at start (``CONFIG GET``), so a pending restart is visible remotely.
* :class:`SentinelState`: per Sentinel, the master it follows, ``SENTINEL CKQUORUM`` and
  the monitored master's parameters.
* :func:`cell_problems` (the rolling gate, ``plinth status``) and :func:`describe`
  (``plinth status``): what the two readings say about the cell.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from plinth.topology.redis import CliTls, Upstream

MISSING = "__PLINTH_REDIS_MISSING__"
UNREACHABLE = "__PLINTH_REDIS_UNREACHABLE__"
_NODE = "--plinth-redis-node--"
_SECTION = "--plinth-redis-section--"

# Settings fixed when the daemon starts (ours come from the systemd drop-in's command
# line): a difference between these and the model means the node must be restarted.
STATIC_SETTINGS = (
    "port",
    "tls-port",
    "tls-cert-file",
    "tls-key-file",
    "tls-ca-cert-file",
    "tls-auth-clients",
    "tls-replication",
    "aclfile",
    "io-threads",
)
# Settings the deploy changes at runtime (CONFIG SET + CONFIG REWRITE).
RUNTIME_SETTINGS = (
    "min-replicas-to-write",
    "min-replicas-max-lag",
    "maxmemory",
    "maxmemory-policy",
    "replica-priority",
)
# ``INFO server``'s version of the running daemon, first found: Valkey reports its own in
# ``valkey_version`` (``redis_version`` is 7.2.4 there, for clients' sake); Redis has only
# ``redis_version``.
VERSION_FIELDS = ("valkey_version", "redis_version")


def _sections(tls: CliTls, address: str, port: int, commands: Sequence[Sequence[str]]) -> str:
    """One node's block: a marker, then each command's output after its own marker."""
    parts = [f"echo {_NODE} {shlex.quote(address)}"]
    for args in commands:
        parts.append(f"echo {_SECTION}")
        parts.append(f"{tls.command(address, port, *args)} 2>&1 || echo {UNREACHABLE}")
    return "; ".join(parts)


def _guarded(tls: CliTls, body: str) -> str:
    q = shlex.quote
    return (
        f"command -v {q(tls.cli)} >/dev/null 2>&1 && [ -r {q(tls.auth_file)} ] && "
        f"[ -r {q(tls.cert)} ] || {{ echo {MISSING}; exit 0; }}; {body}"
    )


def replication_command(tls: CliTls, addresses: Iterable[str], port: int) -> str:
    commands = (
        ("INFO", "replication"),
        ("INFO", "server"),
        ("CONFIG", "GET", *STATIC_SETTINGS, *RUNTIME_SETTINGS),
    )
    return _guarded(tls, "; ".join(_sections(tls, a, port, commands) for a in addresses))


def sentinel_command(tls: CliTls, addresses: Iterable[str], port: int, master: str) -> str:
    commands = (
        ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master),
        ("SENTINEL", "CKQUORUM", master),
        ("SENTINEL", "MASTER", master),
        ("INFO", "server"),
    )
    return _guarded(tls, "; ".join(_sections(tls, a, port, commands) for a in addresses))


def _split(output: Iterable[str]) -> list[tuple[str, list[list[str]]]] | None:
    """[(address, [section lines...])] or None when the host has no client/credentials."""
    lines = [line.rstrip("\r") for line in output]
    if any(line.strip() == MISSING for line in lines):
        return None
    nodes: list[tuple[str, list[list[str]]]] = []
    for line in lines:
        if line.startswith(_NODE):
            nodes.append((line[len(_NODE) :].strip(), []))
        elif line == _SECTION:
            if not nodes:
                raise FactProcessError(f"redis fact: section before any node: {lines[:3]!r}")
            nodes[-1][1].append([])
        elif nodes and nodes[-1][1]:
            nodes[-1][1][-1].append(line)
    return nodes


def _failed(lines: list[str]) -> str | None:
    """The error of a section, or None when the command answered."""
    text = " ".join(line.strip() for line in lines if line.strip())
    if UNREACHABLE in text:
        detail = text.replace(UNREACHABLE, "").strip()
        return detail or "no answer"
    for prefix in (
        "ERR",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "AUTH failed",
        "Error:",
        "(error)",
        "Could not connect",
    ):
        if text.startswith(prefix):
            return text
    return None


def parse_info(lines: Iterable[str]) -> dict[str, str]:
    """``INFO`` output (``key:value`` lines, ``# Section`` headers) as a mapping."""
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        out[key] = value
    return out


def server_version(info: dict[str, str]) -> str | None:
    """The running daemon's version from its ``INFO server`` (see :data:`VERSION_FIELDS`)."""
    return next((info[key] for key in VERSION_FIELDS if key in info), None)


def parse_pairs(lines: Iterable[str]) -> dict[str, str]:
    """Alternating key and value lines (``CONFIG GET``, ``SENTINEL MASTER``)."""
    values = [line.strip() for line in lines]
    while values and not values[-1] and len(values) % 2:
        values.pop()  # a trailing blank line, not an empty value
    if len(values) % 2:
        raise FactProcessError(f"redis: expected key/value lines, got {len(values)} lines")
    return dict(zip(values[::2], values[1::2], strict=True))


@dataclass(frozen=True)
class ReplicaLink:
    """A replica as its master sees it (``slaveN:ip=...,port=...,state=...``)."""

    address: str
    port: int
    state: str
    offset: int
    lag: int


def _replica_links(info: dict[str, str]) -> tuple[ReplicaLink, ...]:
    links = []
    for key, value in sorted(info.items()):
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        fields = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        try:
            links.append(
                ReplicaLink(
                    address=fields["ip"],
                    port=int(fields["port"]),
                    state=fields.get("state", "?"),
                    offset=int(fields.get("offset", "0")),
                    lag=int(fields.get("lag", "-1")),
                )
            )
        except (KeyError, ValueError):
            raise FactProcessError(f"redis INFO replication: bad {key}: {value!r}") from None
    return tuple(links)


@dataclass(frozen=True)
class RedisNode:
    """One data node, live."""

    address: str
    error: str | None = None
    """Why the node did not answer (None: it did)."""
    role: str | None = None
    """``master`` or ``slave`` (Redis's own words)."""
    version: str | None = None
    master_host: str | None = None
    master_link_up: bool = False
    sync_in_progress: bool = False
    replicas: tuple[ReplicaLink, ...] = ()
    offset: int = 0
    run_id: str | None = None
    """Changes when the process restarts."""
    settings: dict[str, str] = field(default_factory=dict)
    """Static and runtime settings as the running process has them (``CONFIG GET``)."""

    @property
    def up(self) -> bool:
        return self.error is None

    @property
    def is_master(self) -> bool:
        return self.up and self.role == "master"


def _node(address: str, sections: list[list[str]]) -> RedisNode:
    if len(sections) != 3:
        raise FactProcessError(f"redis fact for {address}: expected 3 answers, got {len(sections)}")
    replication, server, config = sections
    error = _failed(replication) or _failed(server)
    if error is not None:
        return RedisNode(address=address, error=error)
    info = parse_info(replication)
    role = info.get("role")
    if role not in ("master", "slave"):
        raise FactProcessError(f"redis INFO replication from {address}: no role: {info!r}")
    settings = {} if _failed(config) else parse_pairs(config)
    try:
        offset = int(info.get("master_repl_offset", "0"))
    except ValueError:
        raise FactProcessError(f"redis INFO replication from {address}: bad offset") from None
    server_info = parse_info(server)
    return RedisNode(
        address=address,
        role=role,
        version=server_version(server_info),
        run_id=server_info.get("run_id"),
        master_host=info.get("master_host"),
        master_link_up=info.get("master_link_status") == "up",
        sync_in_progress=info.get("master_sync_in_progress", "0") != "0",
        replicas=_replica_links(info) if role == "master" else (),
        offset=offset,
        settings=settings,
    )


@dataclass(frozen=True)
class ReplicationState:
    """Every data node of a DC as one host's client sees it."""

    nodes: tuple[RedisNode, ...]

    def node(self, address: str) -> RedisNode | None:
        return next((n for n in self.nodes if n.address == address), None)

    @property
    def masters(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.is_master]

    @property
    def master(self) -> RedisNode | None:
        masters = self.masters
        return masters[0] if len(masters) == 1 else None

    @property
    def replicas(self) -> list[RedisNode]:
        return [n for n in self.nodes if n.up and n.role == "slave"]

    def problems(self, max_lag: int = 10) -> list[str]:
        """Why the data nodes are not fit for a rolling step (empty when they are)."""
        out = [f"redis {n.address} is down ({n.error})" for n in self.nodes if not n.up]
        masters = self.masters
        if not masters:
            out.append("no redis master")
        elif len(masters) > 1:
            out.append(f"several redis masters: {', '.join(m.address for m in masters)}")
        master = self.master
        for replica in self.replicas:
            if master is not None and replica.master_host != master.address:
                out.append(f"replica {replica.address} follows {replica.master_host}")
            elif not replica.master_link_up:
                out.append(f"replica {replica.address} has its master link down")
            elif replica.sync_in_progress:
                out.append(f"replica {replica.address} is still syncing")
        if master is not None:
            for link in master.replicas:
                if link.state != "online" or link.lag > max_lag:
                    out.append(f"replica {link.address} is {link.state}, lag {link.lag} s")
        return out

    def follower_problems(self, upstream: Sequence[str]) -> list[str]:
        """Problems of a following DC's data nodes: every one must be a replica of one
        node of the active DC (``upstream``), linked and not syncing. Which node is the
        active DC's Sentinels' business: after a failover there they re-point them."""
        out = [f"redis {n.address} is down ({n.error})" for n in self.nodes if not n.up]
        for n in self.nodes:
            if not n.up:
                continue
            if n.role != "slave":
                out.append(f"redis {n.address} is a {n.role}, expected a replica of the active DC")
            elif n.master_host not in upstream:
                out.append(f"replica {n.address} follows {n.master_host}, not the active DC")
            elif not n.master_link_up:
                out.append(f"replica {n.address} has its master link down")
            elif n.sync_in_progress:
                out.append(f"replica {n.address} is still syncing")
        followed = {n.master_host for n in self.replicas}
        if len(followed) > 1:
            out.append(
                f"replicas follow different masters: {', '.join(sorted(map(str, followed)))}"
            )
        return out

    def pending_restart(
        self, wanted_static: dict[str, str], wanted_version: str | None
    ) -> list[str]:
        """Addresses whose running process differs from the model or the installed
        package (reasons included)."""
        out = []
        for n in self.nodes:
            if not n.up:
                continue
            drift = sorted(k for k, v in wanted_static.items() if n.settings.get(k) != v)
            if drift:
                out.append(f"{n.address} ({', '.join(drift)})")
            elif wanted_version and n.version and n.version != wanted_version:
                out.append(f"{n.address} (runs {n.version}, {wanted_version} installed)")
        return out


def parse_replication(output: Iterable[str]) -> ReplicationState | None:
    nodes = _split(output)
    if nodes is None:
        return None
    return ReplicationState(tuple(_node(address, sections) for address, sections in nodes))


@dataclass(frozen=True)
class SentinelReport:
    """One Sentinel, live."""

    address: str
    error: str | None = None
    master: tuple[str, int] | None = None
    """The master address it follows (None: it does not know the master set)."""
    quorum_ok: bool = False
    quorum_message: str = ""
    flags: str = ""
    other_sentinels: int = 0
    replicas: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    """The monitored master's parameters (``quorum``, ``down-after-milliseconds``...)."""
    version: str | None = None
    run_id: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None


def _sentinel(address: str, sections: list[list[str]]) -> SentinelReport:
    if len(sections) != 4:
        raise FactProcessError(f"sentinel fact for {address}: expected 4 answers")
    addr, ckquorum, master, server = sections
    error = _failed(server)
    if error is not None:
        return SentinelReport(address=address, error=error)
    server_info = parse_info(server)
    version, run_id = server_version(server_info), server_info.get("run_id")
    addr_lines = [line.strip() for line in addr if line.strip()]
    if _failed(addr) or len(addr_lines) != 2 or not addr_lines[1].isdigit():
        return SentinelReport(
            address=address, version=version, run_id=run_id, quorum_message="unknown master"
        )
    quorum_text = " ".join(line.strip() for line in ckquorum if line.strip())
    settings = {} if _failed(master) else parse_pairs(master)
    return SentinelReport(
        address=address,
        master=(addr_lines[0], int(addr_lines[1])),
        quorum_ok=quorum_text.startswith("OK"),
        quorum_message=quorum_text,
        flags=settings.get("flags", ""),
        other_sentinels=int(settings.get("num-other-sentinels", "0") or 0),
        replicas=int(settings.get("num-slaves", "0") or 0),
        settings=settings,
        version=version,
        run_id=run_id,
    )


@dataclass(frozen=True)
class SentinelView:
    """Every Sentinel of a DC as one host sees them."""

    sentinels: tuple[SentinelReport, ...]

    @property
    def master(self) -> tuple[str, int] | None:
        """The master every answering Sentinel agrees on (None: none, or they disagree)."""
        seen = {s.master for s in self.sentinels if s.up and s.master is not None}
        return seen.pop() if len(seen) == 1 else None

    def problems(self) -> list[str]:
        out = []
        for s in self.sentinels:
            if not s.up:
                out.append(f"sentinel {s.address} is down ({s.error})")
            elif s.master is None:
                out.append(f"sentinel {s.address} does not monitor the master set")
            elif not s.quorum_ok:
                out.append(f"sentinel {s.address}: CKQUORUM failed ({s.quorum_message})")
            elif s.flags != "master":
                out.append(f"sentinel {s.address} sees the master as {s.flags}")
            elif s.other_sentinels != len(self.sentinels) - 1:
                out.append(
                    f"sentinel {s.address} knows {s.other_sentinels} other Sentinel(s), "
                    f"expected {len(self.sentinels) - 1}"
                )
        if len({s.master for s in self.sentinels if s.up and s.master}) > 1:
            out.append("sentinels disagree on the master")
        return out


def parse_sentinels(output: Iterable[str]) -> SentinelView | None:
    nodes = _split(output)
    if nodes is None:
        return None
    return SentinelView(tuple(_sentinel(address, sections) for address, sections in nodes))


class RedisReplication(FactBase[ReplicationState | None]):
    """Replication state of the data nodes at ``addresses`` (None: no client or
    credentials on this host yet)."""

    def command(self, tls: CliTls, addresses: tuple[str, ...], port: int) -> str:
        return replication_command(tls, addresses, port)

    @staticmethod
    def default() -> None:
        return None

    def process(self, output: list[str]) -> ReplicationState | None:
        return parse_replication(output)


class SentinelState(FactBase[SentinelView | None]):
    """What the Sentinels at ``addresses`` say about ``master`` (None: no client or
    credentials on this host yet)."""

    def command(self, tls: CliTls, addresses: tuple[str, ...], port: int, master: str) -> str:
        return sentinel_command(tls, addresses, port, master)

    @staticmethod
    def default() -> None:
        return None

    def process(self, output: list[str]) -> SentinelView | None:
        return parse_sentinels(output)


def cell_problems(
    state: ReplicationState | None,
    view: SentinelView | None,
    upstream: tuple[str, ...] | None = None,
) -> list[str]:
    """Why the cell is not healthy. ``upstream``: the active DC's data nodes, for a
    following DC (its nodes are replicas of one of them, it has no Sentinel of its own)."""
    if state is None:
        problems = ["cannot read the data nodes"]
    elif upstream is not None:
        problems = state.follower_problems(upstream)
    else:
        problems = state.problems()
    problems += ["cannot read the Sentinels"] if view is None else view.problems()
    return problems


def describe(
    master_name: str,
    state: ReplicationState | None,
    view: SentinelView | None,
    upstream: Upstream | None = None,
) -> dict[str, Any]:
    """JSON-ready form of the cell for ``plinth status``. ``upstream``: set for a
    following DC (its nodes replicate the active DC's master)."""
    master = state.master if state else None
    own = {n.address for n in state.nodes} if state else set()
    follows = None
    if upstream is not None:
        masters = sorted({str(n.master_host) for n in state.replicas}) if state else []
        follows = {
            "datacenter": upstream.datacenter,
            "master": masters[0] if len(masters) == 1 else None,
        }
    return {
        "master_name": master_name,
        "master": master.address if master else None,
        "follows": follows,
        "sentinel_master": view.master[0] if view and view.master else None,
        "problems": cell_problems(
            state, view, upstream.redis_nodes if upstream is not None else None
        ),
        # Replicas of this DC's master outside the DC (a following DC's nodes).
        "remote_replicas": [
            {"address": link.address, "state": link.state, "lag": link.lag}
            for link in (master.replicas if master else ())
            if link.address not in own
        ],
        "nodes": [
            {
                "address": n.address,
                "role": n.role,
                "up": n.up,
                "error": n.error,
                "version": n.version,
                "link_up": n.master_link_up if n.role == "slave" else None,
                "master_host": n.master_host if n.role == "slave" else None,
                "replica_priority": n.settings.get("replica-priority"),
                "offset": n.offset,
            }
            for n in (state.nodes if state else ())
        ],
        "sentinels": [
            {
                "address": s.address,
                "up": s.up,
                "error": s.error,
                "master": s.master[0] if s.master else None,
                "quorum_ok": s.quorum_ok,
                "quorum": s.quorum_message,
                "other_sentinels": s.other_sentinels,
            }
            for s in (view.sentinels if view else ())
        ],
    }
