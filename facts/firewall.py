"""Facts of the host firewall: whether plinth's nftables table is loaded, and whether a
rollback armed by an earlier apply is still pending."""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

ROLLBACK_UNIT = "plinth-firewall-rollback"
"""The transient unit (``systemd-run``) that restores the previous rules unless the
deploy proves a new SSH connection still opens."""


@dataclass(frozen=True)
class FirewallState:
    """plinth's table as the kernel has it now."""

    nft: bool
    """``nft`` is installed."""
    loaded: bool
    """``table inet plinth`` is loaded."""
    rollback_pending: bool
    """An earlier apply's rollback timer has not fired yet."""


class FirewallTable(FactBase[FirewallState]):
    """Whether ``table inet plinth`` is loaded (a flushed ruleset, a stopped
    ``nftables.service`` or a fired rollback leave the file in place but the table gone)."""

    def command(self) -> str:
        return (
            "if command -v nft >/dev/null 2>&1; then echo nft=1; "
            "nft list table inet plinth >/dev/null 2>&1 && echo loaded=1 || echo loaded=0; "
            "else echo nft=0; echo loaded=0; fi; "
            f"systemctl is-active --quiet {ROLLBACK_UNIT}.timer 2>/dev/null "
            "&& echo rollback=1 || echo rollback=0"
        )

    @staticmethod
    def default() -> FirewallState:
        return FirewallState(nft=False, loaded=False, rollback_pending=False)

    def process(self, output: list[str]) -> FirewallState:
        values = dict(line.strip().split("=", 1) for line in output if "=" in line)
        try:
            return FirewallState(
                nft=values["nft"] == "1",
                loaded=values["loaded"] == "1",
                rollback_pending=values["rollback"] == "1",
            )
        except KeyError as missing:
            raise FactProcessError(f"firewall state: no {missing} in {output!r}") from None
