"""Facts of a PostgreSQL member's WAL lineage: its timeline, the history of that timeline
(``pg_wal/<TLI>.history``) and its WAL position, read over the local Unix socket as
``postgres``.

This is what tells a forked cluster from a healthy one. Patroni's ``/cluster`` shows one
timeline number per member, but after a partition two members can both be on timeline 4
with histories that branched at different LSNs, and a replica can have replayed WAL the
primary never wrote (it came from the old primary). :func:`divergence` compares a member
with the primary.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MISSING = "__PLINTH_POSTGRES_MISSING__"

# One psql run of several statements (each its own -c), one ``key|value...`` row per
# line. pg_walfile_name() refuses to run during recovery, so the primary's timeline comes
# from its current WAL file name and a replica's from what its WAL receiver last received
# (or, when it is not streaming, its last restartpoint). History files are hex-encoded:
# no newline of theirs survives into the output.
TIMELINE_SQL = (
    "select 'recovery', pg_is_in_recovery()",
    # A replica's timeline: what its WAL receiver streams; without one (cut off), the
    # newest its control file knows. After pg_rewind the last checkpoint is still the
    # common one on the old timeline until the first restartpoint, while the minimum
    # recovery point already names the new one: the checkpoint's alone made a rewound
    # replica look diverged (partition drill d, 2026-12-08).
    "select 'timeline', case when pg_is_in_recovery() "
    "then coalesce((select received_tli from pg_stat_wal_receiver), "
    "greatest((select timeline_id from pg_control_checkpoint()), "
    "(select min_recovery_end_timeline from pg_control_recovery()))) "
    "else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end",
    "select 'lsn', case when pg_is_in_recovery() "
    "then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end",
    "select 'received', case when pg_is_in_recovery() then pg_last_wal_receive_lsn() end",
    "select 'history', name, encode(pg_read_binary_file('pg_wal/' || name), 'hex') "
    "from pg_ls_waldir() where name like '%.history' order by name",
)


@dataclass(frozen=True)
class TimelineSwitch:
    """One line of a timeline history file: ``timeline`` ended at ``switchpoint``."""

    timeline: int
    switchpoint: int
    """The LSN (as bytes) where the next timeline branched off."""


@dataclass(frozen=True)
class PostgresPosition:
    """Where one member's WAL is, and which lineage it belongs to."""

    in_recovery: bool
    timeline: int
    lsn: int | None
    """Current write position on a primary, replay position on a replica (bytes); None
    when a replica has replayed nothing yet."""
    history: str | None
    """Text of the member's own timeline history file (empty on timeline 1); None when
    the file is missing from pg_wal."""
    received: int | None = None
    """A replica's WAL received (and flushed) so far; None on a primary. A standby
    leader's cascading replicas may replay up to this, past its own replay position."""

    @property
    def reach(self) -> int | None:
        """How far WAL from this member can have gone: what its replicas may have."""
        known = [v for v in (self.lsn, self.received) if v is not None]
        return max(known) if known else None

    @property
    def history_checksum(self) -> str | None:
        """The first 16 hex digits of the SHA-256 of :attr:`history`."""
        if self.history is None:
            return None
        return hashlib.sha256(self.history.encode()).hexdigest()[:16]

    @property
    def switches(self) -> tuple[TimelineSwitch, ...]:
        return parse_history(self.history or "")


