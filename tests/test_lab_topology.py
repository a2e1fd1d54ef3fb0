"""The lab's topology: pure data, no Docker."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from plinth.lab import topology as topo
from plinth.model import NginxSettings, Role, parse_environment


@pytest.mark.parametrize("profile", topo.PROFILES)
def test_profiles_are_valid_environments(profile: topo.Profile) -> None:
    data = topo.build_environment(profile)
    # Through YAML, as `lab up` writes it.
    env = parse_environment(yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    assert env.name == "lab"
    assert env.kind == "lab"
    assert env.ssh.strict_host_key_checking == "yes"
    assert env.ssh.key == "../.lab/ssh/id_ed25519"
    assert env.ssh.known_hosts == "../.lab/ssh/known_hosts"


def test_small_profile_shape() -> None:
    env = parse_environment(topo.build_environment("small"))
    assert [dc.name for dc in env.datacenters] == ["dc1"]
    assert [h.name for h in env.hosts] == ["dc1-n1", "dc1-n2", "dc1-n3"]
    assert [str(h.address) for h in env.hosts] == ["10.231.1.11", "10.231.1.12", "10.231.1.13"]
    for host in env.hosts:
        assert set(host.roles) == set(Role)
    assert {(v.name, str(v.address), v.router_id) for v in env.vips} == {
        ("pg", "10.231.1.100", 51),
        ("edge", "10.231.1.101", 52),
    }
    assert env.datacenters[0].inter_dc_gateway is None  # no router in small
    assert topo.inter_dc_routes(env) == {}


def test_full_profile_shape() -> None:
    env = parse_environment(topo.build_environment("full"))
    assert [dc.name for dc in env.datacenters] == ["dc1", "dc2"]
    for dc in env.datacenters:
        assert dc.domain == f"{dc.name}.lab.plinth.internal"
        assert dc.inter_dc_gateway == topo.router_address(dc.name)
        assert str(dc.inter_dc_gateway).endswith(".254")
        names = {h.name: h for h in env.hosts_in(dc.name)}
        assert sorted(names) == sorted(
            [f"{dc.name}-db{i}" for i in (1, 2, 3)]
            + [f"{dc.name}-edge{i}" for i in (1, 2)]
            + [f"{dc.name}-app{i}" for i in (1, 2)]
        )
        assert set(names[f"{dc.name}-db1"].roles) == set(topo.PERSISTENCE_ROLES)
        assert set(names[f"{dc.name}-edge2"].roles) == set(topo.EDGE_ROLES)
        app_roles = set(names[f"{dc.name}-app1"].roles)
        assert Role.REGISTRY in app_roles
        assert {r for r in Role if r.value.startswith("airflow-")} <= app_roles
        assert str(names[f"{dc.name}-db3"].address).endswith(".13")
        assert str(names[f"{dc.name}-edge1"].address).endswith(".21")
        assert str(names[f"{dc.name}-app2"].address).endswith(".32")
        vips = {v.router_id: v for v in env.vips_in(dc.name)}
        assert sorted(vips) == [51, 52]
        assert vips[51].services == ("postgresql",)
        assert vips[52].services == ("registry", "airflow", "squid")
    # Tiers are apart: no host carries persistence and stateless roles together.
    for host in env.hosts:
        roles = set(host.roles)
        assert not (roles & set(topo.PERSISTENCE_ROLES) and roles & set(topo.STATELESS_ROLES))


def test_every_role_is_placed_in_full() -> None:
    env = parse_environment(topo.build_environment("full"))
    for dc in env.datacenters:
        for role in Role:
            assert env.hosts_with(role, dc.name), f"{role} missing in {dc.name}"


@pytest.mark.parametrize("profile", topo.PROFILES)
def test_reserved_addresses_are_free(profile: topo.Profile) -> None:
    env = parse_environment(topo.build_environment(profile))
    used = [h.address for h in env.hosts] + [v.address for v in env.vips]
    assert len(used) == len(set(used))
    for dc in env.datacenters:
        assert topo.docker_gateway(dc.name) not in used
        assert topo.router_address(dc.name) not in used
        assert topo.router_address(dc.name) in dc.subnet


def test_inter_dc_routes_go_through_the_local_router() -> None:
    env = parse_environment(topo.build_environment("full"))
    routes = topo.inter_dc_routes(env)
    assert set(routes) == {h.name for h in env.hosts}
    [route] = routes["dc1-db1"]
    assert route.destination == ipaddress.IPv4Network("10.231.2.0/24")
    assert route.via == ipaddress.IPv4Address("10.231.1.254")
    [route] = routes["dc2-app2"]
    assert route.destination == ipaddress.IPv4Network("10.231.1.0/24")
    assert route.via == ipaddress.IPv4Address("10.231.2.254")


def test_mirror_sets_package_sources() -> None:
    data = topo.build_environment("small", mirror="http://mirror.example/debian/")
    env = parse_environment(data)
    assert env.package_sources.apt_mirror == "http://mirror.example/debian"
    assert env.package_sources.apt_security_mirror == "http://mirror.example/debian-security"
    assert topo.build_environment("small")["package_sources"] == {}


def test_unknown_profile() -> None:
    with pytest.raises(ValueError, match="unknown lab profile"):
        topo.build_environment("huge")  # type: ignore[arg-type]


def test_memory_limits() -> None:
    assert topo.memory_limit(list(Role)) == topo.MEMORY_SMALL_NODE
    assert topo.memory_limit(topo.PERSISTENCE_ROLES) == topo.MEMORY_PERSISTENCE
    assert topo.memory_limit(topo.EDGE_ROLES) == topo.MEMORY_EDGE
    assert topo.memory_limit(["registry", "airflow-worker"]) == topo.MEMORY_STATELESS


def test_subnet_conflicts() -> None:
    ours = [topo.DATACENTERS["dc1"], topo.DATACENTERS["dc2"]]
    existing = {
        "Docker network 'bridge'": [ipaddress.IPv4Network("172.17.0.0/16")],
        "Docker network 'vpn'": [ipaddress.IPv4Network("10.231.0.0/16")],
        "route via eth0": [ipaddress.IPv4Network("0.0.0.0/0")],  # default route: ignored
    }
    problems = topo.subnet_conflicts(ours, existing)
    assert problems == [
        "10.231.1.0/24 overlaps 10.231.0.0/16 of Docker network 'vpn'",
        "10.231.2.0/24 overlaps 10.231.0.0/16 of Docker network 'vpn'",
    ]
    assert topo.subnet_conflicts(ours, {"x": [ipaddress.IPv4Network("10.232.0.0/16")]}) == []


def test_names() -> None:
    assert topo.network_name("dc2") == "plinth-lab-dc2"
    assert topo.container_name("dc1-n1") == "plinth-lab-dc1-n1"
    assert topo.security_mirror("http://deb.debian.org/debian") == (
        "http://deb.debian.org/debian-security"
    )


# ---- engine decisions (no Docker: the ping is replaced) ----


def test_engine_with_unanswering_docker_host_is_not_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plinth.lab import LabError, engine

    monkeypatch.setattr(engine, "_try_client", lambda timeout=10: None)
    monkeypatch.setattr(engine, "_start_dockerd", lambda: pytest.fail("must not start"))
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.9.9.9:2375")
    with pytest.raises(LabError, match=r"DOCKER_HOST=tcp://10\.9\.9\.9:2375"):
        engine.ensure_engine()


def test_engine_not_started_when_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from plinth.lab import LabError, engine

    monkeypatch.setattr(engine, "_try_client", lambda timeout=10: None)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with pytest.raises(LabError, match=r"no Docker engine answers on unix:///var/run/docker\.sock"):
        engine.ensure_engine(start=False)


def test_answering_engine_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from plinth.lab import engine

    sentinel = object()
    monkeypatch.setattr(engine, "_try_client", lambda timeout=10: sentinel)
    monkeypatch.setattr(engine, "_start_dockerd", lambda: pytest.fail("must not start"))
    assert engine.ensure_engine() is sentinel


def test_extra_ca_bundle_is_passed_to_the_hosts(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    data = topo.build_environment("small", extra_ca_bundle=bundle)
    env = parse_environment(data)
    assert env.package_sources.extra_ca_bundle == str(bundle)


def test_isolated_full_lab_installs_through_each_dcs_squid() -> None:
    assert topo.isolated_by_default("full") and not topo.isolated_by_default("small")
    data = topo.build_environment("full", mirror="http://mirror.example/debian", isolated=True)
    env = parse_environment(yaml.safe_load(yaml.safe_dump(data, sort_keys=False)))
    for dc in env.datacenters:
        sources = env.package_sources_for(dc.name)
        assert sources.http_proxy == f"http://edge.{dc.name}.lab.plinth.internal:3128"
        # The DC's sources keep the environment's mirror.
        assert sources.apt_mirror == "http://mirror.example/debian"
        edge = next(v for v in env.vips_in(dc.name) if v.name == "edge")
        assert "squid" in edge.services
    assert topo.egress_hosts(env) == ["dc1-edge1", "dc1-edge2", "dc2-edge1", "dc2-edge2"]
    assert not topo.EGRESS_NETWORK.overlaps(topo.DATACENTERS["dc1"])
    assert not topo.EGRESS_NETWORK.overlaps(topo.DATACENTERS["dc2"])


def test_connected_labs_have_no_proxy() -> None:
    for profile in topo.PROFILES:
        env = parse_environment(topo.build_environment(profile))
        for dc in env.datacenters:
            assert dc.package_sources is None
            assert env.package_sources_for(dc.name).http_proxy is None


def test_bridge_rules_script_accepts_only_frames_staying_on_a_dc_bridge() -> None:
    from plinth.lab import network

    script = network.bridge_rules_script(["plab-dc1", "plab-dc2"])
    assert (
        "$ipt -w -I DOCKER-USER -i plab-dc1 -o plab-dc1 -m comment --comment plinth-lab -j ACCEPT"
        in script
    )
    assert "-i plab-dc2 -o plab-dc2" in script
    # Earlier rules of ours are removed first (idempotent), and only ours.
    assert script.index("-D ") < script.index("-I DOCKER-USER")
    assert 'grep -e "--comment plinth-lab"' in script
    removal = network.bridge_rules_script([], remove_only=True)
    assert "-I DOCKER-USER" not in removal and "-D " in removal


@pytest.mark.parametrize("profile", topo.PROFILES)
def test_both_labs_run_airflows_services_behind_an_nginx_virtual_host(
    profile: topo.Profile,
) -> None:
    env = parse_environment(topo.build_environment(profile))
    assert env.components.airflow.services
    vhosts = {v.name: v for v in env.components.nginx.virtual_hosts}
    assert set(vhosts) == {"registry", "airflow"}
    assert vhosts["airflow"].upstream_role == Role.AIRFLOW_API
    assert vhosts["airflow"].upstream_port == env.components.airflow.api_port
    # the registry's entry is the model's default, unchanged
    assert vhosts["registry"] == NginxSettings().virtual_hosts[0]


def test_full_lab_runs_airflow_in_dc1_and_keeps_dc2_as_the_standby_site() -> None:
    env = parse_environment(topo.build_environment("full"))
    assert env.active_site == "dc1"
    for dc in ("dc1", "dc2"):
        assert len(env.hosts_with(Role.AIRFLOW_SCHEDULER, dc)) == 2
        assert len(env.hosts_with(Role.AIRFLOW_API, dc)) == 2


@pytest.mark.parametrize("profile", topo.PROFILES)
def test_hosts_file_names_every_platform_host_and_vip(profile: topo.Profile) -> None:
    env = parse_environment(topo.build_environment(profile))
    for own in env.hosts:
        text = topo.hosts_file(env, own.name)
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        assert lines[0] == "127.0.0.1\tlocalhost"
        # the host itself first, as Docker would write it: `hostname -f` finds its FQDN
        assert lines[len(topo.LOOPBACK_HOSTS)] == f"{own.address}\t{env.fqdn(own)} {own.name}"
        for other in env.hosts:
            assert f"{other.address}\t{env.fqdn(other)} {other.name}" in lines
        for vip in env.vips:
            assert f"{vip.address}\t{env.vip_fqdn(vip)}" in lines
        # the deploy's managed block is the deploy's: the lab never writes its markers
        assert "managed by plinth" not in text
        assert topo.hosts_file(env, own.name) == text  # same input, same file


def test_hosts_file_of_an_unknown_host_is_an_error() -> None:
    env = parse_environment(topo.build_environment("small"))
    with pytest.raises(ValueError, match="not a host"):
        topo.hosts_file(env, "dc9-n1")


@pytest.mark.parametrize(
    ("profile", "isolated"), [("small", False), ("small", True), ("full", True), ("full", False)]
)
def test_profile_of_reads_back_what_build_environment_made(
    profile: topo.Profile, isolated: bool
) -> None:
    data = topo.build_environment(profile, mirror="http://m/debian", isolated=isolated)
    assert topo.profile_of(yaml.safe_load(yaml.safe_dump(data))) == (profile, isolated)
