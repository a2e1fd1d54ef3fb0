"""Names in certificates: normalisation and the intermediate's name constraints."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_dns_name(name: str) -> str:
    """Lower-case, strip one trailing dot, and check LDH syntax. Wildcards are refused:
    etcd and RabbitMQ have had outages over wildcard peer certificates."""
    text = name.strip().lower().removesuffix(".")
    if not text:
        raise ValueError("empty DNS name")
    if "*" in text:
        raise ValueError("wildcards are not issued")
    if len(text) > 253 or not all(_LABEL.match(label) for label in text.split(".")):
        raise ValueError("not a valid DNS name")
    return text


def looks_like_hostname(name: str) -> bool:
    """Whether a verifier might treat this CN as a DNS name (OpenSSL does for dotted names)."""
    try:
        normalize_dns_name(name)
    except ValueError:
        return False
    return "." in name


def parse_ip(value: str | IPAddress) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return ipaddress.ip_address(value.strip())


def dns_permitted(name: str, domains: Iterable[str]) -> bool:
    return any(name == d or name.endswith("." + d) for d in domains)


def name_constraints(
    ca: x509.Certificate,
) -> tuple[list[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]] | None:
    """The CA's permitted DNS domains and networks, or None when it carries no constraints."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    subtrees = nc.permitted_subtrees or []
    domains = [g.value.lower().lstrip(".") for g in subtrees if isinstance(g, x509.DNSName)]
    networks = [
        g.value
        for g in subtrees
        if isinstance(g, x509.IPAddress)
        and isinstance(g.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]
    return domains, networks


def outside_constraints(
    ca: x509.Certificate, dns_names: Iterable[str], ips: Iterable[IPAddress]
) -> list[str]:
    """SANs (as ``DNS:x`` / ``IP:y``) that the CA's name constraints do not permit."""
    constraints = name_constraints(ca)
    if constraints is None:
        return []
    domains, networks = constraints
    bad = [f"DNS:{n}" for n in dns_names if not dns_permitted(n, domains)]
    bad.extend(
        f"IP:{ip}" for ip in ips if not any(ip.version == n.version and ip in n for n in networks)
    )
    return bad


def describe_constraints(ca: x509.Certificate) -> str:
    constraints = name_constraints(ca)
    if constraints is None:
        return "unconstrained"
    domains, networks = constraints
    return ", ".join([*domains, *(str(n) for n in networks)])
