"""The platform's topology as a small typed graph, and its two text renderings.

:func:`build` reads an :class:`~plinth.model.Environment` (and the derivations of
``plinth.topology``) and returns a :class:`Diagram`: each datacenter is a :class:`Site`,
its hosts are grouped by tier (hosts whose roles span several tiers form one co-located
group), each cell (the PostgreSQL/Patroni/etcd cell, Redis + Sentinel, RabbitMQ, the edge
daemons, the registry, Airflow) is one node inside the group of its hosts, and the
network flows of :mod:`plinth.topology.flows` (the one statement of what talks to what)
are drawn between them as :class:`Edge`: one per pair of nodes, with its ports and how it
is secured. :func:`render_dot`
writes Graphviz DOT, :func:`render_drawio` the uncompressed mxfile XML draw.io opens.

Pure: no file, host or program is touched here (``plinth.diagram_files`` runs Graphviz's
``dot`` for the SVG and writes the files). Ports are the model's settings, the ones the
deploy renders into the daemons' configurations; nothing is numbered by hand here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from html import escape
from urllib.parse import urlsplit

from plinth.model import AIRFLOW_ROLES, ROLE_COMPONENT, Environment, Host, Role, Tier
from plinth.topology.flows import FlowKind as FlowKind
from plinth.topology.flows import Listener, egress, flows, vip_listeners
from plinth.topology.flows import Security as Security
from plinth.topology.redis import sentinel_master_name, upstream_of

# Top to bottom in a site: requests enter at the edge and end in persistence.
TIER_ORDER: tuple[Tier, ...] = (Tier.EDGE, Tier.STATELESS, Tier.PERSISTENCE)


class NodeKind(StrEnum):
    CELL = "cell"
    """Daemons of one component in one datacenter (a cluster, or instances behind a VIP)."""
    HOST = "host"
    VIP = "vip"
    EXTERNAL = "external"
    """Outside the platform: its clients, the package sources squid lets hosts reach."""


@dataclass(frozen=True)
class Node:
    id: str
    title: str
    details: tuple[str, ...] = ()
    kind: NodeKind = NodeKind.CELL
    tier: Tier | None = None
    """The colour: a cell's component tier, a host's group tier; None for VIPs, outside."""
    stopped: bool = False
    """Installed but not running (the services of a standby site)."""


@dataclass(frozen=True)
class TierGroup:
    """Hosts whose roles fall in the same tiers, with the cells they run."""

    id: str
    tiers: tuple[Tier, ...]
    cells: tuple[Node, ...]
    hosts: tuple[Node, ...]

    @property
    def title(self) -> str:
        if len(self.tiers) == 1:
            return f"{self.tiers[0].value} tier"
        return " + ".join(t.value for t in self.tiers) + " (co-located)"

    @property
    def tier(self) -> Tier | None:
        """The group's colour: its tier, none for co-located tiers."""
        return self.tiers[0] if len(self.tiers) == 1 else None


@dataclass(frozen=True)
class Site:
    id: str
    title: str
    clients: Node
    package_sources: Node | None
    """Where this site's squid lets its hosts go (None without squid)."""
    vips: tuple[Node, ...]
    groups: tuple[TierGroup, ...]

    def outside(self) -> tuple[Node, ...]:
        """The nodes outside the platform drawn at the top of the site."""
        return (
            (self.clients,)
            if self.package_sources is None
            else (self.clients, self.package_sources)
        )

    def nodes(self) -> Iterator[Node]:
        yield from self.outside()
        yield from self.vips
        for group in self.groups:
            yield from group.cells
            yield from group.hosts


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    kind: FlowKind = FlowKind.SERVICE
    security: Security = Security.MUTUAL_TLS
    ports: tuple[int, ...] = ()
    """The ports the label names (what the tests compare with the model)."""


@dataclass(frozen=True)
class Diagram:
    name: str
    title: str
    sites: tuple[Site, ...]
    edges: tuple[Edge, ...]

    def nodes(self) -> Iterator[Node]:
        for site in self.sites:
            yield from site.nodes()

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes() if n.id == node_id)


# ---- building the graph from the model ----


def _short(names: Iterable[str]) -> str:
    return ", ".join(names)


def _host_names(hosts: Iterable[Host]) -> list[str]:
    return [h.name for h in hosts]


def host_tiers(host: Host) -> tuple[Tier, ...]:
    """The tiers of a host's roles, top to bottom."""
    tiers = {ROLE_COMPONENT[role][1] for role in host.roles}
    return tuple(t for t in TIER_ORDER if t in tiers)


