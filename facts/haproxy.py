"""Facts of haproxy: its view of the PostgreSQL backends (stats socket), and whether a
file is the concatenation of others (the client PEM its health checks present)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase

MISSING = "__PLINTH_HAPROXY_MISSING__"


@dataclass(frozen=True)
class BackendServer:
    proxy: str
    server: str
    status: str
    """``UP``, ``DOWN``, ``MAINT``... as ``show stat`` prints it."""


def parse_show_stat(output: list[str]) -> list[BackendServer] | None:
    """Servers of ``show stat`` CSV (``# pxname,svname,...,status,...``)."""
    if not output or output[0].strip() == MISSING:
        return None
    header = output[0].lstrip("# ").split(",")
    try:
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
    except ValueError:
        return None
    servers = []
    for line in output[1:]:
        fields = line.split(",")
        if len(fields) <= st or fields[sv] in ("FRONTEND", "BACKEND"):
            continue
        servers.append(BackendServer(fields[px], fields[sv], fields[st]))
    return servers


class HaproxyServers(FactBase[list[BackendServer] | None]):
    """Backend servers and their check status, from the admin socket; None if absent."""

    def command(self, socket: str = "/run/haproxy/admin.sock") -> str:
        q = shlex.quote(socket)
        return (
            f"[ -S {q} ] && command -v python3 >/dev/null || {{ echo {MISSING}; exit 0; }}; "
            "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); "
            's.connect(sys.argv[1]); s.sendall(b"show stat\\n"); '
            'sys.stdout.write(b"".join(iter(lambda: s.recv(65536), b"")).decode())\' '
            f"{q}"
        )

    @staticmethod
    def default() -> list[BackendServer] | None:
        return None

    def process(self, output: list[str]) -> list[BackendServer] | None:
        return parse_show_stat(output)


class ConcatenationMatches(FactBase[bool]):
    """Whether ``dest`` holds exactly the files ``parts`` concatenated (compared by sha1 on
    the host: key material is never printed)."""

    def command(self, parts: tuple[str, ...], dest: str) -> str:
        files = " ".join(shlex.quote(p) for p in parts)
        target = shlex.quote(dest)
        return (
            f"a=$(cat {files} 2>/dev/null | sha1sum); b=$(sha1sum < {target} 2>/dev/null); "
            '[ -n "$b" ] && [ "$a" = "$b" ] && echo yes || echo no'
        )

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"
