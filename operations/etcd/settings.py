"""The model's slice one etcd member reads, its paths and its rendered configuration (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from facts.etcd import etcd_cluster_command, etcdctl_environment
from plinth.certificates import CertificateSpec, crl_path
from plinth.context import HostContext
from plinth.model import EtcdSettings, Role
from plinth.render import render_template

CONFIG = "/etc/default/etcd"
DATA_ROOT = "/var/lib/etcd"


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
    datacenter: str
    """The member's datacenter: its intermediate's CRL is the one etcd checks."""

    @property
    def crl_file(self) -> str:
        """The DC's own CRL: etcd reads only the first CRL of a file, so not ``all.crl.pem``
        (whose first is the root's); its clients and peers are this DC's identities."""
        return crl_path(self.datacenter)

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
            crl_file=self.crl_file,
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
        datacenter=context.datacenter.name,
    )