def cell_id(datacenter: str, component: str) -> str:
    return f"{datacenter}.{component}"


def vip_id(datacenter: str, name: str) -> str:
    return f"{datacenter}.vip.{name}"


def host_id(name: str) -> str:
    return f"host.{name}"


def clients_id(datacenter: str) -> str:
    return f"{datacenter}.clients"


def package_sources_id(datacenter: str) -> str:
    return f"{datacenter}.package-sources"


@dataclass(frozen=True)
class _Cell:
    """A cell before it is placed: its node, and the hosts that decide its group."""

    node: Node
    members: tuple[Host, ...]


def _cells(env: Environment, dc: str) -> list[_Cell]:
    components = env.components
    active = env.active_site
    standby = dc != active
    cells: list[_Cell] = []

    def add(
        component: str, title: str, members: list[Host], *details: str, stopped: bool = False
    ) -> None:
        tier = next(ROLE_COMPONENT[r][1] for r in members[0].roles if r in _ROLES[component])
        node = Node(
            cell_id(dc, component),
            title,
            tuple(d for d in details if d),
            tier=tier,
            stopped=stopped,
        )
        cells.append(_Cell(node, tuple(members)))

    for component, title, role in (
        ("haproxy", "haproxy (NLB)", Role.HAPROXY),
        ("nginx", "nginx (ALB)", Role.NGINX),
        ("squid", "squid (egress proxy)", Role.SQUID),
        ("registry", "registry (Distribution)", Role.REGISTRY),
    ):
        members = env.hosts_with(role, dc)
        if members:
            add(component, title, members, f"on {_short(_host_names(members))}")
    airflow_hosts = [h for h in env.hosts_in(dc) if any(r in h.roles for r in AIRFLOW_ROLES)]
    if airflow_hosts:
        airflow = components.airflow
        counts = " · ".join(
            f"{role.value.removeprefix('airflow-')} x{len(env.hosts_with(role, dc))}"
            for role in AIRFLOW_ROLES
            if env.hosts_with(role, dc)
        )
        if not airflow.services:
            state = "installed only (components.airflow.services off)"
        elif standby:
            state = "installed, stopped (standby site)"
        else:
            state = ""
        add(
            "airflow",
            f"Airflow {airflow.version}",
            airflow_hosts,
            counts,
            state,
            stopped=bool(state),
        )
    postgresql = env.hosts_with(Role.POSTGRESQL, dc)
    etcd = env.hosts_with(Role.ETCD, dc)
    if postgresql or etcd:
        patroni = components.patroni
        serving = f"standby cluster of {active}" if standby else "read-write"
        same = _host_names(postgresql) == _host_names(etcd)
        add(
            "postgresql",
            f"PostgreSQL {env.debian.postgresql_major} · Patroni · etcd",
            postgresql or etcd,
            f"{patroni.scope_prefix}-{dc}: {serving}" if postgresql else "",
            f"on {_short(_host_names(postgresql))}" + (" (+ etcd)" if same else ""),
            "" if same else f"etcd on {_short(_host_names(etcd))}",
        )
    redis = env.hosts_with(Role.REDIS, dc)
    if redis:
        upstream = upstream_of(env, dc)
        sentinels = env.hosts_with(Role.SENTINEL, dc)
        add(
            "redis",
            f"{env.debian.key_value_store.product} + Sentinel",
            redis,
            (
                f"replicas of {upstream.datacenter} (priority 0), Sentinels stopped"
                if upstream is not None
                else f"master set {sentinel_master_name(components.redis, dc)}"
            ),
            f"on {_short(_host_names(redis))}",
            ""
            if _host_names(sentinels) in ([], _host_names(redis))
            else f"Sentinels on {_short(_host_names(sentinels))}",
        )
    rabbitmq = env.hosts_with(Role.RABBITMQ, dc)
    if rabbitmq:
        add(
            "rabbitmq",
            "RabbitMQ cluster",
            rabbitmq,
            "quorum queues",
            f"on {_short(_host_names(rabbitmq))}",
        )
    minio = env.hosts_with(Role.MINIO, dc)
    if minio:
        add(
            "minio",
            "MinIO",
            minio,
            "role only: not deployed yet",
            f"on {_short(_host_names(minio))}",
        )
    return cells


