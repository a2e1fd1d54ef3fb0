"""One member converged: started, its restart rolled, the cluster healthy, in deploy order
(the composition; the roll itself is :mod:`.decide` and :mod:`.roll`)."""

from __future__ import annotations

from collections.abc import Generator
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import systemd

from facts.etcd import EtcdCluster
from operations.checked import checked_file
from operations.etcd.decide import HEALTHY_WAIT_SECONDS
from operations.etcd.roll import rolling_restart
from operations.etcd.settings import CONFIG, EtcdInput


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
