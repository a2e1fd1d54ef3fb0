"""The PostgreSQL lineage fact and the divergence rule `plinth status` applies (issue 21:
a partition left two members on a timeline 4 forked at different LSNs, replicas past the
primary, and a status that said healthy)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.postgresql import (
    MISSING,
    TIMELINE_SQL,
    PostgresPosition,
    diverged_members,
    divergence,
    format_lsn,
    parse_history,
    parse_lsn,
    parse_postgres_timeline,
    postgres_timeline_command,
)
from plinth.status import healthy, render

HISTORY_3 = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000000\tno recovery target\n"
HISTORY_4A = HISTORY_3 + "3\t0/7000000\tno recovery target specified\n"
HISTORY_4B = HISTORY_3 + "3\t0/7200000\tno recovery target specified\n"


def output(
    recovery: bool, timeline: int, lsn: str, files: dict[str, str], received: str = ""
) -> list[str]:
    lines = [f"recovery|{'t' if recovery else 'f'}", f"timeline|{timeline}", f"lsn|{lsn}"]
    lines.append(f"received|{received}")
    lines += [f"history|{name}|{text.encode().hex()}" for name, text in files.items()]
    return lines


def position(timeline: int, lsn: int | None, history: str | None, **kw: Any) -> PostgresPosition:
    return PostgresPosition(kw.get("in_recovery", True), timeline, lsn, history, kw.get("received"))


def test_lsn_round_trip() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    with pytest.raises(ValueError):
        parse_lsn("B374D848")


def test_history_file_lines() -> None:
    switches = parse_history("# comment\n" + HISTORY_4A)
    assert [(s.timeline, format_lsn(s.switchpoint)) for s in switches] == [
        (1, "0/3000000"),
        (2, "0/5000000"),
        (3, "0/7000000"),
    ]
    with pytest.raises(FactProcessError):
        parse_history("1\tnot-an-lsn\treason")


def test_primary_on_timeline_4_reads_its_own_history_file() -> None:
    files = {"00000003.history": HISTORY_3, "00000004.history": HISTORY_4A}
    found = parse_postgres_timeline(output(False, 4, "0/7100000", files))
    assert found is not None
    assert (found.in_recovery, found.timeline, found.lsn) == (False, 4, 0x7100000)
    assert found.history == HISTORY_4A
    assert found.received is None
    assert found.history_checksum is not None and len(found.history_checksum) == 16


def test_replica_fields_timeline_1_and_missing_history() -> None:
    replica = parse_postgres_timeline(output(True, 1, "0/100", {}, received="0/200"))
    assert replica is not None
    assert (replica.history, replica.lsn, replica.received, replica.reach) == ("", 256, 512, 512)
    # timeline 5 without its history file: history unknown, no divergence judged on it
    unknown = parse_postgres_timeline(output(True, 5, "", {"00000004.history": HISTORY_4A}))
    assert unknown is not None and unknown.history is None and unknown.lsn is None
    assert divergence(position(5, 1, HISTORY_4A, in_recovery=False), unknown) is None


def test_not_answering_and_garbage() -> None:
    assert parse_postgres_timeline([MISSING]) is None
    with pytest.raises(FactProcessError):
        parse_postgres_timeline(["recovery|f"])
    with pytest.raises(FactProcessError):
        parse_postgres_timeline(["recovery|f", "timeline|x", "lsn|0/1"])


def test_command_runs_every_statement_as_postgres_over_the_socket() -> None:
    command = postgres_timeline_command(5432)
    assert "/var/run/postgresql/.s.PGSQL.5432" in command
    assert "runuser -u postgres -- psql -p 5432" in command
    # each statement is one -c argument, intact after the shell's quoting
    words = shlex.split(command.split("runuser", 1)[1].split("2>/dev/null")[0])
    assert [words[i + 1] for i, w in enumerate(words) if w == "-c"] == list(TIMELINE_SQL)


PRIMARY = position(4, 0x7100000, HISTORY_4A, in_recovery=False)


def test_same_lineage_is_not_diverged() -> None:
    assert divergence(PRIMARY, position(4, 0x7100000, HISTORY_4A)) is None
    assert divergence(PRIMARY, position(4, 0x7000100, HISTORY_4A)) is None
    assert divergence(PRIMARY, position(4, None, HISTORY_4A)) is None


def test_the_issue_21_fork_same_timeline_different_switchpoint() -> None:
    why = divergence(PRIMARY, position(4, 0x7000100, HISTORY_4B))
    assert why is not None and "fork" in why


def test_replica_replayed_past_the_primary() -> None:
    why = divergence(PRIMARY, position(4, 0x7100001, HISTORY_4A))
    assert why is not None and "past the primary" in why and "0/7100001" in why


def test_replica_on_an_older_timeline() -> None:
    # behind the switch point: will follow the promotion
    assert divergence(PRIMARY, position(3, 0x6FFFFFF, HISTORY_3)) is None
    assert divergence(PRIMARY, position(3, 0x7000000, HISTORY_3)) is None
    # wrote (replayed) past where the primary's lineage left timeline 3: needs a rewind
    why = divergence(PRIMARY, position(3, 0x7000001, HISTORY_3))
    assert why is not None and "past the primary's switch" in why
    # an older history that is not the primary's beginning
    other = "1\t0/3000000\tx\n2\t0/5800000\tx\n"
    assert divergence(PRIMARY, position(3, 1, other)) is not None


def test_member_on_a_newer_timeline_than_the_primary() -> None:
    why = divergence(PRIMARY, position(5, 1, HISTORY_4A + "4\t0/7100000\tx\n"))
    assert why is not None and "newer" in why


def test_standby_leader_reach_includes_what_it_received() -> None:
    standby_leader = position(4, 0x7000000, HISTORY_4A, received=0x7100000)
    assert divergence(standby_leader, position(4, 0x7080000, HISTORY_4A)) is None
    assert divergence(standby_leader, position(4, 0x7100001, HISTORY_4A)) is not None


def test_diverged_members_compares_with_the_leader_only() -> None:
    positions = {
        "n1": position(4, 0x7000100, HISTORY_4B),
        "n2": position(4, 0x7000000, HISTORY_4A),
        "n3": PRIMARY,
        "n4": None,
    }
    assert set(diverged_members(positions, "n3")) == {"n1"}
    assert diverged_members(positions, None) == {}
    assert diverged_members(positions, "n4") == {}


def status(diverged: str | None) -> dict[str, Any]:
    def member(name: str, role: str, why: str | None) -> dict[str, Any]:
        return {
            "name": name, "host": name, "role": role, "state": "running", "timeline": 4,
            "lag_bytes": 0, "pending_restart": False, "patroni_version": "3.0.2",
            "history": "0123456789abcdef", "wal": "0/7100000", "diverged": why,
        }  # fmt: skip

    problems = [f"member n1 diverged: {diverged}"] if diverged else []
    patroni = {
        "scope": "pg-dc1", "read_from": "n3", "leader": "n3", "standby": False,
        "leader_wal": 1, "paused": False, "problems": problems,
        "members": [member("n1", "replica", diverged), member("n3", "leader", None)],
    }  # fmt: skip
    return {"stack": "lab-dc1", "etcd": None, "vips": [], "patroni": patroni}


def test_status_is_unhealthy_and_shows_the_diverged_member_and_versions() -> None:
    clean = status(None)
    assert healthy(clean)
    assert "3.0.2" in render(clean) and "DIVERGED" not in render(clean)
    forked = status("timeline 4 history a differs from the primary's b (a fork)")
    assert not healthy(forked)
    text = render(forked)
    assert "member n1 diverged" in text
    assert "DIVERGED: timeline 4 history a differs" in text


def test_render_tolerates_entries_without_lineage() -> None:
    old = status(None)
    for m in old["patroni"]["members"]:
        for key in ("patroni_version", "history", "wal", "diverged"):
            del m[key]
    assert "n1" in render(old)


def test_status_is_unhealthy_when_no_patroni_member_answers() -> None:
    silent: dict[str, Any] = {"stack": "lab-dc1", "etcd": None, "vips": [], "patroni": None}
    assert healthy(silent)  # a stack without PostgreSQL hosts
    assert not healthy({**silent, "patroni_expected": True})
    assert "patroni: no member answers" in render({**silent, "patroni_expected": True})