# component -> the roles that make its cell (the tier of its first member's role decides
# its colour)
_ROLES: dict[str, frozenset[Role]] = {
    "postgresql": frozenset({Role.POSTGRESQL, Role.ETCD}),
    "redis": frozenset({Role.REDIS, Role.SENTINEL}),
    "rabbitmq": frozenset({Role.RABBITMQ}),
    "minio": frozenset({Role.MINIO}),
    "haproxy": frozenset({Role.HAPROXY}),
    "nginx": frozenset({Role.NGINX}),
    "squid": frozenset({Role.SQUID}),
    "registry": frozenset({Role.REGISTRY}),
    "airflow": frozenset(AIRFLOW_ROLES),
}


def _groups(env: Environment, dc: str) -> tuple[TierGroup, ...]:
    hosts = env.hosts_in(dc)
    by_tiers: dict[tuple[Tier, ...], list[Host]] = {}
    for host in hosts:
        by_tiers.setdefault(host_tiers(host), []).append(host)
    # Groups top to bottom by the highest tier they hold; a cell goes to its first host's.
    keys = sorted(by_tiers, key=lambda tiers: [TIER_ORDER.index(t) for t in tiers])
    placed: dict[tuple[Tier, ...], list[Node]] = {key: [] for key in keys}
    for cell in _cells(env, dc):
        placed[host_tiers(cell.members[0])].append(cell.node)
    return tuple(
        TierGroup(
            id=f"{dc}.tier.{'+'.join(t.value for t in key)}",
            tiers=key,
            cells=tuple(placed[key]),
            hosts=tuple(
                Node(
                    host_id(h.name),
                    h.name,
                    (str(h.address),),
                    NodeKind.HOST,
                    tier=key[0] if len(key) == 1 else None,
                )
                for h in by_tiers[key]
            ),
        )
        for key in keys
    )


def _vip_nodes(env: Environment, dc: str) -> tuple[Node, ...]:
    return tuple(
        Node(
            vip_id(dc, vip.name),
            f"VIP {vip.name} {vip.address}",
            (env.vip_fqdn(vip), f"VRRP {vip.router_id} · keepalived"),
            NodeKind.VIP,
        )
        for vip in env.vips_in(dc)
    )


def _cell_of(component: str | None) -> str | None:
    """The diagram's cell of a component of the flows (etcd and Patroni share the
    PostgreSQL cell; keepalived has none: its VIPs are nodes of their own)."""
    if component in ("etcd", "patroni"):
        return "postgresql"
    return component if component in _ROLES else None


def _weakest(listeners: Iterable[Listener]) -> Security:
    """How an edge is drawn: as its least protected port."""
    found = {item.security for item in listeners}
    for security in (Security.NONE, Security.PLAIN, Security.SSH, Security.TLS):
        if security in found:
            return security
    return Security.MUTUAL_TLS


def _label(listeners: list[Listener]) -> str:
    return " · ".join(f":{item.port} {item.name}" for item in listeners)


def _flow_edges(env: Environment, cells: set[str]) -> list[Edge]:
    """The edges of the network flows (``plinth.topology.flows``), one per pair of nodes and
    kind, labelled with their ports: clients to the VIPs and the cells they dial, one cell
    to another, a standby site to the active one. Flows inside one cell (peers), the
    controller's and the VIP checks' are not drawn; a host's Docker and apt (any host of
    the DC) are drawn as the VIP's own edges below."""
    vips = {str(v.address): v for v in env.vips}
    grouped: dict[tuple[str, str, FlowKind], list[Listener]] = {}
    for flow in flows(env):
        if flow.kind not in (FlowKind.CLIENT, FlowKind.SERVICE, FlowKind.CROSS_SITE):
            continue
        target_dc = flow.listener.datacenter
        vip = vips.get(flow.address)
        cell = _cell_of(flow.component)
        if vip is not None:
            target = vip_id(vip.datacenter, vip.name)
        elif cell is not None:
            target = cell_id(target_dc, cell)
        else:
            continue
        source_dc = flow.sources.datacenter or target_dc
        if flow.kind is FlowKind.CLIENT:
            source = clients_id(target_dc)
        else:
            source_cell = _cell_of(flow.sources.component)
            if source_cell is None or flow.sources.datacenter is None:
                continue
            source = cell_id(source_dc, source_cell)
            if source not in cells:
                continue
        if source == target or (target not in cells and vip is None):
            continue
        kind = FlowKind.CROSS_SITE if source_dc != target_dc else flow.kind
        if kind is FlowKind.CROSS_SITE and source_dc == env.active_site:
            # drawn from the following site to the active one only: the active site's
            # Sentinels watching the other's nodes stay in `plinth flows` (an edge back
            # between the two sites' clusters sends Graphviz's layout into a loop)
            continue
        ports = grouped.setdefault((source, target, kind), [])
        if all(item.port != flow.port for item in ports):
            ports.append(flow.listener)
    return [
        Edge(
            source,
            target,
            _label(items),
            kind,
            _weakest(items),
            tuple(item.port for item in items if item.port is not None),
        )
        for (source, target, kind), items in grouped.items()
    ]


