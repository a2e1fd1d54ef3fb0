"""DC networks and the inter-DC router: creation, overlap checks, partition and latency."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import docker
from docker.errors import APIError, NotFound

from plinth.lab import LABEL, LABELS, LabError
from plinth.lab import topology as topo

PARTITION_CHAIN = "PLINTH-PARTITION"
ROUTER_CONTAINER = topo.container_name(topo.ROUTER_NAME)


def _docker_subnets(client: docker.DockerClient) -> dict[str, list[ipaddress.IPv4Network]]:
    existing: dict[str, list[ipaddress.IPv4Network]] = {}
    for net in client.networks.list():
        attrs = net.attrs
        if (attrs.get("Labels") or {}).get(LABEL) == "1":
            continue
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        subnets = []
        for config in configs:
            try:
                subnets.append(ipaddress.IPv4Network(config.get("Subnet", ""), strict=False))
            except ValueError:
                continue  # IPv6 or empty
        if subnets:
            existing[f"Docker network {net.name!r}"] = subnets
    return existing


def _local_routes() -> dict[str, list[ipaddress.IPv4Network]]:
    """Routes of this machine (a VPN or LAN in 10.231/16 would shadow the lab)."""
    routes: dict[str, list[ipaddress.IPv4Network]] = {}
    try:
        with open("/proc/net/route") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return routes
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest_hex, mask_hex = fields[0], fields[1], fields[7]
        if iface.startswith("br-"):
            continue  # Docker bridges: covered (and labelled) by the network check
        dest = ipaddress.IPv4Address(int(dest_hex, 16).to_bytes(4, "little"))
        mask = ipaddress.IPv4Address(int(mask_hex, 16).to_bytes(4, "little"))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        routes.setdefault(f"route via {iface}", []).append(net)
    return routes


def check_subnets(client: docker.DockerClient, dcs: list[str], egress: bool = False) -> None:
    """Fail clearly if a lab subnet overlaps a Docker network (or a local route)."""
    existing = _docker_subnets(client)
    if not os.environ.get("DOCKER_HOST"):
        existing.update(_local_routes())
    wanted = [topo.DATACENTERS[dc] for dc in dcs] + ([topo.EGRESS_NETWORK] if egress else [])
    problems = topo.subnet_conflicts(wanted, existing)
    if problems:
        raise LabError(
            "lab subnet conflict: " + "; ".join(problems) + " (remove that network or "
            "change plinth.lab.topology.DATACENTERS)"
        )


def create_networks(
    client: docker.DockerClient, dcs: list[str], isolated: bool = False
) -> dict[str, Any]:
    """One bridge per DC (a VIP is layer 2), fixed subnet, Docker's gateway at .1."""
    networks: dict[str, Any] = {}
    for dc in dcs:
        subnet = topo.DATACENTERS[dc]
        ipam = docker.types.IPAMConfig(
            pool_configs=[
                docker.types.IPAMPool(subnet=str(subnet), gateway=str(topo.docker_gateway(dc)))
            ]
        )
        try:
            networks[dc] = client.networks.create(
                topo.network_name(dc),
                driver="bridge",
                ipam=ipam,
                # internal: no route out, exactly the OT situation (the controller still
                # reaches the hosts through the bridge).
                internal=isolated,
                labels={**LABELS, f"{LABEL}.dc": dc},
                options={"com.docker.network.bridge.name": f"plab-{dc}"},
            )
        except APIError as error:
            raise LabError(
                f"cannot create network {topo.network_name(dc)} ({subnet}): "
                f"{error.explanation or error}"
            ) from None
    return networks


def create_egress_network(client: docker.DockerClient) -> Any:
    """The squid hosts' way out in an isolated lab: a normal (NATed) bridge."""
    subnet = topo.EGRESS_NETWORK
    ipam = docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))]
    )
    try:
        return client.networks.create(
            topo.egress_network_name(),
            driver="bridge",
            ipam=ipam,
            labels={**LABELS, f"{LABEL}.egress": "1"},
            options={"com.docker.network.bridge.name": EGRESS_BRIDGE},
        )
    except APIError as error:
        raise LabError(
            f"cannot create network {topo.egress_network_name()} ({subnet}): "
            f"{error.explanation or error}"
        ) from None


# ---- frames inside one isolated DC network ----
#
# Docker drops, for an internal network, every packet entering the bridge with a source
# outside its subnet and every packet leaving it with a destination outside it
# (DOCKER-ISOLATION-STAGE-1). With br_netfilter (bridge-nf-call-iptables=1, set by Docker)
# that also hits frames *switched* inside the bridge: a dc1 host's packet to dc2 goes to
# the router's MAC on the same bridge, with a dc2 destination, and is dropped before the
# router sees it. One rule per DC bridge in DOCKER-USER (evaluated first, never flushed by
# Docker) accepts exactly the frames that stay on that bridge (in and out the same DC
# switch); everything leaving a DC bridge stays dropped. The rules live in the engine's
# network namespace, so they are written from a short-lived container on the host
# network; the marker file lets cleanup find them without a container when there are
# none (the small lab never pays for this).

