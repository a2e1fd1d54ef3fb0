"""The issuance log ``pki/issued.jsonl``: one JSON object per issued certificate.

It is the audit trail and the index revocation uses to find a serial's datacenter. Lines are
only ever appended; the file is never rewritten. It holds public facts about certificates,
never keys, CSRs or passphrases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from plinth.pki.errors import PkiError
from plinth.pki.fs import append_line
from plinth.pki.store import PkiStore


@dataclass(frozen=True)
class IssuanceRecord:
    """One line of the issuance log. Times are ISO 8601 UTC; ``serial`` is upper-case hex."""

    serial: str
    subject: str
    sans: tuple[str, ...]
    profile: str
    issuer: str
    dc: str
    service: str
    host: str
    not_before: str
    not_after: str
    time: str
    operator: str


def format_serial(serial: int) -> str:
    """Upper-case hex without separators, as ``openssl x509 -serial`` prints it."""
    return format(serial, "X")


def parse_serial(serial: int | str) -> int:
    """Accept an int or hex with optional ``0x`` prefix and ``:`` separators."""
    if isinstance(serial, int):
        return serial
    text = serial.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(text, 16)
    except ValueError:
        raise PkiError(f"{serial!r} is not a certificate serial (hex expected)") from None


def append_record(store: PkiStore, record: IssuanceRecord) -> None:
    line = json.dumps(asdict(record), sort_keys=True, separators=(",", ":"))
    try:
        store.pki_dir.mkdir(parents=True, exist_ok=True)
        append_line(store.log_path, line)
    except OSError as exc:
        raise PkiError(f"cannot append to {store.rel(store.log_path)}: {exc.strerror}") from None


def read_records(store: PkiStore) -> Iterator[IssuanceRecord]:
    """Every record, oldest first. A damaged line is an error naming its line number."""
    if not store.log_path.exists():
        return
    shown = store.rel(store.log_path)
    with store.log_path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                data["sans"] = tuple(data["sans"])
                yield IssuanceRecord(**data)
            except (ValueError, TypeError, KeyError):
                raise PkiError(
                    f"{shown} line {number} is damaged: fix it from git history"
                ) from None


def find_record(store: PkiStore, serial: int | str) -> IssuanceRecord:
    wanted = format_serial(parse_serial(serial))
    for record in read_records(store):
        if record.serial == wanted:
            return record
    raise PkiError(f"unknown serial {wanted}: not in {store.rel(store.log_path)}")