def _vip_edges(env: Environment, cells: set[str]) -> Iterator[Edge]:
    """Each VIP to the cells whose daemons serve it (haproxy, nginx, squid). squid's
    is labelled with its port: the hosts' apt goes out there, no client edge shows it."""
    for vip in env.vips:
        by_cell: dict[str, list[Listener]] = {}
        for item in vip_listeners(env, vip):
            ports = by_cell.setdefault(item.component, [])
            if all(p.port != item.port for p in ports):
                ports.append(item)
        for component, items in by_cell.items():
            if cell_id(vip.datacenter, component) not in cells:
                continue
            egress = component == "squid"
            yield Edge(
                vip_id(vip.datacenter, vip.name),
                cell_id(vip.datacenter, component),
                _label(items) if egress else "",
                FlowKind.EGRESS if egress else FlowKind.SERVICE,
                _weakest(items) if egress else Security.MUTUAL_TLS,
                tuple(item.port for item in items if item.port is not None) if egress else (),
            )


def _outside_edges(env: Environment, cells: set[str]) -> Iterator[Edge]:
    """squid to the package sources it lets the hosts reach (its external egress), and
    the controller copying RabbitMQ's definitions from the active site to the others (not
    a flow between the cells: it reads one and writes the other over SSH)."""
    squid_out = {e.datacenter for e in egress(env) if e.external and e.component == "squid"}
    for dc in env.datacenters:
        if dc.name in squid_out and cell_id(dc.name, "squid") in cells:
            yield Edge(
                cell_id(dc.name, "squid"),
                package_sources_id(dc.name),
                "allowlist",
                FlowKind.EGRESS,
                Security.TLS,
            )
    active = env.active_site
    for dc in env.datacenters:
        if (
            dc.name != active
            and {cell_id(active, "rabbitmq"), cell_id(dc.name, "rabbitmq")} <= cells
        ):
            yield Edge(
                cell_id(active, "rabbitmq"),
                cell_id(dc.name, "rabbitmq"),
                "definitions sync (controller, SSH)",
                FlowKind.CROSS_SITE,
                Security.SSH,
            )


def _package_sources(env: Environment, dc: str) -> Node | None:
    """Where squid lets a site's hosts go: its mirrors, the PyPI index, the allowlist."""
    if not env.hosts_with(Role.SQUID, dc):
        return None
    sources = env.package_sources_for(dc)
    hosts: list[str] = []
    for url in (sources.apt_mirror, sources.apt_security_mirror, sources.pypi_index):
        name = urlsplit(url).hostname or url
        if name not in hosts:
            hosts.append(name)
    extra = env.components.squid.allowed_domains
    details = [" · ".join(hosts)]
    if extra:
        details.append(f"+ {len(extra)} allowed domain(s)")
    return Node(package_sources_id(dc), "package sources", tuple(details), NodeKind.EXTERNAL)


def build(env: Environment) -> Diagram:
    """The graph of ``env``: one site per datacenter, edges in a stable order."""
    sites = []
    for dc in env.datacenters:
        if len(env.datacenters) == 1:
            role = ""
        elif dc.name == env.active_site:
            role = " · active"
        else:
            role = f" · standby of {env.active_site}"
        sites.append(
            Site(
                id=dc.name,
                title=f"{dc.name}{role} · {dc.subnet} · {dc.domain}",
                clients=Node(
                    clients_id(dc.name),
                    f"{dc.name} clients",
                    ("applications, operators",),
                    NodeKind.EXTERNAL,
                ),
                package_sources=_package_sources(env, dc.name),
                vips=_vip_nodes(env, dc.name),
                groups=_groups(env, dc.name),
            )
        )
    cells = {cell.id for site in sites for group in site.groups for cell in group.cells}
    edges = [*_flow_edges(env, cells), *_vip_edges(env, cells), *_outside_edges(env, cells)]
    return Diagram(
        name=env.name,
        title=f"{env.name}: {len(env.datacenters)} datacenter(s), {len(env.hosts)} hosts, "
        f"Debian {env.debian.number} ({env.release})",
        sites=tuple(sites),
        edges=tuple(edges),
    )


# ---- how the graph looks: one palette for both renderings ----


@dataclass(frozen=True)
class Colours:
    fill: str
    border: str
    group_fill: str
    """The lighter tint of the tier's group box."""


