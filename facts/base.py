"""Facts of the base host deploy: container detection, kernel settings, managed blocks."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

MISSING = "__PLINTH_MISSING__"  # no "#": the shell would read a comment


class ContainerRuntime(FactBase[str]):
    """The container technology the host runs in (``docker``, ``lxc``...) or ``none``.

    Deploy code uses it only to skip what a container cannot do (set the clock,
    write read-only kernel settings); it never weakens what a real host gets.
    """

    def command(self) -> str:
        return "systemd-detect-virt --container 2>/dev/null || true"

    @staticmethod
    def default() -> str:
        return "none"

    def process(self, output: list[str]) -> str:
        value = output[0].strip() if output else ""
        return value or "none"


@dataclass(frozen=True)
class SysctlValue:
    """A kernel setting as the host has it now."""

    key: str
    value: str | None
    """Current value with whitespace normalised; None if the key does not exist."""
    writable: bool
    """False where /proc/sys is mounted read-only (containers, except net.*)."""


def _proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


class SysctlValues(FactBase[dict[str, SysctlValue]]):
    """Current values of the given sysctl keys, and whether each can be written."""

    def command(self, keys: tuple[str, ...]) -> str:
        # One round trip for all keys: <key> TAB <0|1 writable> TAB <value or marker>.
        parts = []
        for key in keys:
            path = shlex.quote(_proc_path(key))
            parts.append(
                f"if [ -e {path} ]; then w=0; [ -w {path} ] && w=1; "
                f'printf \'%s\\t%s\\t%s\\n\' {shlex.quote(key)} "$w" "$(cat {path})"; '
                f"else printf '%s\\t0\\t{MISSING}\\n' {shlex.quote(key)}; fi"
            )
        return "; ".join(parts) or "true"

    @staticmethod
    def default() -> dict[str, SysctlValue]:
        return {}

    def process(self, output: list[str]) -> dict[str, SysctlValue]:
        values: dict[str, SysctlValue] = {}
        for line in output:
            fields = line.split("\t", 2)
            if len(fields) != 3 or fields[1] not in ("0", "1"):
                raise FactProcessError(f"unexpected sysctl fact line: {line!r}")
            key, writable, raw = fields
            value = None if raw == MISSING else " ".join(raw.split())
            values[key] = SysctlValue(key=key, value=value, writable=writable == "1")
        return values


class ManagedBlock(FactBase[str | None]):
    """The text between plinth's markers in a file: None if the file or block is absent."""

    def command(self, path: str, marker: str) -> str:
        begin, end = block_markers(marker)
        return (
            f"test -e {shlex.quote(path)} || {{ echo {MISSING}; exit 0; }}; "
            f"awk -v b={shlex.quote(begin)} -v e={shlex.quote(end)} "
            "'$0==b{inside=1;found=1;next} $0==e{inside=0;next} inside{print} "
            f'END{{if(!found) print "{MISSING}"}}\' {shlex.quote(path)}'
        )

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        if output and output[-1] == MISSING:
            return None
        return "\n".join(output)


def block_markers(marker: str) -> tuple[str, str]:
    return (f"# BEGIN {marker} (managed by plinth)", f"# END {marker}")


class Ipv4Routes(FactBase[dict[str, str | None]]):
    """The main IPv4 routing table: ``{destination: next hop or None}``."""

    def command(self) -> str:
        return "ip -4 route show table main"

    def requires_command(self) -> str:
        return "ip"

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        routes: dict[str, str | None] = {}
        for line in output:
            fields = line.split()
            if not fields:
                continue
            via = fields[fields.index("via") + 1] if "via" in fields[:-1] else None
            routes[fields[0]] = via
        return routes