def parse_lsn(text: str) -> int:
    """``16/B374D848`` -> bytes."""
    high, sep, low = text.strip().partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def parse_history(text: str) -> tuple[TimelineSwitch, ...]:
    """A timeline history file: ``<parent tli>\\t<switchpoint>\\t<reason>`` per line,
    comments (``#``) and blank lines ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise FactProcessError(f"timeline history line: {line[:80]!r}")
        try:
            out.append(TimelineSwitch(int(fields[0]), parse_lsn(fields[1])))
        except ValueError:
            raise FactProcessError(f"timeline history line: {line[:80]!r}") from None
    return tuple(out)


def postgres_timeline_command(port: int) -> str:
    statements = " ".join(f"-c {shlex.quote(sql)}" for sql in TIMELINE_SQL)
    return (
        f"command -v psql >/dev/null 2>&1 && [ -S /var/run/postgresql/.s.PGSQL.{port} ] || "
        f"{{ echo {MISSING}; exit 0; }}; "
        f"cd / && runuser -u postgres -- psql -p {port} -XAtq -v ON_ERROR_STOP=1 "
        f"{statements} 2>/dev/null || echo {MISSING}"
    )


def parse_postgres_timeline(output: list[str]) -> PostgresPosition | None:
    """Parse :func:`postgres_timeline_command`'s output; None when PostgreSQL does not
    answer."""
    if any(line.strip() == MISSING for line in output):
        return None
    values: dict[str, str] = {}
    files: dict[int, str] = {}
    for line in output:
        key, _, rest = line.strip().partition("|")
        if key == "history":
            name, _, data = rest.partition("|")
            try:
                files[int(name.split(".")[0], 16)] = bytes.fromhex(data).decode()
            except ValueError:
                raise FactProcessError(f"history file {name!r}: not readable") from None
        elif key in ("recovery", "timeline", "lsn", "received"):
            values[key] = rest
    if not {"recovery", "timeline", "lsn"} <= set(values):
        raise FactProcessError(f"PostgreSQL timeline fact: incomplete output {output[:4]!r}")
    try:
        timeline = int(values["timeline"])
        lsn = parse_lsn(values["lsn"]) if values["lsn"] else None
        received = parse_lsn(values["received"]) if values.get("received") else None
    except ValueError:
        raise FactProcessError(f"PostgreSQL timeline fact: {values!r}") from None
    return PostgresPosition(
        in_recovery=values["recovery"] == "t",
        timeline=timeline,
        lsn=lsn,
        history="" if timeline == 1 else files.get(timeline),
        received=received,
    )


def divergence(primary: PostgresPosition, member: PostgresPosition) -> str | None:
    """Why ``member`` is not on the primary's lineage (None when it is, or when it
    cannot be told). ``member``'s position must have been read no later than the
    primary's: a replica read after the primary may rightly be ahead of that reading.

    + same timeline: the history files must be identical, and a replica may not have
      replayed past the primary's current position;
    + an older timeline (a replica that has not followed a promotion yet): its history
      must be the beginning of the primary's, and it must not have gone past the point
      where the primary's lineage left that timeline;
    + a newer timeline than the primary's: a fork.
    """
    if member.timeline > primary.timeline:
        return f"timeline {member.timeline} is newer than the primary's {primary.timeline}"
    if member.history is None or primary.history is None:
        return None
    if member.timeline == primary.timeline:
        if member.history != primary.history:
            return (
                f"timeline {member.timeline} history {member.history_checksum} differs from "
                f"the primary's {primary.history_checksum} (a fork)"
            )
        reach = primary.reach
        if member.lsn is not None and reach is not None and member.lsn > reach:
            return f"replayed to {format_lsn(member.lsn)}, past the primary's {format_lsn(reach)}"
        return None
    ours, theirs = member.switches, primary.switches
    if theirs[: len(ours)] != ours:
        return f"timeline {member.timeline} history is not a prefix of the primary's"
    left = next((s for s in theirs if s.timeline == member.timeline), None)
    if left is None:
        return f"timeline {member.timeline} is not in the primary's history"
    if member.lsn is not None and member.lsn > left.switchpoint:
        return (
            f"at {format_lsn(member.lsn)} on timeline {member.timeline}, past the primary's "
            f"switch to the next timeline at {format_lsn(left.switchpoint)}"
        )
    return None


def diverged_members(
    positions: dict[str, PostgresPosition | None], leader: str | None
) -> dict[str, str]:
    """``{member: why}`` for every member off the leader's lineage (see
    :func:`divergence`); empty when the leader or its position is unknown."""
    primary = positions.get(leader) if leader else None
    if primary is None:
        return {}
    out = {}
    for name, position in positions.items():
        if name != leader and position is not None:
            why = divergence(primary, position)
            if why:
                out[name] = why
    return out


class PostgresTimeline(FactBase[PostgresPosition | None]):
    """The local PostgreSQL's timeline, timeline history and WAL position (Unix socket,
    as ``postgres``); None when PostgreSQL does not answer.

    + port: PostgreSQL's port (names the socket)
    """

    def command(self, port: int) -> str:
        return postgres_timeline_command(port)

    @staticmethod
    def default() -> PostgresPosition | None:
        return None

    def process(self, output: list[str]) -> PostgresPosition | None:
        return parse_postgres_timeline(output)
