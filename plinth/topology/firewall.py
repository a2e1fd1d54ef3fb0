"""The host firewall: one nftables table per host, rendered from the network flows.

Nothing here is a port list: every accept rule is one flow of :mod:`plinth.topology.flows`
(``plinth flows``) whose listener is on the host, with the flow's sources as the source
addresses, the address the flow dials as the destination, and its reason as the rule's
comment, so ``nft list table inet plinth`` explains itself. :func:`ruleset` gives the
whole file; :func:`input_rules` and :func:`output_rules` the same rules as data (the
tests and ``plinth firewall`` read them).

The input chain drops by default. In order: replies and related ICMP errors of admitted
connections, loopback, SSH from ``network.controllers`` at any of the host's addresses (first, so no
later rule can shadow the way plinth itself comes in), ICMPv6 neighbour discovery and ICMP
"fragmentation needed" (path MTU discovery; the other ICMP errors are ``related``), then
one rule per inbound flow, then a rate-limited ``plinth-drop`` log line before the drop.
The platform is IPv4: apart from loopback and neighbour discovery, no IPv6 packet is
admitted. With ``network.egress: enforce`` an output chain does the same for the host's
egress flows (:func:`plinth.topology.flows.egress`); destinations the model names by name
(mirrors, NTP servers, squid's allowlist) are admitted by port only, because a name in a
rule would be resolved once when the rules load: squid checks the names.

The file replaces only ``table inet plinth``, in one transaction (``table``, ``delete
table``, then the table: nft applies the file atomically and creates the table first so
the delete never fails). Other tables stay: Docker's, a container engine's, the
operator's own. It does not filter forwarded traffic (containers on the host, routing):
the host's input and output only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from plinth.model import Environment, Host
from plinth.topology import flows as F

TABLE = "plinth"
FAMILY = "inet"
DROP_LOG_PREFIX = "plinth-drop "
"""Every logged drop starts with this (``journalctl -k -g plinth-drop``)."""
DROP_LOG_RATE = "5/second burst 20 packets"
COMMENT_BYTES = 128
"""nftables stores at most 128 bytes of comment per rule."""
CONTROLLERS_SET = "controllers"
CLIENTS_SET = "clients"

NEIGHBOUR_DISCOVERY = (
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-router-solicit",
    "nd-router-advert",
)


@dataclass(frozen=True)
class Rule:
    """One accept rule: ``sources`` (or ``destinations``) reach ``protocol``/``port``."""

    protocol: F.Protocol
    port: int | None
    peers: tuple[str, ...]
    """Input: the source addresses or networks; output: the destination addresses. Empty
    with ``peer_set`` None: any address (output rules to names); see ``nobody``."""
    peer_set: str | None
    """The named set the rule matches instead of listing ``peers`` (its elements)."""
    local: str | None
    """Input: the address the flow dials (the host's own or a VIP's); output: None."""
    reason: str
    """The flow's reason in full (a ``#`` line above the rule)."""
    comment: str
    """What ``nft list`` shows: short, at most 128 bytes."""
    nobody: bool = False
    """The flow has no source (nothing declared, nobody using it): no rule is loaded, the
    file says why."""
    port_end: int | None = None
    """The last port of a range starting at ``port`` (the CLI tools' listeners)."""

    def match(self, direction: str) -> str:
        """The rule's match expression; ``direction`` is ``saddr`` or ``daddr``."""
        parts = []
        if self.peer_set is not None:
            parts.append(f"ip {direction} @{self.peer_set}")
        elif self.peers:
            parts.append(f"ip {direction} {_elements(self.peers)}")
        if self.local is not None:
            parts.append(f"ip daddr {self.local}")
        parts.append(_protocol_match(self.protocol, self.port, self.port_end))
        return " ".join(parts)


def _protocol_match(protocol: F.Protocol, port: int | None, port_end: int | None = None) -> str:
    if protocol is F.Protocol.VRRP:
        return f"ip protocol {F.IP_PROTOCOL_NUMBERS[protocol]}"
    if protocol is F.Protocol.ICMP:
        return "icmp type echo-request"
    end = f"-{port_end}" if port_end is not None else ""
    return f"{protocol} dport {port}{end}"


