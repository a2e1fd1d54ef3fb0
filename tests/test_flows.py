"""What can talk to what (`plinth/topology/flows.py`, `plinth flows`): every listener the
rendered configurations open is covered, each flow's sources are who the deploy makes
dial it, the JSON round-trips, and a model edit moves the flows with it."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from operations.airflow.render import render_config as render_airflow
from operations.airflow.settings import airflow_config
from operations.etcd.settings import etcd_input
from operations.haproxy import haproxy_input
from operations.keepalived import keepalived_input
from operations.nginx import nginx_input
from operations.patroni.settings import SECRET_NAMES, patroni_input
from operations.patroni.settings import render as render_patroni
from operations.rabbitmq.settings import rabbitmq_input
from operations.redis.settings import command_line
from operations.registry import RegistrySecrets, registry_input
from operations.registry import render as render_registry
from operations.squid import render_config as render_squid
from operations.squid import squid_input
from plinth.certificates import host_certificates
from plinth.cli import main
from plinth.context import HostContext
from plinth.diagram_files import DOCUMENTED
from plinth.model import AIRFLOW_ROLES, Environment, Host, Role, parse_environment
from plinth.topology import flows as F
from plinth.topology.airflow import execution_api_server
from plinth.topology.keepalived import vip_holders
from plinth.topology.redis import redis_input

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"
MODELS = ("example-prod", "lab-small", "lab-full")
AIRFLOW_VHOST = {
    "name": "airflow",
    "port": 8444,
    "upstream_role": "airflow-api",
    "upstream_port": 8443,
}

DC2_HOSTS = ("dc2-db1", "dc2-db2", "dc2-db3", "dc2-edge1", "dc2-edge2", "dc2-app1", "dc2-app2",
             "dc2-app3")  # fmt: skip

# (host, protocol, port, bound address: an address or "*")
Socket = tuple[str, F.Protocol, int | None, str]


def model(stem: str) -> Environment:
    return DOCUMENTED[stem]()


def prod_document() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def prod_with_airflow() -> Environment:
    """example-prod running Airflow's services (a worker-only host, dc1-app3, among them)."""
    data = prod_document()
    components = data.setdefault("components", {})
    components["airflow"] = {"services": True}
    registry = {
        "name": "registry",
        "port": 5443,
        "upstream_role": "registry",
        "upstream_port": 5000,
        "write_identities": ["registry-push"],
        "max_body_size": "0",
    }
    components["nginx"] = {"virtual_hosts": [registry, AIRFLOW_VHOST]}
    return parse_environment(data, EXAMPLE)


# ---- the listeners, read back from the rendered configurations ----


