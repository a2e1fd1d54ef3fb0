"""etcd: the DCS of one datacenter's Patroni cluster (3 or 5 members, never across DCs).

Clients and peers speak TLS only and must present a certificate chaining to the
platform root (``client-cert-auth`` on both). Each member's peer certificate names its
node IP (etcd checks it against the peer's source address).

Changes are safe under a plain ``pyinfra`` run: a member whose configuration changed is
restarted from a serial operation whose callback first checks, at that moment, that
every member is healthy; it hands leadership away first when it is the leader, and
waits for the member to be healthy again before the next host. A cluster that is not
healthy is never restarted into: the gate stops that host with the reason.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import systemd

from facts.etcd import (
    EtcdCluster,
    EtcdClusterState,
    etcd_cluster_command,
    etcdctl_environment,
    parse_etcd_cluster,
)
from operations.checked import checked_file
from plinth.certificates import CertificateSpec
from plinth.context import HostContext
from plinth.model import EtcdSettings, Role
from plinth.render import render_template
from plinth.rolling import note, refuse, run, wait_for

CONFIG = "/etc/default/etcd"
DATA_ROOT = "/var/lib/etcd"
HEALTHY_WAIT_SECONDS = 90


@dataclass(frozen=True)
class EtcdInput:
    """The slice of the model one etcd member reads."""

    name: str
    address: str
    settings: EtcdSettings
    members: tuple[tuple[str, str], ...]
    """(name, address) of every member of the DC's cluster."""
    token: str
    """Initial cluster token: ``<env>-<dc>-etcd``, unique per cluster."""
    tls: CertificateSpec

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(f"https://{addr}:{self.settings.client_port}" for _, addr in self.members)

    @property
    def data_dir(self) -> str:
        return f"{DATA_ROOT}/{self.token}"

    def initial_cluster(self) -> str:
        port = self.settings.peer_port
        return ",".join(f"{name}=https://{addr}:{port}" for name, addr in self.members)

    def render(self) -> str:
        return render_template(
            "etcd/etc/default/etcd.j2",
            member=self.name,
            address=self.address,
            data_dir=self.data_dir,
            peer_port=self.settings.peer_port,
            client_port=self.settings.client_port,
            initial_cluster=self.initial_cluster(),
            token=self.token,
            settings=self.settings,
            tls=self.tls,
        )

    def etcdctl_env(self) -> str:
        """``export`` of etcdctl's TLS settings and every member's endpoint."""
        return etcdctl_environment(
            self.tls.ca_path, self.tls.chain_path, self.tls.key_path, self.endpoints
        )

    def cluster_command(self) -> str:
        return etcd_cluster_command(
            self.tls.ca_path, self.tls.chain_path, self.tls.key_path, self.endpoints
        )


def etcd_members(context: HostContext) -> tuple[tuple[str, str], ...]:
    env = context.environment
    return tuple(
        (h.name, str(h.address)) for h in env.hosts_with(Role.ETCD, context.datacenter.name)
    )


def etcd_input(context: HostContext, tls: CertificateSpec) -> EtcdInput:
    env = context.environment
    return EtcdInput(
        name=context.host.name,
        address=str(context.host.address),
        settings=env.components.etcd,
        members=etcd_members(context),
        token=f"{env.name}-{context.datacenter.name}-etcd",
        tls=tls,
    )


@operation()
def member_started(spec: EtcdInput) -> Generator[StringCommand, None, None]:
    """Start a member that is not running, without waiting for the others.

    ``--no-block``: a member of a new cluster only reports ready once a quorum has
    joined, so a blocking start on one host would wait for the hosts that come later.
    """
    if host.get_fact(SystemdStatus).get("etcd.service"):
        host.noop("etcd is running")
        return
    yield StringCommand("systemctl", "start", "--no-block", "etcd.service")