TIER_COLOURS: dict[Tier | None, Colours] = {
    Tier.EDGE: Colours("#fde4cc", "#c0601a", "#fff7ef"),
    Tier.STATELESS: Colours("#dcefd2", "#3a8a28", "#f5fbf2"),
    Tier.PERSISTENCE: Colours("#d6e5f5", "#2b64a8", "#f2f7fd"),
    None: Colours("#eeeeee", "#777777", "#fafafa"),
}
VIP_COLOURS = Colours("#fff2a8", "#a88400", "")
EXTERNAL_COLOURS = Colours("#ffffff", "#888888", "")
FLOW_COLOURS: dict[FlowKind, str] = {
    FlowKind.CLIENT: "#4d4d4d",
    FlowKind.SERVICE: "#4d4d4d",
    FlowKind.EGRESS: "#a0522d",
    FlowKind.CROSS_SITE: "#8e2c9e",
}
STOPPED_TEXT = "#888888"


def _node_colours(node: Node) -> Colours:
    if node.kind is NodeKind.VIP:
        return VIP_COLOURS
    if node.kind is NodeKind.EXTERNAL:
        return EXTERNAL_COLOURS
    return TIER_COLOURS[node.tier]


def legend_rows() -> list[tuple[str, str, str]]:
    """(swatch fill, swatch border, meaning) of the node colours."""
    rows = [(TIER_COLOURS[t].fill, TIER_COLOURS[t].border, f"{t.value} tier") for t in TIER_ORDER]
    rows.append((TIER_COLOURS[None].fill, TIER_COLOURS[None].border, "tiers co-located"))
    rows.append((VIP_COLOURS.fill, VIP_COLOURS.border, "VIP (keepalived, VRRP)"))
    rows.append((EXTERNAL_COLOURS.fill, EXTERNAL_COLOURS.border, "outside the platform"))
    return rows


LEGEND_LINES: tuple[tuple[str, str, str], ...] = (
    # (colour, line, meaning)
    (FLOW_COLOURS[FlowKind.SERVICE], "━━━", "mTLS: the client presents a platform certificate"),
    (FLOW_COLOURS[FlowKind.SERVICE], "╍╍╍", "TLS, client certificate optional"),
    (FLOW_COLOURS[FlowKind.EGRESS], "┈┈┈", "not TLS: egress via squid, controller over SSH"),
    (FLOW_COLOURS[FlowKind.CROSS_SITE], "━━━", "cross-site: standby DC follows the active one"),
)
LEGEND_NOTE = "grey italic: installed, not running"


# ---- DOT ----


