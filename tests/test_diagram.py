"""`plinth diagram`: the graph drawn from the model, its renderings, the committed files."""

from __future__ import annotations

import difflib
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from plinth import diagram_files
from plinth.cli import main
from plinth.diagram import (
    Diagram,
    FlowKind,
    NodeKind,
    build,
    cell_id,
    render_dot,
    render_drawio,
    vip_id,
)
from plinth.model import Environment, load_environment, parse_environment

REPO = Path(__file__).resolve().parents[1]
PROD = REPO / "inventory" / "example-prod.yaml"


def prod_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(PROD.read_text())
    return document


def single_dc(document: dict[str, Any]) -> Environment:
    """example-prod cut down to its first datacenter."""
    document["datacenters"] = document["datacenters"][:1]
    document["hosts"] = [h for h in document["hosts"] if h["datacenter"] == "dc1"]
    document["vips"] = [v for v in document["vips"] if v["datacenter"] == "dc1"]
    return parse_environment(document)


def cross_site(graph: Diagram) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in graph.edges if e.kind is FlowKind.CROSS_SITE]


@pytest.mark.parametrize("stem", list(diagram_files.DOCUMENTED))
def test_every_host_and_vip_appears_once(stem: str) -> None:
    env = diagram_files.DOCUMENTED[stem]()
    graph = build(env)
    ids = Counter(n.id for n in graph.nodes())
    assert [i for i, count in ids.items() if count > 1] == []
    hosts = [n.title for n in graph.nodes() if n.kind is NodeKind.HOST]
    assert sorted(hosts) == sorted(h.name for h in env.hosts)
    vips = {n.id for n in graph.nodes() if n.kind is NodeKind.VIP}
    assert vips == {vip_id(v.datacenter, v.name) for v in env.vips}
    for edge in graph.edges:
        assert edge.source in ids and edge.target in ids, edge


def test_hosts_are_grouped_by_the_tiers_of_their_roles() -> None:
    graph = build(load_environment(PROD))
    dc1 = graph.sites[0]
    assert [g.title for g in dc1.groups] == ["edge tier", "stateless tier", "persistence tier"]
    assert [h.title for h in dc1.groups[2].hosts] == ["dc1-db1", "dc1-db2", "dc1-db3"]
    small = build(diagram_files.DOCUMENTED["lab-small"]())
    (group,) = small.sites[0].groups
    assert group.title == "edge + stateless + persistence (co-located)"
    assert group.tier is None


def test_cross_site_replication_follows_the_active_datacenter() -> None:
    graph = build(load_environment(PROD))
    assert sorted(cross_site(graph)) == [
        (cell_id("dc1", "rabbitmq"), cell_id("dc2", "rabbitmq")),
        (cell_id("dc2", "postgresql"), vip_id("dc1", "pg")),
        (cell_id("dc2", "redis"), cell_id("dc1", "redis")),
    ]
    document = prod_document()
    document["active_datacenter"] = "dc2"
    swapped = build(parse_environment(document))
    assert (cell_id("dc1", "postgresql"), vip_id("dc2", "pg")) in cross_site(swapped)
    assert (cell_id("dc1", "redis"), cell_id("dc2", "redis")) in cross_site(swapped)


def test_one_datacenter_has_no_cross_site_edges() -> None:
    assert cross_site(build(single_dc(prod_document()))) == []
    assert cross_site(build(diagram_files.DOCUMENTED["lab-small"]())) == []


def test_ports_are_the_models_settings() -> None:
    document = prod_document()
    document["components"] = {
        "haproxy": {"primary_port": 6100, "replica_port": 6101},
        "patroni": {"postgresql_port": 6432, "rest_api_port": 9008},
        "redis": {"port": 7379, "sentinel_port": 27379},
        "rabbitmq": {"amqps_port": 5999},
        "squid": {"port": 8128},
    }
    env = parse_environment(document)
    edges = {(e.source, e.target): e for e in build(env).edges}
    assert edges["dc1.clients", vip_id("dc1", "pg")].ports == (6100, 6101)
    assert edges[cell_id("dc1", "haproxy"), cell_id("dc1", "postgresql")].ports == (6432, 9008)
    assert edges["dc1.clients", cell_id("dc1", "redis")].ports == (7379, 27379)
    assert edges["dc1.clients", cell_id("dc1", "rabbitmq")].ports == (5999, 15671)
    assert edges[vip_id("dc1", "edge"), cell_id("dc1", "squid")].ports == (8128,)
    assert edges[cell_id("dc2", "postgresql"), vip_id("dc1", "pg")].ports == (6100,)
    # dc2's nodes replicate from dc1's master and ask dc1's Sentinels for it at bootstrap
    assert edges[cell_id("dc2", "redis"), cell_id("dc1", "redis")].ports == (7379, 27379)
    registry = env.components.nginx.virtual_hosts[0]
    assert edges["dc1.clients", vip_id("dc1", "edge")].ports == (registry.port,)
    assert edges[cell_id("dc1", "nginx"), cell_id("dc1", "registry")].ports == (
        registry.upstream_port,
    )
    for edge in edges.values():
        for port in edge.ports:
            assert f":{port}" in edge.label