def _address_port(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    return ("*" if address in ("", "0.0.0.0") else address), int(port)


def rendered_sockets(env: Environment, host: Host) -> set[Socket]:
    """What the configurations the deploy renders for ``host`` listen on."""
    context = HostContext(env, EXAMPLE, host, env.datacenters_by_name[host.datacenter])
    certs = {c.service: c for c in host_certificates(env, host)}
    tcp = F.Protocol.TCP
    found: set[Socket] = set()

    def add(address: str, port: int) -> None:
        found.add((host.name, tcp, port, address))

    roles = host.roles
    if Role.ETCD in roles:
        text = etcd_input(context, certs["etcd"]).render()
        for url in re.findall(r'ETCD_LISTEN_\w+_URLS="https://([^"]+)"', text):
            add(*_address_port(url))
    if Role.POSTGRESQL in roles:
        patroni = patroni_input(
            context, certs["patroni"], certs["pg-replicator"], certs["pg-rewind"]
        )
        config = yaml.safe_load(render_patroni(patroni, dict.fromkeys(SECRET_NAMES, "x")))
        for section in ("restapi", "postgresql"):
            add(*_address_port(config[section]["listen"]))
    if Role.HAPROXY in roles:
        for bind in re.findall(
            r"^\s+bind (\S+)$", haproxy_input(context, certs["haproxy"]).render(), re.M
        ):
            add(*_address_port(bind))
    if Role.KEEPALIVED in roles:
        text = keepalived_input(context).render("eth0")
        for instance in re.findall(r"^vrrp_instance (\S+) \{", text, re.M):
            found.add((host.name, F.Protocol.VRRP, None, instance))
    if Role.NGINX in roles:
        text = nginx_input(context, certs["nginx"], certs["nginx-upstream"]).render()
        for port in re.findall(r"^\s+listen (\d+) ssl;", text, re.M):
            add("*", int(port))
    if Role.SQUID in roles:
        for port in re.findall(r"^http_port (\d+)$", render_squid(squid_input(env, host)), re.M):
            add("*", int(port))
    if Role.REGISTRY in roles:
        text = render_registry(registry_input(context, certs["registry"]), RegistrySecrets("x"))
        add(*_address_port(yaml.safe_load(text)["http"]["addr"]))
    if any(r in roles for r in AIRFLOW_ROLES) and env.components.airflow.services:
        airflow = airflow_config(context, certs)
        # the api-server's unit runs on the active site only
        if airflow.active and Role.AIRFLOW_API in roles:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(render_airflow(airflow))
            add(*_address_port(f"{parser['api']['host']}:{parser['api']['port']}"))
    if Role.REDIS in roles or Role.SENTINEL in roles:
        redis = redis_input(context, certs.get("redis"), certs.get("redis-sentinel"))
        units = []
        if redis.redis_tls is not None:
            units.append(command_line(redis, redis.redis_tls, redis.settings.port, data_node=True))
        # a following DC's Sentinels are stopped (operations/redis/node.py)
        if redis.sentinel_tls is not None and redis.upstream is None:
            units.append(
                command_line(
                    redis, redis.sentinel_tls, redis.settings.sentinel_port, data_node=False
                )
            )
        for line in units:
            add(re.findall(r"--bind (\S+)", line)[0], int(re.findall(r"--tls-port (\d+)", line)[0]))
    if Role.RABBITMQ in roles:
        rabbitmq = rabbitmq_input(context, certs["rabbitmq"], certs["rabbitmq-client"])
        text = rabbitmq.render_config()
        add("*", int(re.findall(r"^listeners\.ssl\.default = (\d+)$", text, re.M)[0]))
        # The management listener's port sits with its TLS options in advanced.config.
        advanced = rabbitmq.render_advanced_config()
        add("*", int(re.findall(r"^\s*\{port, (\d+)\},$", advanced, re.M)[0]))
        # Erlang's distribution listens on every address
        add("*", int(re.findall(r"^DIST_PORT=(\d+)$", rabbitmq.render_env(), re.M)[0]))
    return found


def model_sockets(env: Environment) -> set[Socket]:
    """The listeners of the flows module, as ``rendered_sockets`` spells them (a VRRP
    listener by its keepalived instance name); SSH, ICMP and epmd are rendered by nobody."""
    out: set[Socket] = set()
    for item in F.listeners(env):
        if item.name in ("SSH", "echo", "epmd") or item.transient:
            continue  # sshd's, Erlang's and the CLI tools' own: rendered by nobody
        if item.protocol is F.Protocol.VRRP:
            vip = item.name.removeprefix("VRRP ")
            out.add((item.host, item.protocol, None, f"{vip}_{item.datacenter}"))
        else:
            out.add((item.host, item.protocol, item.port, item.bind))
    return out


@pytest.mark.parametrize("stem", MODELS)
def test_every_rendered_listener_is_a_listener_of_the_flows_and_nothing_else(stem: str) -> None:
    env = model(stem)
    rendered = set().union(*(rendered_sockets(env, h) for h in env.hosts))
    assert rendered, "nothing rendered"
    assert rendered == model_sockets(env)


def test_airflow_api_listener_follows_the_rendered_configuration() -> None:
    env = prod_with_airflow()
    rendered = set().union(*(rendered_sockets(env, h) for h in env.hosts))
    assert rendered == model_sockets(env)
    api = {(s[0], s[2]) for s in rendered if s[2] == env.components.airflow.api_port}
    assert api == {("dc1-app1", 8443), ("dc1-app2", 8443)}  # dc2 keeps its units stopped


@pytest.mark.parametrize("stem", MODELS)
def test_every_listener_has_a_flow_and_every_flow_a_listener(stem: str) -> None:
    env = model(stem)
    items = F.listeners(env)
    flows = F.flows(env)
    reached = {f.listener for f in flows}
    assert set(items) <= reached
    # nginx proxying to a daemon the model does not run is a flow to nothing: shown so
    nothing = {(i.host, i.port) for i in reached - set(items)}
    assert all(i.name.endswith("not running") for i in reached - set(items))
    if stem == "lab-full":  # the standby site's nginx routes to its stopped api-servers
        assert nothing == {("dc2-app1", 8443), ("dc2-app2", 8443)}
    else:
        assert nothing == set()
    # SSH, epmd (and every other port) named once per host and address
    keys = [(i.host, i.protocol, i.port, i.bind, i.name) for i in items]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("stem", MODELS)
def test_ssh_and_epmd_are_flows_too(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    ssh = [f for f in flows if f.port == env.ssh.port and f.component == "base"]
    assert {f.host for f in ssh} == {h.name for h in env.hosts}
    assert all(f.sources.networks == tuple(map(str, env.network.controllers)) for f in ssh)
    epmd = {f.host for f in flows if f.port == F.EPMD_PORT}
    assert epmd == {h.name for h in env.hosts_with(Role.RABBITMQ)}


# ---- who may reach what ----


def sources_of(flows: list[F.Flow], host: str, port: int | None, **match: Any) -> set[str]:
    """Every host name and network that may reach ``port`` on ``host``."""
    found: set[str] = set()
    for flow in flows:
        if flow.host != host or flow.port != port:
            continue
        if any(getattr(flow.listener, k) != v for k, v in match.items()):
            continue
        found |= set(flow.sources.hosts) | set(flow.sources.networks)
    return found


def names(hosts: list[Host], but: str) -> set[str]:
    return {h.name for h in hosts if h.name != but}


@pytest.mark.parametrize("stem", MODELS)
def test_vrrp_only_from_the_vips_peers(stem: str) -> None:
    env = model(stem)
    vrrp = [f for f in F.flows(env) if f.protocol is F.Protocol.VRRP]
    assert vrrp
    for vip in env.vips:
        holders = vip_holders(env, vip)
        mine = [f for f in vrrp if f.listener.name == f"VRRP {vip.name}"
                and f.listener.datacenter == vip.datacenter]  # fmt: skip
        assert {f.host for f in mine} == {h.name for h in holders}
        for flow in mine:
            assert set(flow.sources.hosts) == names(holders, flow.host)
            assert flow.sources.networks == ()
            assert flow.kind is F.FlowKind.PEER


@pytest.mark.parametrize("stem", MODELS)
def test_erlang_distribution_and_epmd_only_from_rabbitmq_peers(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    for host in env.hosts_with(Role.RABBITMQ):
        peers = names(env.hosts_with(Role.RABBITMQ, host.datacenter), host.name)
        for port in (env.components.rabbitmq.distribution_port, F.EPMD_PORT):
            assert sources_of(flows, host.name, port) == peers


@pytest.mark.parametrize("stem", MODELS)
def test_etcd_peer_port_only_from_etcd_members(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    for host in env.hosts_with(Role.ETCD):
        members = names(env.hosts_with(Role.ETCD, host.datacenter), host.name)
        assert sources_of(flows, host.name, env.components.etcd.peer_port) == members


@pytest.mark.parametrize("stem", MODELS)
def test_patroni_api_from_members_haproxy_and_the_controller(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    controller = {str(n) for n in env.network.controllers}
    assert controller
    for host in env.hosts_with(Role.POSTGRESQL):
        dc = host.datacenter
        expected = names(env.hosts_with(Role.POSTGRESQL, dc), host.name)
        expected |= names(env.hosts_with(Role.HAPROXY, dc), host.name)
        port = env.components.patroni.rest_api_port
        assert sources_of(flows, host.name, port) == expected | controller


@pytest.mark.parametrize("stem", MODELS)
def test_registry_only_from_nginx_hosts(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    port = env.components.registry.port
    for host in env.hosts_with(Role.REGISTRY):
        nginx = names(env.hosts_with(Role.NGINX, host.datacenter), host.name)
        assert sources_of(flows, host.name, port, component="registry") == nginx


@pytest.mark.parametrize("stem", ["lab-small", "lab-full"])
def test_airflow_api_only_from_nginx_hosts_where_every_airflow_host_serves_it(stem: str) -> None:
    env = model(stem)
    flows = F.flows(env)
    port = env.components.airflow.api_port
    served = [f for f in flows if f.port == port and f.component == "airflow"]
    assert served
    for host in {f.host for f in served}:
        dc = env.hosts[[h.name for h in env.hosts].index(host)].datacenter
        assert sources_of(flows, host, port) == names(env.hosts_with(Role.NGINX, dc), host)


def test_airflow_api_from_nginx_and_the_workers_whose_execution_api_it_is() -> None:
    env = prod_with_airflow()
    flows = F.flows(env)
    port = env.components.airflow.api_port
    app3 = next(h for h in env.hosts if h.name == "dc1-app3")  # airflow-worker only
    chosen = execution_api_server(env, app3).name
    nginx = names(env.hosts_with(Role.NGINX, "dc1"), "")
    assert sources_of(flows, chosen, port) == nginx | {"dc1-app3"}
    other = ({"dc1-app1", "dc1-app2"} - {chosen}).pop()
    assert sources_of(flows, other, port) == nginx
    # no client network and no host of the other DC reaches an api-server
    assert not any(f.sources.networks for f in flows if f.port == port and f.host == chosen)


def test_standby_site_runs_no_airflow_and_no_sentinel_so_nobody_reaches_them() -> None:
    env = prod_with_airflow()
    items = F.listeners(env)
    dc2 = [i for i in items if i.datacenter == "dc2"]
    assert not [i for i in dc2 if i.component == "airflow"]
    assert not [i for i in dc2 if i.name == "Sentinel"]
    # the active site's Sentinels watch the following site's nodes, across sites
    flows = F.flows(env)
    sentinels = {h.name for h in env.hosts_with(Role.SENTINEL, "dc1")}
    assert sentinels <= sources_of(flows, "dc2-db1", env.components.redis.port)


def test_the_standby_cluster_replicates_through_the_active_vip_only() -> None:
    env = model("example-prod")
    flows = F.flows(env)
    primary = env.components.haproxy.primary_port
    cross = [f for f in flows if f.kind is F.FlowKind.CROSS_SITE and f.port == primary]
    assert {f.host for f in cross} == {"dc1-edge1", "dc1-edge2"}
    assert {f.address for f in cross} == {"10.40.1.100"}
    assert {frozenset(f.sources.hosts) for f in cross} == {
        frozenset({"dc2-db1", "dc2-db2", "dc2-db3"})
    }


def test_one_port_twice_on_a_host_is_told_apart_by_address() -> None:
    """In the small lab haproxy's 5000 (on the VIP) and the registry's 5000 (on the host's
    own address) share a host: each flow reaches its own listener."""
    env = model("lab-small")
    flows = [f for f in F.flows(env) if f.host == "dc1-n1" and f.port == 5000]
    by_component = {f.component: {x.address for x in flows if x.component == f.component}
                    for f in flows}  # fmt: skip
    assert by_component == {"haproxy": {"10.231.1.100"}, "registry": {"10.231.1.11"}}


def test_flows_without_sources_are_kept() -> None:
    data = prod_document()
    del data["network"]
    env = parse_environment(data)
    flows = F.flows(env)
    ssh = [f for f in flows if f.port == env.ssh.port]
    assert len(ssh) == len(env.hosts) and all(f.sources.empty for f in ssh)
    text = F.render_text(F.to_json(env))
    assert "the controller (network.controllers): nobody" in text
    # the small lab's hosts go direct: nobody uses its squid, which is still shown
    small = model("lab-small")
    squid = [f for f in F.flows(small) if f.component == "squid" and f.kind is F.FlowKind.EGRESS]
    assert squid and all(f.sources.empty for f in squid)


# ---- egress ----


def platform_addresses(env: Environment) -> set[str]:
    return {str(h.address) for h in env.hosts} | {str(v.address) for v in env.vips}


def test_non_edge_hosts_reach_the_platform_their_squid_and_time_only() -> None:
    env = model("example-prod")
    out = F.egress(env)
    edge = {h.name for h in env.hosts_with(Role.SQUID)}
    platform = platform_addresses(env)
    for item in out:
        if item.host in edge:
            continue
        if item.external:
            assert (item.protocol, item.port) == (F.Protocol.UDP, F.NTP_PORT), item
            assert item.destinations == tuple(env.base.ntp_servers)
        else:
            assert set(item.destinations) <= platform, item
    db1 = {(e.port, e.destinations) for e in out if e.host == "dc1-db1" and e.component == "squid"}
    assert db1 == {(3128, ("10.40.1.101",)), (3128, ("10.40.1.21",)), (3128, ("10.40.1.22",))}


def test_edge_hosts_reach_the_declared_sources_and_resolvers_are_not_declared() -> None:
    env = model("example-prod")
    out = [e for e in F.egress(env) if e.host == "dc1-edge1" and e.external]
    web = {e.port: e.destinations for e in out if e.component == "squid"}
    assert web == {
        80: ("deb.debian.org", "pypi.org", "files.pythonhosted.org"),
        443: ("deb.debian.org", "pypi.org", "files.pythonhosted.org"),
    }
    dns = [e for e in out if e.port == F.DNS_PORT]
    assert dns and all(e.destinations == () for e in dns)


def test_platform_egress_is_the_inbound_flows_turned_around() -> None:
    env = model("lab-full")
    flows = F.flows(env)
    out = F.egress(env, flows)
    for flow in flows:
        for source in flow.sources.hosts:
            assert any(
                e.host == source and e.port == flow.port and e.destinations == (flow.address,)
                for e in out
            ), (source, flow)


# ---- JSON, the command, a model edit ----


@pytest.mark.parametrize("stem", MODELS)
def test_json_round_trips(stem: str) -> None:
    env = model(stem)
    data = json.loads(json.dumps(F.to_json(env)))
    flows = F.flows(env)
    assert [F.flow_from_json(f) for f in data["inbound"]] == flows
    assert [F.egress_from_json(e) for e in data["egress"]] == F.egress(env, flows)


def test_cli_prints_the_table_and_the_json(project: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["flows", "example-prod", "--dc", "dc2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("inbound flows of example-prod, datacenter dc2")
    assert (
        "| dc2-db1 | 10.40.2.11 2380/tcp | etcd members of dc2: dc2-db2, dc2-db3 |" in result.output
    )
    rows = [line for line in result.output.splitlines() if line.startswith("| dc")]
    assert rows and {row.split(" | ")[0] for row in rows} <= {f"| {h}" for h in DC2_HOSTS}
    result = runner.invoke(main, ["flows", "example-prod", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == F.to_json(model("example-prod"))
    result = runner.invoke(main, ["flows", "example-prod", "--dc", "dc9"])
    assert result.exit_code == 1
    assert "--dc dc9: not a datacenter of example-prod (dc1, dc2)" in result.output


def test_adding_a_host_to_a_role_changes_the_flows() -> None:
    data = prod_document()
    data["hosts"].append(
        {"name": "dc1-edge3", "address": "10.40.1.23", "datacenter": "dc1",
         "roles": ["haproxy", "keepalived"]}
    )  # fmt: skip
    before = F.flows(model("example-prod"))
    after = F.flows(parse_environment(data))
    rest = 8008
    assert "dc1-edge3" not in sources_of(before, "dc1-db1", rest)
    assert "dc1-edge3" in sources_of(after, "dc1-db1", rest)
    assert "dc1-edge3" in sources_of(after, "dc1-db1", 5432)
    # it holds the PostgreSQL VIP (haproxy) but not the edge one (no nginx, no squid)
    vrrp_pg = sources_of(after, "dc1-edge1", None, name="VRRP pg")
    vrrp_edge = sources_of(after, "dc1-edge1", None, name="VRRP edge")
    assert vrrp_pg == {"dc1-edge2", "dc1-edge3"} and vrrp_edge == {"dc1-edge2"}
    assert {f.port for f in after if f.host == "dc1-edge3" and f.component == "haproxy"} == {
        5000,
        5001,
    }
    # and nothing else moved: every flow of before is still there but for its sources
    key = [(f.host, f.port, f.address, f.reason) for f in before]
    assert key == [(f.host, f.port, f.address, f.reason) for f in after if f.host != "dc1-edge3"]


def test_the_lab_table_in_docs_security_md_is_current() -> None:
    from plinth import flows_doc

    committed = flows_doc.SECURITY_MD.read_text()
    assert committed == flows_doc.rendered(committed), "run: python -m plinth.flows_doc"
    assert "| dc1-n1 | 10.231.1.11 2380/tcp |" in committed