def _address_key(value: str) -> tuple[int, int, str]:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return (1, 0, value)
    return (0, int(network.network_address), value)


def _sorted(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values), key=_address_key))


def _elements(values: Iterable[str]) -> str:
    return "{ " + ", ".join(_sorted(values)) + " }"


def _comment(text: str) -> str:
    """``text`` as a comment nft accepts: no double quote, at most 128 bytes."""
    text = " ".join(text.replace('"', "'").split())
    if len(text.encode()) <= COMMENT_BYTES:
        return text
    cut = text.encode()[: COMMENT_BYTES - 3].decode(errors="ignore")
    return cut.rstrip() + "..."


def firewall_enforced(env: Environment) -> bool:
    return env.network.firewall == "enforce"


def egress_enforced(env: Environment) -> bool:
    return firewall_enforced(env) and env.network.egress == "enforce"


def _host(env: Environment, name: str) -> Host:
    for host in env.hosts:
        if host.name == name:
            return host
    raise KeyError(f"{name!r} is not a host of environment {env.name}")


def _declared_set(env: Environment, sources: F.Sources) -> str | None:
    """The named set standing for ``sources`` when they are a declared network list."""
    if sources == F.controller(env):
        return CONTROLLERS_SET
    if sources == F.clients(env):
        return CLIENTS_SET
    return None


def _is_ssh(env: Environment, flow: F.Flow) -> bool:
    return (
        flow.component == "base"
        and flow.protocol is F.Protocol.TCP
        and flow.port == env.ssh.port
        and flow.kind is F.FlowKind.OPERATOR
    )


def _input_rule(env: Environment, flow: F.Flow) -> Rule:
    sources = flow.sources
    peers = _sorted((*sources.addresses, *sources.networks))
    peer_set = _declared_set(env, sources)
    item = flow.listener
    # SSH is the way back in: admitted at every address of the host, since the
    # controller may dial another one (hosts[].ssh_address, a management interface).
    # VRRP adverts are addressed to the peer, whichever address keepalived picked.
    anywhere = flow.protocol is F.Protocol.VRRP or _is_ssh(env, flow)
    return Rule(
        protocol=flow.protocol,
        port=flow.port,
        peers=peers,
        peer_set=peer_set,
        local=None if anywhere else flow.address,
        reason=flow.reason,
        comment=_comment(f"{item.name} from {sources.label}: {flow.reason}"),
        nobody=peer_set is None and not peers,
        port_end=item.port_end,
    )


def _rule_order(rule: Rule) -> tuple[object, ...]:
    return (
        F.IP_PROTOCOL_NUMBERS[rule.protocol],
        rule.port or 0,
        _address_key(rule.local or ""),
        rule.peer_set or "",
        tuple(_address_key(p) for p in rule.peers),
        rule.comment,
    )


def input_rules(
    env: Environment, host_name: str, inbound: list[F.Flow] | None = None
) -> list[Rule]:
    """The accept rules of ``host_name``'s input chain after the fixed preamble: SSH from
    the controllers first, then one rule per other inbound flow of the host, sorted by
    protocol, port, destination and sources (a reordered model changes nothing)."""
    _host(env, host_name)
    inbound = F.flows(env) if inbound is None else inbound
    own = [f for f in inbound if f.host == host_name]
    ssh = [_input_rule(env, f) for f in own if _is_ssh(env, f)]
    rest = [_input_rule(env, f) for f in own if not _is_ssh(env, f)]
    return ssh + sorted(rest, key=_rule_order)


def _output_rule(item: F.Egress) -> Rule:
    addresses = [d for d in item.destinations if F.is_address(d)]
    names = [d for d in item.destinations if not F.is_address(d)]
    # A name cannot be pinned in a rule (nft would resolve it once, at load): the
    # destination is any address on that port; squid or the resolver checks the name.
    peers = () if names or not item.destinations else _sorted(addresses)
    to = f": {', '.join(names)}" if names else ""
    return Rule(
        protocol=item.protocol,
        port=item.port,
        peers=peers,
        peer_set=None,
        local=None,
        reason=item.reason,
        comment=_comment(f"{item.component} to {item.label}{to}"),
        port_end=item.port_end,
    )