RULE_COMMENT = "plinth-lab"
EGRESS_BRIDGE = "plab-egress"


def bridge(dc: str) -> str:
    return f"plab-{dc}"


def _rules_marker() -> Any:
    from plinth.lab import lab_dir

    return lab_dir() / "docker-user-rules"


def bridge_rules_script(bridges: list[str], remove_only: bool = False) -> str:
    """Shell (run in the engine's netns): drop our DOCKER-USER rules, then add one ACCEPT
    per bridge. iptables-nft or -legacy: whichever holds Docker's DOCKER-USER chain."""
    lines = [
        "set -e",
        "ipt=",
        "for candidate in iptables-nft iptables-legacy; do",
        "  if $candidate -w -S DOCKER-USER >/dev/null 2>&1; then ipt=$candidate; break; fi",
        "done",
        '[ -n "$ipt" ] || { echo "no DOCKER-USER chain (is the engine using iptables?)"; exit 1; }',
        # Delete ours (every -A line carrying our comment), whatever bridges they name.
        f'$ipt -w -S DOCKER-USER | grep -e "--comment {RULE_COMMENT}" | sed "s/^-A /-D /" |'
        ' while read -r rule; do eval "$ipt -w $rule"; done',
    ]
    if not remove_only:
        for name in bridges:
            lines.append(
                f"$ipt -w -I DOCKER-USER -i {name} -o {name} "
                f"-m comment --comment {RULE_COMMENT} -j ACCEPT"
            )
    return "\n".join(lines) + "\n"


def _run_in_engine_netns(client: docker.DockerClient, image: str, script: str) -> None:
    try:
        output = client.containers.run(
            image,
            ["/bin/sh", "-c", script],
            network_mode="host",
            cap_add=["NET_ADMIN", "NET_RAW"],
            labels={**LABELS, f"{LABEL}.host": "iptables"},
            remove=True,
            stdout=True,
            stderr=True,
        )
    except docker.errors.ContainerError as error:
        raise LabError(f"DOCKER-USER rules for the isolated lab failed: {error}") from None
    del output


def allow_bridged(client: docker.DockerClient, image: str, dcs: list[str]) -> None:
    """Accept frames switched inside each isolated DC bridge (see above)."""
    marker = _rules_marker()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(image + "\n")
    _run_in_engine_netns(client, image, bridge_rules_script([bridge(dc) for dc in dcs]))


def remove_bridge_rules(client: docker.DockerClient) -> list[str]:
    """Remove our DOCKER-USER rules if an isolated lab left any (marker file)."""
    marker = _rules_marker()
    if not marker.exists():
        return []
    image = marker.read_text().strip()
    try:
        client.images.get(image)
    except NotFound:
        images = client.images.list(name=image.split(":")[0])
        if not images:
            raise LabError(
                f"cannot remove the lab's DOCKER-USER rules: no {image} image to run "
                f"iptables from; delete rules with comment {RULE_COMMENT} by hand, then "
                f"{marker}"
            ) from None
        image = images[0].tags[0] if images[0].tags else images[0].id
    _run_in_engine_netns(client, image, bridge_rules_script([], remove_only=True))
    marker.unlink()
    return [f"DOCKER-USER rules ({RULE_COMMENT})"]


def remove_networks(client: docker.DockerClient) -> list[str]:
    removed = []
    for net in client.networks.list(filters={"label": f"{LABEL}=1"}):
        try:
            net.remove()
            removed.append(net.name)
        except NotFound:
            pass
    return removed


# ---- the router ----


def router(client: docker.DockerClient) -> Any:
    """The running router container, or a LabError saying the full lab is not up."""
    try:
        container = client.containers.get(ROUTER_CONTAINER)
    except NotFound:
        raise LabError(
            f"no {ROUTER_CONTAINER} container: the router exists only in the full "
            "profile (`plinth lab up --profile full`)"
        ) from None
    if (container.labels or {}).get(LABEL) != "1":
        raise LabError(f"container {ROUTER_CONTAINER} is not labelled {LABEL}=1; not touching it")
    if container.status != "running":
        raise LabError(f"{ROUTER_CONTAINER} is {container.status}; run `plinth lab up` again")
    return container


def router_exec(container: Any, *cmd: str, check: bool = True) -> tuple[int, str]:
    code, output = container.exec_run(list(cmd))
    text = output.decode(errors="replace").strip() if output else ""
    if check and code != 0:
        raise LabError(f"router: `{' '.join(cmd)}` failed ({code}): {text.splitlines()[-1:]}")
    return int(code), text


def _router_dcs(container: Any) -> list[str]:
    networks = container.attrs["NetworkSettings"]["Networks"]
    dcs = []
    for dc in topo.DATACENTERS:
        if topo.network_name(dc) in networks:
            dcs.append(dc)
    return dcs


