"""What a host listens on, as ``ss`` reports it: the fact ``plinth audit`` compares with the
listeners the model declares (:func:`plinth.topology.flows.listeners`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

WILDCARDS = frozenset({"*", "0.0.0.0", "::"})
"""How ``ss`` prints a socket bound to every address (IPv4, IPv6, both)."""

_PROCESS = re.compile(r'\("([^"]+)",pid=(\d+)')
_UNIT = re.compile(r"cgroup:\S*/([^/\s]+\.(?:service|socket|scope))")
EPHEMERAL_PORTS = range(32768, 65536)
"""Linux's default ``ip_local_port_range``: a UDP socket bound there is a client's (a
resolver waiting for its replies), not a service."""


@dataclass(frozen=True)
class Socket:
    """One listening TCP socket or bound UDP socket."""

    protocol: str
    """``tcp`` or ``udp``."""
    address: str
    """As bound: an address, or one of :data:`WILDCARDS`; IPv6 without brackets, no
    ``%interface`` suffix."""
    port: int
    process: str
    """The owning systemd unit (``etcd.service``; from ``ss -e``'s cgroup, which a
    container without ``CAP_SYS_PTRACE`` still shows), else the program, else ``?``."""

    @property
    def every_address(self) -> bool:
        return self.address in WILDCARDS

    @property
    def loopback(self) -> bool:
        """Reachable only from the host itself (a firewall admits ``lo`` as a whole)."""
        return self.address.startswith("127.") or self.address == "::1"

    @property
    def client_socket(self) -> bool:
        """An unconnected UDP socket on an ephemeral port: the reply socket of a
        resolver inside a daemon (squid's DNS, Erlang's), which a firewall's connection
        tracking admits replies to and nothing else."""
        return self.protocol == "udp" and self.port in EPHEMERAL_PORTS

    @property
    def text(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"{shown}:{self.port}/{self.protocol} ({self.process})"


def parse_sockets(output: list[str]) -> tuple[Socket, ...]:
    """``ss -H -l -n -t -u -p -e`` -> the sockets, deduplicated (a daemon with several
    workers shows one line per socket; the same address and port once is enough)."""
    found: dict[tuple[str, str, int], Socket] = {}
    for line in output:
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        local = fields[4]
        address, _, port_text = local.rpartition(":")
        if not port_text.isdigit():
            raise FactProcessError(f"ss: cannot read the local address {local!r}")
        address = address.strip("[]").split("%", 1)[0]
        unit = _UNIT.search(line)
        program = _PROCESS.search(line)
        owner = unit[1] if unit else program[1] if program else "?"
        key = (fields[0], address, int(port_text))
        if key not in found:
            found[key] = Socket(fields[0], address, int(port_text), owner)
    return tuple(sorted(found.values(), key=lambda s: (s.protocol, s.port, s.address)))


class ListeningSockets(FactBase[tuple[Socket, ...]]):
    """Every listening TCP socket and bound UDP socket, with its owner (``ss -e``'s
    cgroup names the systemd unit; ``-p`` the program where /proc allows)."""

    def command(self) -> str:
        return "ss -H -l -n -t -u -p -e"

    def requires_command(self, *args: object, **kwargs: object) -> str:
        return "ss"

    @staticmethod
    def default() -> tuple[Socket, ...]:
        return ()

    def process(self, output: list[str]) -> tuple[Socket, ...]:
        return parse_sockets(output)