def output_rules(
    env: Environment, host_name: str, outbound: list[F.Egress] | None = None
) -> list[Rule]:
    """The accept rules of ``host_name``'s output chain (empty unless egress is
    enforced): one per egress flow, sorted like the input rules."""
    _host(env, host_name)
    if not egress_enforced(env):
        return []
    outbound = F.egress(env) if outbound is None else outbound
    rules = {_output_rule(e) for e in outbound if e.host == host_name}
    return sorted(rules, key=_rule_order)


def _set_lines(name: str, networks: Iterable[str]) -> list[str]:
    lines = [f"\tset {name} {{", "\t\ttype ipv4_addr", "\t\tflags interval"]
    elements = _sorted(networks)
    if elements:
        lines.append(f"\t\telements = {_elements(elements)}")
    lines.append("\t}")
    return lines


def _rule_lines(rules: list[Rule], direction: str) -> list[str]:
    lines: list[str] = []
    for rule in rules:
        lines.append(f"\t\t# {rule.reason}")
        if rule.nobody:
            at = f" at {rule.local}" if rule.local else ""
            lines.append(
                "\t\t# no rule: nobody is to reach "
                f"{_protocol_match(rule.protocol, rule.port, rule.port_end)}"
                f"{at} ({rule.comment})"
            )
            continue
        lines.append(f'\t\t{rule.match(direction)} accept comment "{rule.comment}"')
    return lines


def ruleset(env: Environment, host_name: str) -> str:
    """The complete nftables file of ``host_name``: ``nft -f`` it to replace table
    ``inet plinth`` (and only it) atomically. Deterministic: the same model gives the
    same bytes."""
    host = _host(env, host_name)
    inbound = F.flows(env)
    rules = input_rules(env, host_name, inbound)
    controllers = [str(n) for n in env.network.controllers]
    clients = [str(n) for n in env.network.clients]
    lines = [
        "#!/usr/sbin/nft -f",
        f"# managed by plinth: the host firewall of {host.name} (environment {env.name}),",
        f"# rendered from the model's network flows (plinth flows {env.name}; plinth firewall",
        f"# {env.name} --host {host.name}). The next deploy rewrites it: change the model.",
        f"# Loading it replaces table {FAMILY} {TABLE} only, atomically; other tables stay.",
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        *_set_lines(CONTROLLERS_SET, controllers),
        *_set_lines(CLIENTS_SET, clients),
        "",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy drop;",
        '\t\tct state established,related accept comment "replies of admitted connections"',
        "\t\tct state invalid drop",
        '\t\tiif "lo" accept comment "loopback: a host reaching itself"',
    ]
    ssh = sum(1 for f in inbound if f.host == host.name and _is_ssh(env, f))
    lines += _rule_lines(rules[:ssh], "saddr")
    lines += [
        "\t\t# IPv6 is not used by the platform: only neighbour discovery, to keep the link",
        f"\t\ticmpv6 type {{ {', '.join(NEIGHBOUR_DISCOVERY)} }} accept "
        'comment "IPv6 neighbour discovery"',
        '\t\ticmp type destination-unreachable icmp code frag-needed accept comment "path MTU '
        'discovery"',
    ]
    lines += _rule_lines(rules[ssh:], "saddr")
    lines += [
        f'\t\tlimit rate {DROP_LOG_RATE} log prefix "{DROP_LOG_PREFIX}" level info',
        "\t}",
    ]
    if egress_enforced(env):
        outbound = output_rules(env, host_name, F.egress(env, inbound))
        lines += [
            "",
            "\tchain output {",
            "\t\ttype filter hook output priority filter; policy drop;",
            '\t\tct state established,related accept comment "replies of admitted connections"',
            "\t\tct state invalid drop",
            '\t\toif "lo" accept comment "loopback: a host reaching itself"',
            f"\t\ticmpv6 type {{ {', '.join(NEIGHBOUR_DISCOVERY)} }} accept "
            'comment "IPv6 neighbour discovery"',
            *_rule_lines(outbound, "daddr"),
            f'\t\tlimit rate {DROP_LOG_RATE} log prefix "{DROP_LOG_PREFIX}out " level info',
            "\t}",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"