def test_airflow_flows_only_where_its_services_run() -> None:
    full = build(diagram_files.DOCUMENTED["lab-full"]())
    sources = {e.source for e in full.edges}
    assert cell_id("dc1", "airflow") in sources
    assert cell_id("dc2", "airflow") not in sources  # installed, stopped on the standby
    assert full.node(cell_id("dc2", "airflow")).stopped
    prod = build(load_environment(PROD))  # services off: the offline install only
    assert cell_id("dc1", "airflow") not in {e.source for e in prod.edges}


def test_drawio_is_an_mxfile_whose_edges_join_its_cells() -> None:
    graph = build(load_environment(PROD))
    root = ET.fromstring(render_drawio(graph))
    assert root.tag == "mxfile"
    cells = root.findall("./diagram/mxGraphModel/root/mxCell")
    ids = {c.get("id") for c in cells}
    assert {n.id for n in graph.nodes()} <= ids
    edges = [c for c in cells if c.get("edge") == "1"]
    assert len(edges) == len(graph.edges)
    assert all(c.get("source") in ids and c.get("target") in ids for c in edges)


REFRESH = "python -m plinth.diagram_files, then commit docs/diagrams/"


@pytest.mark.parametrize("stem", list(diagram_files.DOCUMENTED))
def test_committed_diagrams_are_what_the_generator_draws(stem: str) -> None:
    """docs/diagrams/ never drifts from the model: the DOT and draw.io files are compared
    byte for byte (CI's `diagrams` job regenerates all of them as an artifact too)."""
    env = diagram_files.DOCUMENTED[stem]()
    for path, text in diagram_files.documented_files(stem, env).items():
        committed = path.read_text() if path.is_file() else ""
        if committed != text:
            diff = difflib.unified_diff(
                committed.splitlines(), text.splitlines(), "committed", "generated", lineterm=""
            )
            head = "\n".join(list(diff)[:12])
            pytest.fail(
                f"{path.relative_to(REPO)} drifted from the model; refresh: {REFRESH}\n{head}"
            )
    assert path.with_suffix(".svg").is_file(), f"{stem}.svg missing; refresh: {REFRESH}"


def _svg_titles(svg: str) -> set[str]:
    """Names of the graph, clusters, nodes and edges an SVG from `dot` draws: the same
    whatever the Graphviz release, unlike the coordinates."""
    root = ET.fromstring(svg)
    return {t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("stem", list(diagram_files.DOCUMENTED))
def test_committed_svgs_draw_the_committed_dot(stem: str) -> None:
    """The SVG beside each DOT was drawn from it: same clusters, nodes and edges (its
    layout may differ with the Graphviz release, so only what it draws is compared)."""
    dot = (diagram_files.DOCS_DIR / f"{stem}.dot").read_text()
    svg = (diagram_files.DOCS_DIR / f"{stem}.svg").read_text()
    drawn = _svg_titles(diagram_files.svg_from_dot(dot))
    assert drawn, "dot drew nothing"
    missing, extra = drawn - _svg_titles(svg), _svg_titles(svg) - drawn
    assert not (missing or extra), (
        f"docs/diagrams/{stem}.svg is not drawn from {stem}.dot (missing {sorted(missing)[:5]}, "
        f"extra {sorted(extra)[:5]}); refresh: {REFRESH}"
    )


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_cli_writes_an_svg(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "prod.svg"
    result = CliRunner().invoke(main, ["diagram", "example-prod", "--out", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert "<svg" in svg and "10.40.1.11" in svg


def test_cli_writes_dot_and_drawio(project: Path, tmp_path: Path) -> None:
    env = load_environment(project / "inventory" / "example-prod.yaml")
    for fmt, render in (("dot", render_dot), ("drawio", render_drawio)):
        out = tmp_path / f"prod.{fmt}"
        args = ["diagram", "example-prod", "--format", fmt, "--out", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert out.read_text() == render(build(env))


def test_cli_names_the_missing_dot_and_its_package(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "prod.svg"
    result = CliRunner().invoke(main, ["diagram", "example-prod", "--out", str(out)])
    assert result.exit_code == 1
    assert "`dot`" in result.output and "graphviz" in result.output
    assert not out.exists()


@pytest.mark.parametrize("stem", list(diagram_files.DOCUMENTED))
def test_every_port_drawn_is_a_flow_between_the_nodes_it_joins(stem: str) -> None:
    """The edges are the flows of plinth.topology.flows, grouped by node: nothing drawn
    that `plinth flows` does not list."""
    from plinth.topology.flows import flows, listeners

    env = diagram_files.DOCUMENTED[stem]()
    listened = {(item.datacenter, item.port) for item in listeners(env)}
    reached = {(f.listener.datacenter, f.port) for f in flows(env)}
    for edge in build(env).edges:
        dc = edge.target.split(".")[0]
        for port in edge.ports:
            assert (dc, port) in reached, edge
            # a port nothing listens on is drawn only as such
            assert (dc, port) in listened or "not running" in edge.label, edge
