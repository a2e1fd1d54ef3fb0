"""Facts of keepalived: which node holds which VIP, and each VRRP instance's state as the
notify script recorded it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

_ADDR = "--plinth-vrrp-addresses--"
_STATES = "--plinth-vrrp-states--"
_SERVICE = "--plinth-vrrp-service--"
_VIPS = "--plinth-vrrp-vips--"

STATE_DIR = "/var/lib/keepalived-plinth"
"""Where the deploy's notify script records each VRRP instance's state as
``<instance>.state``: what :class:`VrrpState` reads (``plinth status``)."""


@dataclass(frozen=True)
class VrrpStateOnHost:
    """One node's VRRP picture."""

    held: tuple[str, ...]
    """VIPs (of those asked about) configured on this node's interfaces now."""
    instances: dict[str, str] = field(default_factory=dict)
    """Instance name -> last state the notify script recorded (MASTER, BACKUP, FAULT...)."""
    running: bool = False
    """keepalived.service is active."""

    def holds(self, vip: str) -> bool:
        return vip in self.held


def parse_vrrp_state(output: list[str]) -> VrrpStateOnHost:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.strip() in (_VIPS, _ADDR, _STATES, _SERVICE):
            current = sections.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line)
    if set(sections) != {_VIPS, _ADDR, _STATES, _SERVICE}:
        raise FactProcessError("VRRP fact output is missing a section")
    vips = " ".join(sections[_VIPS]).split()
    text = "\n".join(sections[_ADDR]).strip() or "[]"
    try:
        interfaces = json.loads(text)
    except json.JSONDecodeError:
        raise FactProcessError(f"ip -j addr: not JSON: {text[:80]!r}") from None
    local = {
        str(info.get("local")) for iface in interfaces for info in iface.get("addr_info") or []
    }
    instances = {}
    for line in sections[_STATES]:
        name, _, rest = line.strip().partition(" ")
        if name and rest:
            instances[name] = rest.split()[0]
    running = "".join(sections[_SERVICE]).strip() == "active"
    return VrrpStateOnHost(tuple(v for v in vips if v in local), instances, running)


class VrrpState(FactBase[VrrpStateOnHost]):
    """Which of ``vips`` this node holds, the recorded instance states, keepalived running.

    + vips: the VIP addresses to look for
    + state_dir: where the notify script records ``<instance>.state``
    """

    def command(self, vips: tuple[str, ...], state_dir: str) -> str:
        d = shlex.quote(state_dir)
        wanted = " ".join(shlex.quote(v) for v in vips)
        return (
            f"echo {_VIPS}; echo {wanted}; "
            f"echo {_ADDR}; ip -j -4 addr show 2>/dev/null || echo '[]'; "
            f'echo {_STATES}; for f in {d}/*.state; do [ -f "$f" ] && '
            'printf "%s %s\\n" "$(basename "$f" .state)" "$(cat "$f")"; done; true; '
            f"echo {_SERVICE}; systemctl is-active keepalived.service 2>/dev/null || true"
        )

    @staticmethod
    def default() -> VrrpStateOnHost:
        return VrrpStateOnHost(())

    def process(self, output: list[str]) -> VrrpStateOnHost:
        return parse_vrrp_state(output)


class Ipv4Interfaces(FactBase[dict[str, str]]):
    """``{address: interface}`` of the host's IPv4 addresses (VRRP runs on the interface
    that carries the host's model address)."""

    def command(self) -> str:
        return "ip -o -4 addr show"

    def requires_command(self, *args: object, **kwargs: object) -> str:
        return "ip"

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_interfaces(output)


def parse_interfaces(output: list[str]) -> dict[str, str]:
    """``ip -o -4 addr show`` -> {address: interface}."""
    found = {}
    for line in output:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            found[fields[3].split("/")[0]] = fields[1].split("@")[0]
    return found