def _check_pair(container: Any, dc_a: str, dc_b: str) -> None:
    known = _router_dcs(container)
    for dc in (dc_a, dc_b):
        if dc not in known:
            raise LabError(f"unknown datacenter {dc!r}; the router links {', '.join(known)}")
    if dc_a == dc_b:
        raise LabError(f"a partition needs two different datacenters, got {dc_a} twice")


def _interface(container: Any, dc: str) -> str:
    """The router's interface in ``dc`` (found by its fixed address)."""
    _, text = router_exec(container, "ip", "-o", "-4", "addr", "show")
    wanted = str(topo.router_address(dc))
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3].split("/")[0] == wanted:
            return fields[1].split("@")[0]
    raise LabError(f"router has no interface with {wanted} ({dc})")


def _ensure_chain(container: Any) -> None:
    if router_exec(container, "iptables", "-n", "-L", PARTITION_CHAIN, check=False)[0] != 0:
        router_exec(container, "iptables", "-N", PARTITION_CHAIN)
    jump = ("FORWARD", "-j", PARTITION_CHAIN)
    if router_exec(container, "iptables", "-C", *jump, check=False)[0] != 0:
        router_exec(container, "iptables", "-I", *jump)


def partition(client: docker.DockerClient, dc_a: str, dc_b: str) -> str:
    """Drop forwarded traffic between two DCs both ways (idempotent)."""
    container = router(client)
    _check_pair(container, dc_a, dc_b)
    _ensure_chain(container)
    net_a, net_b = str(topo.DATACENTERS[dc_a]), str(topo.DATACENTERS[dc_b])
    for src, dst in ((net_a, net_b), (net_b, net_a)):
        rule = (PARTITION_CHAIN, "-s", src, "-d", dst, "-j", "DROP")
        if router_exec(container, "iptables", "-C", *rule, check=False)[0] != 0:
            router_exec(container, "iptables", "-A", *rule)
    return f"partitioned {dc_a} ({net_a}) from {dc_b} ({net_b})"


def heal(client: docker.DockerClient) -> str:
    """Remove every partition and every injected delay."""
    container = router(client)
    if router_exec(container, "iptables", "-n", "-L", PARTITION_CHAIN, check=False)[0] == 0:
        router_exec(container, "iptables", "-F", PARTITION_CHAIN)
    for dc in _router_dcs(container):
        iface = _interface(container, dc)
        # Deleting the root qdisc restores the default; "no such qdisc" is fine.
        router_exec(container, "tc", "qdisc", "del", "dev", iface, "root", check=False)
    return "healed: no partition, no added latency"


def set_latency(client: docker.DockerClient, dc_a: str, dc_b: str, ms: int) -> str:
    """Delay packets leaving the router toward each of the two DCs by ``ms`` (0 removes)."""
    container = router(client)
    _check_pair(container, dc_a, dc_b)
    for dc in (dc_a, dc_b):
        iface = _interface(container, dc)
        if ms == 0:
            router_exec(container, "tc", "qdisc", "del", "dev", iface, "root", check=False)
            continue
        code, text = router_exec(
            container,
            "tc", "qdisc", "replace", "dev", iface, "root", "netem", "delay", f"{ms}ms",
            check=False,
        )  # fmt: skip
        if code != 0:
            if "unknown" in text.lower() or "no such file" in text.lower():
                raise LabError(
                    "netem is not available in this kernel (CONFIG_NET_SCH_NETEM is not "
                    "set; tc: Specified qdisc kind is unknown): latency cannot be injected "
                    "on this machine; partition/heal still work"
                )
            raise LabError(f"router: tc netem on {iface} failed: {text}")
    if ms == 0:
        return f"latency between {dc_a} and {dc_b} removed"
    return f"{ms} ms added each way between {dc_a} and {dc_b} (round trip +{2 * ms} ms)"


def link_state(client: docker.DockerClient) -> str:
    """One line: router state, partitions, delays."""
    try:
        client.containers.get(ROUTER_CONTAINER)
    except NotFound:
        return "no router (single-DC lab)"
    try:
        container = router(client)
    except LabError as error:
        return str(error)
    _, rules = router_exec(container, "iptables", "-S", PARTITION_CHAIN, check=False)
    drops = [line for line in rules.splitlines() if line.startswith("-A ") and "DROP" in line]
    parts = []
    names = {str(net): dc for dc, net in topo.DATACENTERS.items()}
    for line in drops:
        fields = line.split()
        src = names.get(fields[fields.index("-s") + 1], "?")
        dst = names.get(fields[fields.index("-d") + 1], "?")
        parts.append(f"{src}->{dst} DROP")
    delays = []
    for dc in _router_dcs(container):
        _, qdisc = router_exec(
            container, "tc", "qdisc", "show", "dev", _interface(container, dc), check=False
        )
        if "netem" in qdisc:
            delay = qdisc.split("delay", 1)[1].split()[0] if "delay" in qdisc else "?"
            delays.append(f"toward {dc} +{delay}")
    link = ", ".join(parts) if parts else "up (no partition)"
    return f"router running; link {link}; latency {', '.join(delays) or 'none added'}"