@operation()
def cluster_healthy(spec: EtcdInput) -> Generator[StringCommand, None, None]:
    """Wait until every member of the DC's cluster answers a health check."""
    state = host.get_fact(
        EtcdCluster,
        cacert=spec.tls.ca_path,
        cert=spec.tls.chain_path,
        key=spec.tls.key_path,
        endpoints=spec.endpoints,
    )
    if state is not None and state.healthy:
        host.noop(f"etcd cluster healthy, leader {state.leader}")
        return
    yield StringCommand(
        f"{spec.etcdctl_env()}; for i in $(seq {HEALTHY_WAIT_SECONDS}); do "
        "etcdctl endpoint health >/dev/null 2>&1 && exit 0; sleep 1; done; "
        f'echo "error: etcd cluster not healthy after {HEALTHY_WAIT_SECONDS} s:" >&2; '
        "etcdctl endpoint health >&2; exit 1"
    )


def _read_cluster(target: Any, spec: EtcdInput) -> EtcdClusterState | None:
    ok, out, _ = run(target, spec.cluster_command())
    return parse_etcd_cluster(out) if ok else None


def _gated_restart(state: Any, host: Any, spec: EtcdInput) -> bool:
    """Execute-time: restart this member only while the whole cluster is healthy."""
    cluster = _read_cluster(host, spec)
    if cluster is None or not cluster.healthy:
        problems = "; ".join(cluster.problems()) if cluster else "cannot read the cluster"
        return refuse(
            host,
            f"etcd restart of {spec.name} refused: cluster not healthy ({problems}); "
            "nothing was changed on this member",
        )
    me = cluster.member(spec.name)
    if me is not None and me.is_leader:
        successor = next((m for m in cluster.members if m.name != spec.name and m.healthy), None)
        if successor is None:
            return refuse(host, f"etcd restart of {spec.name} refused: no healthy successor")
        note(host, f"etcd: moving leadership from {spec.name} to {successor.name}")
        ok, _, err = run(
            host,
            spec.etcdctl_env()
            + f"; ETCDCTL_ENDPOINTS={me.client_url} etcdctl move-leader {successor.id}",
        )
        if not ok:
            return refuse(host, f"etcd move-leader failed: {' '.join(err)[-300:]}")
    ok, _, err = run(host, "systemctl restart etcd.service", timeout=120)
    if not ok:
        return refuse(host, f"etcd restart of {spec.name} failed: {' '.join(err)[-300:]}")

    def healthy_again() -> EtcdClusterState | None:
        current = _read_cluster(host, spec)
        return current if current is not None and current.healthy else None

    after, waited = wait_for(healthy_again, HEALTHY_WAIT_SECONDS)
    if after is None:
        return refuse(
            host,
            f"etcd member {spec.name} restarted but the cluster is not healthy after "
            f"{HEALTHY_WAIT_SECONDS} s; stopping here",
        )
    note(host, f"etcd member {spec.name} restarted, cluster healthy again in {waited:.1f} s")
    return True


@operation(is_idempotent=False)
def rolling_restart(spec: EtcdInput) -> Generator[FunctionCommand, None, None]:
    """Restart this member behind a live health gate (run it with ``_serial=True``).

    Only a running member is restarted; a stopped one is started by ``member_started``.
    """
    if not host.get_fact(SystemdStatus).get("etcd.service"):
        host.noop("etcd is not running yet: nothing to restart")
        return
    yield FunctionCommand(_gated_restart, (spec,), {})


@deploy("etcd")
def etcd_member(spec: EtcdInput) -> None:
    """One member of the DC's etcd cluster (see the module docstring)."""
    config = checked_file(
        name="etcd configuration",
        path=CONFIG,
        src=StringIO(spec.render()),
        check="sh -n {path}",
        mode="644",
    )
    systemd.service(name="etcd enabled at boot", service="etcd.service", running=None, enabled=True)
    started = member_started(name="etcd member started", spec=spec)
    # A member this run started already runs the new configuration.
    rolling_restart(
        name="etcd restarted for its new configuration, one member at a time",
        spec=spec,
        _if=lambda: config.did_change() and not started.did_change(),
        _serial=True,
    )
    cluster_healthy(name="etcd cluster healthy", spec=spec)


__all__ = ["EtcdInput", "etcd_input", "etcd_member"]