def _dot_id(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _html_label(node: Node) -> str:
    colour = STOPPED_TEXT if node.stopped else "#000000"
    lines = [f"<b>{escape(node.title)}</b>"]
    for detail in node.details:
        text = escape(detail)
        lines.append(f'<font point-size="9">{f"<i>{text}</i>" if node.stopped else text}</font>')
    return f'<<font color="{colour}">{"<br/>".join(lines)}</font>>'


def _dot_node(node: Node, indent: str) -> str:
    colours = _node_colours(node)
    shape = {NodeKind.VIP: "hexagon", NodeKind.HOST: "box"}.get(node.kind, "box")
    style = "rounded,filled"
    if node.kind is NodeKind.EXTERNAL or node.stopped:
        style += ",dashed"
    if node.kind is NodeKind.HOST:
        style = "filled"
    attrs = [
        f"label={_html_label(node)}",
        f"shape={shape}",
        f'style="{style}"',
        f'fillcolor="{colours.fill}"',
        f'color="{colours.border}"',
    ]
    if node.kind is NodeKind.HOST:
        attrs.append("fontsize=9")
    return f"{indent}{_dot_id(node.id)} [{', '.join(attrs)}];"


_DOT_STYLE = {
    Security.MUTUAL_TLS: "solid",
    Security.TLS: "dashed",
    Security.PLAIN: "dotted",
    Security.SSH: "dotted",
    Security.NONE: "dotted",
}


def _dot_edge(edge: Edge, diagram: Diagram) -> str:
    target = diagram.node(edge.target)
    attrs = [
        f"color={_dot_id(FLOW_COLOURS[edge.kind])}",
        f"fontcolor={_dot_id(FLOW_COLOURS[edge.kind])}",
        f"style={_DOT_STYLE[edge.security]}",
    ]
    if edge.label:
        attrs.insert(0, f"label={_dot_id(edge.label)}")
    if edge.kind is FlowKind.CROSS_SITE:
        attrs.append("penwidth=2.2")
    # Flows back up (a cell dialling a VIP, a standby following the active site, out to
    # the package sources drawn at the top) must not pull the ranks out of tier order.
    upward = target.kind in (NodeKind.VIP, NodeKind.EXTERNAL) and edge.kind is not FlowKind.CLIENT
    # A client dialling a cell directly (Sentinels, AMQPS) passes the tiers above it.
    past_tiers = edge.kind is FlowKind.CLIENT and target.kind is NodeKind.CELL
    if upward or past_tiers or edge.kind is FlowKind.CROSS_SITE:
        attrs.append("constraint=false")
    return f"  {_dot_id(edge.source)} -> {_dot_id(edge.target)} [{', '.join(attrs)}];"


def _dot_legend() -> list[str]:
    rows = [
        f'<tr><td bgcolor="{fill}" width="18"> </td><td align="left">{escape(text)}</td></tr>'
        for fill, _border, text in legend_rows()
    ]
    rows += [
        f'<tr><td><font color="{colour}">{line}</font></td>'
        f'<td align="left">{escape(text)}</td></tr>'
        for colour, line, text in LEGEND_LINES
    ]
    rows.append(
        f'<tr><td> </td><td align="left"><font color="{STOPPED_TEXT}"><i>'
        f"{escape(LEGEND_NOTE)}</i></font></td></tr>"
    )
    table = (
        '<<table border="1" cellborder="0" cellspacing="2" cellpadding="2" color="#999999">'
        '<tr><td colspan="2"><b>legend</b></td></tr>' + "".join(rows) + "</table>>"
    )
    return [f'  "legend" [shape=plain, fontsize=9, label={table}];']


def render_dot(diagram: Diagram) -> str:
    """Graphviz DOT of ``diagram``: sites side by side, tiers top to bottom inside."""
    out = [
        f"digraph {_dot_id(diagram.name)} {{",
        f"  graph [label={_dot_id(diagram.title)}, labelloc=t, fontsize=14, "
        'fontname="Helvetica", rankdir=TB, newrank=true, compound=true, '
        "nodesep=0.25, ranksep=0.5];",
        '  node [fontname="Helvetica", fontsize=10, margin="0.12,0.05"];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];',
    ]
    for site in diagram.sites:
        out += [
            f"  subgraph {_dot_id('cluster_' + site.id)} {{",
            f'    label={_dot_id(site.title)}; fontsize=12; style=rounded; color="#555555";',
        ]
        out += [_dot_node(node, "    ") for node in site.outside()]
        out += [_dot_node(vip, "    ") for vip in site.vips]
        if site.vips:
            out.append(f"    {{rank=same; {'; '.join(_dot_id(v.id) for v in site.vips)};}}")
        for group in site.groups:
            colours = TIER_COLOURS[group.tier]
            out += [
                f"    subgraph {_dot_id('cluster_' + group.id)} {{",
                f'      label={_dot_id(group.title)}; fontsize=10; style="rounded,filled"; '
                f'fillcolor="{colours.group_fill}"; color="{colours.border}";',
            ]
            out += [_dot_node(cell, "      ") for cell in group.cells]
            if _side_by_side(group, diagram):
                out.append(f"      {{rank=same; {'; '.join(_dot_id(c.id) for c in group.cells)};}}")
            out += [_dot_node(host, "      ") for host in group.hosts]
            out.append(f"      {{rank=same; {'; '.join(_dot_id(h.id) for h in group.hosts)};}}")
            out.append("    }")
        out.append("  }")
    out += _dot_legend()
    top = [n.id for s in diagram.sites for n in s.outside()] + ["legend"]
    out.append(f"  {{rank=same; {'; '.join(_dot_id(n) for n in top)};}}")
    out += [_dot_edge(edge, diagram) for edge in diagram.edges]
    out += _dot_layout_edges(diagram)
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_layout_edges(diagram: Diagram) -> list[str]:
    """Invisible edges that keep each site in reading order: clients, VIPs, then each
    tier group (its cells above its hosts)."""
    pairs: list[tuple[str, str]] = []
    for site in diagram.sites:
        above = [site.clients.id]
        if site.vips:
            pairs += [(site.clients.id, v.id) for v in site.vips]
            pairs += _chain([v.id for v in site.vips])
            above = [v.id for v in site.vips]
        for group in site.groups:
            tops = [c.id for c in group.cells] or [group.hosts[0].id]
            pairs += [(a, b) for a in above for b in tops]
            pairs += [(c.id, group.hosts[0].id) for c in group.cells]
            # left to right in the order of the model (and of the cells' components)
            if _side_by_side(group, diagram):
                pairs += _chain([c.id for c in group.cells])
            pairs += _chain([h.id for h in group.hosts])
            above = [group.hosts[0].id]
    return [f"  {_dot_id(a)} -> {_dot_id(b)} [style=invis];" for a, b in pairs]


def _chain(ids: list[str]) -> list[tuple[str, str]]:
    return list(itertools.pairwise(ids))


def _side_by_side(group: TierGroup, diagram: Diagram) -> bool:
    """Cells of a group share one row unless a flow runs between two of them (co-located
    tiers: haproxy above PostgreSQL)."""
    ids = {c.id for c in group.cells}
    return not any(e.source in ids and e.target in ids for e in diagram.edges)


# ---- draw.io ----

CELL_SIZE = (220, 64)
HOST_SIZE = (120, 40)
VIP_SIZE = (230, 64)
GAP = 24
HEADER = 30
"""Height of a container's title bar (site, tier group)."""

_DRAWIO_DASH = {
    Security.MUTUAL_TLS: "",
    Security.TLS: "dashed=1;",
    Security.PLAIN: "dashed=1;dashPattern=1 3;",
    Security.SSH: "dashed=1;dashPattern=1 3;",
    Security.NONE: "dashed=1;dashPattern=1 3;",
}


@dataclass(frozen=True)
class _Box:
    id: str
    parent: str
    value: str
    style: str
    x: int
    y: int
    width: int
    height: int


def _drawio_value(node: Node) -> str:
    """draw.io's HTML label (escaped once more when written into the XML attribute)."""
    details = "".join(f'<br><font style="font-size: 9px">{escape(d)}</font>' for d in node.details)
    return f"<b>{escape(node.title)}</b>{details}"


def _drawio_node_style(node: Node) -> str:
    colours = _node_colours(node)
    shape = {NodeKind.VIP: "shape=hexagon;perimeter=hexagonPerimeter2;size=0.12;"}.get(
        node.kind, "rounded=1;" if node.kind is not NodeKind.HOST else ""
    )
    dashed = "dashed=1;" if node.kind is NodeKind.EXTERNAL or node.stopped else ""
    font = f"fontColor={STOPPED_TEXT};fontStyle=2;" if node.stopped else ""
    size = "fontSize=10;" if node.kind is NodeKind.HOST else "fontSize=11;"
    return (
        f"{shape}whiteSpace=wrap;html=1;fillColor={colours.fill};strokeColor={colours.border};"
        f"{dashed}{font}{size}"
    )


def _container_style(fill: str, border: str, size: int) -> str:
    return (
        f"swimlane;startSize={HEADER};rounded=1;html=1;whiteSpace=wrap;fillColor={fill};"
        f"swimlaneFillColor={fill};strokeColor={border};fontSize={size};fontStyle=1;"
    )


def _row(
    nodes: Iterable[Node], parent: str, y: int, width: int, size: tuple[int, int]
) -> list[_Box]:
    """``nodes`` side by side, centred in a container ``width`` wide."""
    items = list(nodes)
    used = len(items) * size[0] + (len(items) - 1) * GAP
    x = max(GAP, (width - used) // 2)
    return [
        _Box(
            n.id, parent, _drawio_value(n), _drawio_node_style(n), x + i * (size[0] + GAP), y, *size
        )
        for i, n in enumerate(items)
    ]


def _row_width(count: int, size: tuple[int, int]) -> int:
    return count * size[0] + max(count - 1, 0) * GAP + 2 * GAP


def _site_boxes(site: Site, x: int, y: int) -> tuple[list[_Box], int]:
    """The boxes of one site (its container first) at (x, y), and the site's width."""
    group_width = (
        max(
            max(
                _row_width(max(len(row) for row in _group_rows(g)), CELL_SIZE),
                _row_width(len(g.hosts), HOST_SIZE),
            )
            for g in site.groups
        )
        if site.groups
        else 0
    )
    width = max(
        group_width + 2 * GAP,
        _row_width(len(site.vips), VIP_SIZE),
        _row_width(len(site.outside()), CELL_SIZE),
    )
    inner: list[_Box] = []
    top = HEADER + GAP
    inner += _row(site.outside(), site.id, top, width, CELL_SIZE)
    top += CELL_SIZE[1] + 2 * GAP
    if site.vips:
        inner += _row(site.vips, site.id, top, width, VIP_SIZE)
        top += VIP_SIZE[1] + 2 * GAP
    for group in site.groups:
        cell_rows = _group_rows(group)
        height = HEADER + GAP + len(cell_rows) * (CELL_SIZE[1] + GAP) + HOST_SIZE[1] + GAP
        colours = TIER_COLOURS[group.tier]
        inner.append(
            _Box(
                group.id,
                site.id,
                escape(group.title),
                _container_style(colours.group_fill, colours.border, 11),
                GAP,
                top,
                width - 2 * GAP,
                height,
            )
        )
        row_top = HEADER + GAP
        for cells in cell_rows:
            inner += _row(cells, group.id, row_top, width - 2 * GAP, CELL_SIZE)
            row_top += CELL_SIZE[1] + GAP
        inner += _row(group.hosts, group.id, row_top, width - 2 * GAP, HOST_SIZE)
        top += height + GAP
    container = _Box(
        site.id,
        "1",
        escape(site.title),
        _container_style("#ffffff", "#555555", 13),
        x,
        y,
        width,
        top,
    )
    return [container, *inner], width


def _group_rows(group: TierGroup) -> list[tuple[Node, ...]]:
    """Cells in rows of at most four (co-located tiers hold every cell of a site)."""
    return [group.cells[i : i + 4] for i in range(0, len(group.cells), 4)] or [()]


def _drawio_legend(x: int, y: int) -> _Box:
    rows = "".join(
        f'<tr><td style="background:{fill};border:1px solid {border};width:16px"></td>'
        f"<td>{escape(text)}</td></tr>"
        for fill, border, text in legend_rows()
    )
    rows += "".join(
        f'<tr><td style="color:{colour}">{line}</td><td>{escape(text)}</td></tr>'
        for colour, line, text in LEGEND_LINES
    )
    rows += f'<tr><td></td><td style="color:{STOPPED_TEXT}"><i>{escape(LEGEND_NOTE)}</i></td></tr>'
    value = f"<b>legend</b><table>{rows}</table>"
    style = (
        "text;html=1;align=left;verticalAlign=top;whiteSpace=wrap;fontSize=10;strokeColor=#999999;"
    )
    return _Box("legend", "1", value, style, x, y, 330, 230)


def _drawio_edge(index: int, edge: Edge) -> str:
    colour = FLOW_COLOURS[edge.kind]
    width = "strokeWidth=2.5;" if edge.kind is FlowKind.CROSS_SITE else ""
    style = (
        "edgeStyle=orthogonalEdgeStyle;rounded=1;html=1;endArrow=block;endSize=5;fontSize=9;"
        f"strokeColor={colour};fontColor={colour};labelBackgroundColor=#ffffff;"
        f"{_DRAWIO_DASH[edge.security]}{width}"
    )
    return (
        f'        <mxCell id="edge-{index}" value="{escape(edge.label)}" style="{style}" edge="1" '
        f'parent="1" source="{escape(edge.source)}" target="{escape(edge.target)}">\n'
        '          <mxGeometry relative="1" as="geometry"/>\n'
        "        </mxCell>"
    )


def render_drawio(diagram: Diagram) -> str:
    """The uncompressed mxfile XML of ``diagram`` (draw.io opens and edits it): sites side
    by side as containers, tier groups inside them, the legend on the right. draw.io
    routes the edges itself."""
    boxes: list[_Box] = []
    x = GAP
    top = 60
    for site in diagram.sites:
        site_boxes, width = _site_boxes(site, x, top)
        boxes += site_boxes
        x += width + 2 * GAP
    boxes.append(_drawio_legend(x, top))
    title_style = "text;html=1;align=left;fontSize=16;fontStyle=1;"
    boxes.insert(0, _Box("title", "1", escape(diagram.title), title_style, GAP, 10, 900, 30))
    lines = [
        '<mxfile host="plinth" type="device">',
        f'  <diagram id="{escape(diagram.name)}" name="{escape(diagram.name)}">',
        '    <mxGraphModel grid="1" gridSize="10" guides="1" connect="1" arrows="1" '
        'page="0" math="0" shadow="0">',
        "      <root>",
        '        <mxCell id="0"/>',
        '        <mxCell id="1" parent="0"/>',
    ]
    for box in boxes:
        lines += [
            f'        <mxCell id="{escape(box.id)}" value="{escape(box.value)}" '
            f'style="{box.style}" vertex="1" parent="{escape(box.parent)}">',
            f'          <mxGeometry x="{box.x}" y="{box.y}" width="{box.width}" '
            f'height="{box.height}" as="geometry"/>',
            "        </mxCell>",
        ]
    lines += [_drawio_edge(i, e) for i, e in enumerate(diagram.edges, start=1)]
    lines += ["      </root>", "    </mxGraphModel>", "  </diagram>", "</mxfile>"]
    return "\n".join(lines) + "\n"
