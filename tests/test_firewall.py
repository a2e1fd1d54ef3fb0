"""The host firewall (`plinth/topology/firewall.py`, `operations/firewall.py`, `plinth
firewall`): what an operator checks before turning it on. Each listener admits exactly
the sources its flows give and no other port is open; SSH from the controllers comes
before anything else; VRRP only from the VIP's peers; nft itself accepts every host's
file; the model refuses a firewall that would lock the controller out; the same model
gives the same bytes; the rollback file the deploy saves loads back."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.context import ctx_host
from pyinfra.facts.files import Sha1File

from facts.firewall import FirewallState, FirewallTable
from operations import firewall as firewall_operation
from operations.firewall import FirewallInput, firewall_input, ssh_answers
from plinth.cli import main
from plinth.diagram_files import DOCUMENTED
from plinth.lab import topology as lab_topology
from plinth.model import Environment, ModelError, parse_environment
from plinth.render import sha1_text
from plinth.topology import flows as F
from plinth.topology.firewall import (
    DROP_LOG_PREFIX,
    egress_enforced,
    firewall_enforced,
    input_rules,
    output_rules,
    ruleset,
)
from plinth.topology.keepalived import vip_holders

LAB_MODELS = ("lab-small", "lab-full")


def lab_document(profile: lab_topology.Profile, **network: Any) -> dict[str, Any]:
    document = lab_topology.build_environment(
        profile, isolated=lab_topology.isolated_by_default(profile)
    )
    document["network"] = {**document["network"], **network}
    return document


def lab(profile: lab_topology.Profile, **network: Any) -> Environment:
    return parse_environment(lab_document(profile, **network), f"lab ({profile})")


def all_lab_rulesets() -> Iterator[tuple[str, str, str]]:
    """(model, host, ruleset) of every host of both labs, inbound only and with egress."""
    for profile in lab_topology.PROFILES:
        for egress in ("open", "enforce"):
            env = lab(profile, egress=egress)
            for host in env.hosts:
                yield f"lab-{profile}/{egress}", host.name, ruleset(env, host.name)


# ---- reading the rendered file back ----

RULE = re.compile(
    r"^\t\t(?:ip saddr (?P<sources>@\w+|\{ [^}]* \}) )?"
    r"(?:ip daddr (?P<daddr>\S+) )?"
    r"(?:(?P<proto>tcp|udp) dport (?P<port>\d+)(?:-(?P<port_end>\d+))?|ip protocol (?P<ipproto>\d+)"
    r"|icmp type echo-request) accept comment \"(?P<comment>[^\"]*)\"$"
)


def chains(text: str) -> dict[str, list[str]]:
    """The rule lines (tab-indented twice, no ``#`` lines) of each chain."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = re.match(r"^\tchain (\w+) \{$", line)
        if match:
            current = out.setdefault(match.group(1), [])
        elif line == "\t}":
            current = None
        elif current is not None and line.startswith("\t\t") and not line.startswith("\t\t#"):
            current.append(line)
    return out


def set_elements(text: str) -> dict[str, set[str]]:
    found = {}
    for name, body in re.findall(r"\tset (\w+) \{\n(.*?)\n\t\}", text, re.S):
        match = re.search(r"elements = \{ (.*) \}", body)
        found[name] = set(match.group(1).split(", ")) if match else set()
    return found


Key = tuple[str, int | None, str | None]
"""(protocol, port, destination address) of an admitted flow."""


def admitted(text: str) -> dict[Key, set[frozenset[str]]]:
    """Each (protocol, port, destination) the input chain admits -> the source sets of its
    rules (``@set`` expanded to its elements)."""
    sets = set_elements(text)
    out: dict[Key, set[frozenset[str]]] = {}
    for line in chains(text)["input"]:
        match = RULE.match(line)
        if match is None:
            continue
        sources = match["sources"]
        if sources is None:
            elements: frozenset[str] = frozenset({"any"})
        elif sources.startswith("@"):
            elements = frozenset(sets[sources[1:]])
        else:
            elements = frozenset(sources.strip("{} ").split(", "))
        if match["proto"]:
            key: Key = (match["proto"], int(match["port"]), match["daddr"])
        elif match["ipproto"]:
            key = ("vrrp", None, match["daddr"])
        else:
            key = ("icmp", None, match["daddr"])
        out.setdefault(key, set()).add(elements)
    return out


def expected(env: Environment, host: str) -> dict[Key, set[frozenset[str]]]:
    """What the flows say: each flow of ``host`` with sources -> its sources."""
    out: dict[Key, set[frozenset[str]]] = {}
    for flow in F.flows(env):
        if flow.host != host:
            continue
        sources = frozenset((*flow.sources.addresses, *flow.sources.networks))
        if not sources and flow.sources not in (F.controller(env), F.clients(env)):
            continue  # nobody may: no rule, a "#" line says so
        ssh = flow.protocol is F.Protocol.TCP and flow.port == env.ssh.port
        address = None if flow.protocol is F.Protocol.VRRP or ssh else flow.address
        key: Key = (str(flow.protocol), flow.port, address)
        out.setdefault(key, set()).add(sources)
    return out


@pytest.mark.parametrize("stem", LAB_MODELS)
def test_every_listener_admits_exactly_the_sources_of_its_flows_and_no_other_port(
    stem: str,
) -> None:
    env = DOCUMENTED[stem]()
    for host in env.hosts:
        text = ruleset(env, host.name)
        assert admitted(text) == expected(env, host.name), host.name
        # every rule line of the input chain is the fixed preamble, a flow's rule or the
        # log before the drop: nothing else is admitted
        for line in chains(text)["input"]:
            assert (
                RULE.match(line)
                or line.startswith("\t\ttype filter hook input")
                or line.startswith("\t\tct state ")
                or line.startswith('\t\tiif "lo" accept')
                or line.startswith("\t\ticmpv6 type { nd-")
                or line.startswith("\t\ticmp type destination-unreachable icmp code frag-needed")
                or line.startswith(
                    f'\t\tlimit rate 5/second burst 20 packets log prefix "{DROP_LOG_PREFIX}"'
                )
            ), line


def test_the_registry_and_haproxy_on_one_port_are_told_apart_by_address() -> None:
    """small lab: haproxy's 5000 on the PostgreSQL VIP is for the clients, the registry's
    5000 on the host's address only for the nginx hosts."""
    env = DOCUMENTED["lab-small"]()
    host = env.hosts[0]
    vip = env.vip_serving("postgresql", host.datacenter)
    assert vip is not None
    found = admitted(ruleset(env, host.name))
    clients = frozenset(str(n) for n in env.network.clients)
    assert clients in found[("tcp", 5000, str(vip.address))]
    assert clients not in found[("tcp", 5000, str(host.address))]


@pytest.mark.parametrize("stem", LAB_MODELS)
def test_ssh_from_the_controllers_comes_before_anything_else(stem: str) -> None:
    env = DOCUMENTED[stem]()
    for host in env.hosts:
        lines = chains(ruleset(env, host.name))["input"]
        accepts = [ln for ln in lines if " accept" in ln and not ln.startswith("\t\tct state ")]
        assert accepts[0].startswith('\t\tiif "lo" accept'), accepts[0]
        ssh = accepts[1]
        # at any of the host's addresses: the controller may dial hosts[].ssh_address
        assert ssh.startswith("\t\tip saddr @controllers tcp dport 22 accept "), ssh
        rules = input_rules(env, host.name)
        assert (rules[0].protocol, rules[0].port, rules[0].peer_set) == ("tcp", 22, "controllers")
        assert all(r.port != env.ssh.port or r.protocol != "tcp" for r in rules[1:])


def test_ssh_follows_the_models_ssh_port() -> None:
    document = lab_document("small")
    document["ssh"] = {**document["ssh"], "port": 2222}
    env = parse_environment(document)
    assert "ip saddr @controllers tcp dport 2222 accept " in ruleset(env, "dc1-n1")
    assert "tcp dport 22 " not in ruleset(env, "dc1-n1")


@pytest.mark.parametrize("stem", LAB_MODELS)
def test_vrrp_only_from_the_peers_of_the_hosts_vips(stem: str) -> None:
    env = DOCUMENTED[stem]()
    for host in env.hosts:
        vrrp = {
            sources
            for (proto, _, _), source_sets in admitted(ruleset(env, host.name)).items()
            if proto == "vrrp"
            for sources in source_sets
        }
        peers = {
            frozenset(str(h.address) for h in vip_holders(env, vip) if h.name != host.name)
            for vip in env.vips_in(host.datacenter)
            if host in vip_holders(env, vip)
        }
        assert vrrp == peers, host.name
        for sources in vrrp:
            # a VIP never leaves its DC: no peer of another DC may send its adverts
            assert {h.datacenter for h in env.hosts if str(h.address) in sources} == {
                host.datacenter
            }


def test_ipv6_is_dropped_but_neighbour_discovery_and_loopback() -> None:
    env = DOCUMENTED["lab-full"]()
    for host in env.hosts:
        for line in chains(ruleset(env, host.name))["input"]:
            if " accept" not in line or line.startswith(("\t\tct state", '\t\tiif "lo"')):
                continue
            # an IPv4 match (ip saddr/daddr/protocol, icmp) or ICMPv6 neighbour discovery
            assert line.startswith(("\t\tip ", "\t\ticmp type ", "\t\ticmpv6 type { nd-")), line


def test_drops_are_logged_rate_limited_before_the_policy_drop() -> None:
    env = lab("full", egress="enforce")
    text = ruleset(env, "dc1-app1")
    assert "type filter hook input priority filter; policy drop;" in text
    for chain in ("input", "output"):
        last = chains(text)[chain][-1]
        assert last.startswith("\t\tlimit rate ") and f'log prefix "{DROP_LOG_PREFIX}' in last


def test_every_rule_says_why_within_what_nft_keeps() -> None:
    env = DOCUMENTED["lab-full"]()
    for host in env.hosts:
        for rule in input_rules(env, host.name):
            assert rule.comment and len(rule.comment.encode()) <= 128
            assert '"' not in rule.comment
        text = ruleset(env, host.name)
        # the full reason is in the file above its rule
        for flow in F.flows(env):
            if flow.host == host.name:
                assert f"\t\t# {flow.reason}\n" in text


def test_a_flow_nobody_may_use_loads_no_rule_and_the_file_says_so() -> None:
    """small lab: no host's proxy leads to squid, so squid's port admits only the edge
    VIP check of its peers, at the host's own address; through the VIP, nobody."""
    env = DOCUMENTED["lab-small"]()
    edge = next(v for v in env.vips if "squid" in v.services)
    text = ruleset(env, "dc1-n1")
    squid = {key: sources for key, sources in admitted(text).items() if key[1] == 3128}
    assert list(squid) == [("tcp", 3128, "10.231.1.11")]
    assert ("tcp", 3128, str(edge.address)) not in squid
    assert "# no rule: nobody is to reach tcp dport 3128 at 10.231.1.11" in text


def test_only_plinths_table_is_replaced_never_the_whole_ruleset() -> None:
    env = DOCUMENTED["lab-small"]()
    text = ruleset(env, "dc1-n1")
    assert "flush ruleset" not in text
    statements = [ln for ln in text.splitlines() if ln and not ln.startswith(("#", "\t", "}"))]
    assert statements == ["table inet plinth", "delete table inet plinth", "table inet plinth {"]


# ---- egress ----


def test_egress_open_renders_no_output_chain() -> None:
    env = DOCUMENTED["lab-full"]()
    assert env.network.egress == "open" and not egress_enforced(env)
    assert "chain output" not in ruleset(env, "dc1-app1")
    assert output_rules(env, "dc1-app1") == []


def test_enforced_egress_of_a_non_edge_host_is_the_platform_its_squid_time_and_names() -> None:
    env = lab("full", egress="enforce")
    platform = {str(h.address) for h in env.hosts} | {str(v.address) for v in env.vips}
    for host in env.hosts:
        if "squid" in host.roles:
            continue
        rules = output_rules(env, host.name)
        anywhere = {(str(r.protocol), r.port) for r in rules if not r.peers}
        # NTP (Debian's pool, by name) and the resolvers (not in the model) by port only
        assert anywhere == {("udp", 123), ("udp", 53), ("tcp", 53)}, host.name
        for rule in rules:
            assert set(rule.peers) <= platform, (host.name, rule)
        squid_vip = next(v for v in env.vips_in(host.datacenter) if "squid" in v.services)
        assert any(
            r.port == env.components.squid.port and str(squid_vip.address) in r.peers for r in rules
        ), host.name


def test_enforced_egress_admits_the_package_path_dns_and_ntp_of_a_host_without_proxy() -> None:
    env = lab("small", egress="enforce")
    text = ruleset(env, "dc1-n1")
    output = chains(text)["output"]
    for port_match in (
        "tcp dport 80 ",
        "tcp dport 443 ",
        "udp dport 53 ",
        "tcp dport 53 ",
        "udp dport 123 ",
    ):
        assert any(ln.startswith(f"\t\t{port_match}") for ln in output), port_match
    assert 'oif "lo" accept' in text  # Docker's resolver, 127.0.0.11, is loopback


# ---- nft itself ----


def _nft() -> str:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not Path(nft).exists():
        pytest.skip("nft is not installed on this machine (apt-get install nftables)")
    probe = subprocess.run(
        [nft, "-c", "-f", "-"],
        input="table inet plinth_probe {\n\tchain c {\n\t\ttype filter hook input priority 0;\n"
        "\t}\n}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            "nft -c cannot talk to the kernel here (needs root/CAP_NET_ADMIN): "
            + probe.stderr.strip()
        )
    return nft


def test_every_hosts_ruleset_passes_nft_check(tmp_path: Path) -> None:
    nft = _nft()
    for model, host, text in all_lab_rulesets():
        path = tmp_path / f"{host}.nft"
        path.write_text(text)
        done = subprocess.run(
            [nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{model} {host}: {done.stderr}"


def test_nft_check_refuses_a_broken_ruleset(tmp_path: Path) -> None:
    nft = _nft()
    env = DOCUMENTED["lab-small"]()
    broken = ruleset(env, "dc1-n1").replace("tcp dport 22 ", "tcp dport twenty-two ", 1)
    path = tmp_path / "broken.nft"
    path.write_text(broken)
    done = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "twenty-two" in done.stderr


def _unshare_nft() -> list[str]:
    _nft()
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], check=False).returncode != 0:
        pytest.skip("no network namespace for this test (unshare -n needs root)")
    return [unshare, "-n", "sh", "-c"]


def test_the_rollback_file_the_deploy_saves_loads_back(tmp_path: Path) -> None:
    """In a fresh network namespace: load a host's rules, save them as the operation does
    (create, delete, the listing), load another ruleset over them, then the rollback file:
    the first rules are back. And with no table before, the rollback removes ours."""
    shell = _unshare_nft()
    env = DOCUMENTED["lab-full"]()
    first, second = tmp_path / "first.nft", tmp_path / "second.nft"
    first.write_text(ruleset(env, "dc1-db1"))
    second.write_text(ruleset(env, "dc1-edge1"))
    save = (
        "{ printf 'table inet plinth\\ndelete table inet plinth\\n'; "
        f"nft list table inet plinth 2>/dev/null || true; }} > {tmp_path}/rollback.nft"
    )
    script = (
        f"set -e; nft -f {first}; nft list table inet plinth > {tmp_path}/before.txt; {save}; "
        f"nft -f {second}; nft -f {tmp_path}/rollback.nft; "
        f"nft list table inet plinth > {tmp_path}/after.txt; "
        # no table: the rollback file deletes ours
        f"nft delete table inet plinth; {save}; nft -f {first}; nft -f {tmp_path}/rollback.nft; "
        "! nft list table inet plinth >/dev/null 2>&1"
    )
    done = subprocess.run([*shell, script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "before.txt").read_text() == (tmp_path / "after.txt").read_text()
    assert "10.231.1.11" in (tmp_path / "after.txt").read_text()


def test_loading_the_rules_leaves_other_tables_alone(tmp_path: Path) -> None:
    shell = _unshare_nft()
    env = DOCUMENTED["lab-small"]()
    rules = tmp_path / "plinth.nft"
    rules.write_text(ruleset(env, "dc1-n1"))
    script = (
        "set -e; nft add table ip docker_like; nft add chain ip docker_like c; "
        f"nft -f {rules}; nft -f {rules}; nft list table ip docker_like >/dev/null"
    )
    done = subprocess.run([*shell, script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


# ---- the model ----


def test_enforce_without_controllers_is_refused_naming_the_field() -> None:
    document = lab_document("small", controllers=[])
    with pytest.raises(ModelError) as refused:
        parse_environment(document, "lab.yaml")
    assert any(
        p.startswith("network.controllers: empty while network.firewall is enforce")
        for p in refused.value.problems
    ), refused.value.problems


def test_egress_enforce_needs_the_firewall() -> None:
    document = lab_document("small", firewall="off", egress="enforce")
    with pytest.raises(ModelError, match=r"network\.egress: enforce needs network\.firewall"):
        parse_environment(document, "lab.yaml")


def test_off_is_the_default_the_lab_enforces_inbound_and_the_example_both() -> None:
    document = lab_document("small")
    del document["network"]["firewall"], document["network"]["egress"]
    default = parse_environment(document)
    assert not firewall_enforced(default) and default.network.egress == "open"
    prod = DOCUMENTED["example-prod"]()
    assert firewall_enforced(prod) and egress_enforced(prod)
    for stem in LAB_MODELS:
        env = DOCUMENTED[stem]()
        assert firewall_enforced(env) and not egress_enforced(env), stem
        assert env.network.controllers


def test_the_same_model_gives_the_same_bytes_whatever_its_order() -> None:
    document = lab_document("full", egress="enforce")
    env = parse_environment(document)
    reordered = dict(
        document, hosts=list(reversed(document["hosts"])), vips=list(reversed(document["vips"]))
    )
    other = parse_environment(reordered)
    for host in env.hosts:
        assert ruleset(env, host.name) == ruleset(env, host.name)
        assert ruleset(env, host.name) == ruleset(other, host.name), host.name


# ---- the operation ----


class FakeHost:
    """Enough of a pyinfra host for the operation's body: facts in, noop recorded."""

    def __init__(self, facts: dict[type, Any]) -> None:
        self.facts = facts
        self.noops: list[str] = []
        self.current_op_hash = None
        self.print_prefix = "[fake] "

    def get_fact(self, fact: type, **kwargs: Any) -> Any:
        return self.facts[fact]

    def noop(self, text: str) -> None:
        self.noops.append(text)


def commands(
    spec: FirewallInput, live: str | None, state: FirewallState
) -> tuple[list[Any], FakeHost]:
    fake = FakeHost({Sha1File: live, FirewallTable: state})
    with ctx_host.use(fake):
        return list(firewall_operation.firewall_rules._inner(spec)), fake


LOADED = FirewallState(nft=True, loaded=True, rollback_pending=False)


def spec_for(host: str = "dc1-n1") -> FirewallInput:
    env = DOCUMENTED["lab-small"]()
    return firewall_input(env, next(h for h in env.hosts if h.name == host))


def test_an_unchanged_loaded_ruleset_is_a_noop() -> None:
    spec = spec_for()
    assert spec.ruleset is not None
    done, fake = commands(spec, sha1_text(spec.ruleset), LOADED)
    assert done == [] and fake.noops


def test_a_change_is_checked_armed_applied_probed_then_disarmed_and_kept() -> None:
    spec = spec_for()
    done, _ = commands(spec, "0" * 40, LOADED)
    text = [str(c) if isinstance(c, StringCommand) else type(c).__name__ for c in done]
    order = [
        next(i for i, t in enumerate(text) if t.startswith(pattern))
        for pattern in (
            "FileUploadCommand",
            "if ! out=$(nft -c -f",
            "{ printf 'table inet plinth",
            "systemd-run",
            "if ! out=$(nft -f /etc/nftables.d/plinth.nft.plinth-candidate",
            "FunctionCommand",
            "systemctl stop plinth-firewall-rollback.timer",
            "mv",
        )
    ]
    assert order == sorted(order), text
    assert isinstance(done[order[0]], FileUploadCommand)
    assert isinstance(done[order[5]], FunctionCommand)
    assert "--on-active=90" in text[order[3]]
    assert "flush ruleset" not in " ".join(text)


def test_a_table_gone_from_the_kernel_is_loaded_again() -> None:
    spec = spec_for()
    assert spec.ruleset is not None
    done, _ = commands(spec, sha1_text(spec.ruleset), FirewallState(True, False, False))
    assert any(isinstance(c, FunctionCommand) for c in done)


def test_a_pending_rollback_refuses_before_anything_changes() -> None:
    spec = spec_for()
    done, _ = commands(spec, "0" * 40, FirewallState(True, True, True))
    assert len(done) == 1 and "still pending" in str(done[0]) and "exit 1" in str(done[0])


def test_firewall_off_removes_plinths_table_only_when_there_is_one() -> None:
    env = lab("small", firewall="off")
    spec = firewall_input(env, env.hosts[0])
    assert spec.ruleset is None
    done, fake = commands(spec, None, FirewallState(False, False, False))
    assert done == [] and fake.noops
    done, _ = commands(spec, "0" * 40, LOADED)
    assert len(done) == 1 and "nft delete table inet plinth" in str(done[0])


@contextmanager
def server(banner: bytes) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(banner)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def test_the_ssh_probe_wants_a_new_connection_and_sshds_banner() -> None:
    with server(b"SSH-2.0-OpenSSH_9.2p1\r\n") as port:
        assert ssh_answers("127.0.0.1", port) is None
    with server(b"HTTP/1.1 400\r\n") as port:
        assert "no SSH banner" in (ssh_answers("127.0.0.1", port) or "")
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert ssh_answers("127.0.0.1", port, timeout=1) is not None


def test_firewall_fact() -> None:
    fact = FirewallTable()
    assert fact.process(["nft=1", "loaded=0", "rollback=1"]) == FirewallState(True, False, True)


# ---- the command line ----


def test_cli_prints_a_hosts_rules(project: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["firewall", "example-prod", "--host", "dc1-db1"])
    assert done.exit_code == 0, done.output
    assert "table inet plinth {" in done.stdout and "chain output {" in done.stdout
    assert "network.firewall is off" not in done.stderr
    path = project / "inventory" / "example-prod.yaml"
    path.write_text(
        path.read_text()
        .replace("firewall: enforce", "firewall: off")
        .replace("egress: enforce", "egress: open")
    )
    done = runner.invoke(main, ["firewall", "example-prod", "--host", "dc1-db1"])
    assert done.exit_code == 0 and "network.firewall is off" in done.stderr
    unknown = runner.invoke(main, ["firewall", "example-prod", "--host", "nosuch"])
    assert unknown.exit_code != 0 and "not a host of" in unknown.output


def test_the_lab_firewall_in_docs_security_md_is_current() -> None:
    from plinth import flows_doc

    committed = flows_doc.SECURITY_MD.read_text()
    assert committed == flows_doc.rendered(committed), "run: python -m plinth.flows_doc"
    assert "\tchain input {\n\t\ttype filter hook input priority filter; policy drop;" in committed


class ProbedHost:
    """What the probe's callback uses of a pyinfra host: its name and its log."""

    name = "dc1-n1"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str, log_func: Any = None) -> None:
        self.lines.append(message)

    def log_styled(self, message: str, **kwargs: Any) -> None:
        self.lines.append(message)


def probe_command(address: str, port: int) -> FunctionCommand:
    spec = FirewallInput(host="dc1-n1", ruleset="", ssh_address=address, ssh_port=port)
    done, _ = commands(spec, "0" * 40, LOADED)
    probe = next(c for c in done if isinstance(c, FunctionCommand))
    # the probe dials what the spec says, so point it at a local server
    return FunctionCommand(probe.function, (spec,), {})


def test_the_probe_runs_on_the_controller_and_fails_the_host_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As pyinfra runs it: ``FunctionCommand.execute`` passes state and host only to a
    callback whose parameters are named so."""
    monkeypatch.setattr("operations.firewall.time.sleep", lambda _: None)
    with server(b"SSH-2.0-OpenSSH_9.2p1\r\n") as port:
        fake = ProbedHost()
        assert probe_command("127.0.0.1", port).execute(None, fake, {}) is True  # type: ignore[arg-type]
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    fake = ProbedHost()
    assert probe_command("127.0.0.1", port).execute(None, fake, {}) is False  # type: ignore[arg-type]
    assert "dc1-n1: the new firewall rules cut SSH" in fake.lines[-1]
    assert "plinth-firewall-rollback" in fake.lines[-1]


def test_a_bare_off_in_yaml_is_the_word_off() -> None:
    """PyYAML reads ``firewall: off`` as false."""
    document = lab_document("small")
    document["network"] = yaml.safe_load("{controllers: [10.231.1.1/32], firewall: off}")
    assert parse_environment(document).network.firewall == "off"
