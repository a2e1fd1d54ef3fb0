"""Snapshot and restore mechanics on throwaway containers, without touching any lab.

Usage: python bench/snapshot_mechanics.py

Boots two systemd containers from the lab's base image with the lab's flags, but named
``snaptest-*``, labelled ``snaptest=1`` (never ``plinth.lab``) on a network of their own
(10.232.77.0/24), then runs the same code a lab snapshot runs (``plinth.lab.snapshot``:
capture, clean stop, commit, recreate) and checks: systemd boots again, sshd serves the
same host key, same addresses and routes, a file written before is still there, and the
lab-owned /etc/hosts survives both a plain ``docker restart`` and the restore. Removes
everything it created, also on failure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
from docker.errors import NotFound

from plinth.lab.containers import (
    CAPABILITIES,
    CGROUP_VOLUME,
    SECURITY_OPT,
    STOP_SIGNAL,
    TMPFS,
    _host_key,
    _tar,
)
from plinth.lab.image import image_tag
from plinth.lab.snapshot import (
    NetworkRecord,
    SnapshotStore,
    capture,
    commit,
    create_network,
    recreate,
    remove_images,
    stop_cleanly,
)

PREFIX = "snaptest"
NETWORK = f"{PREFIX}-net"
SUBNET = "10.232.77.0/24"
HOSTS = {"a": "10.232.77.11", "b": "10.232.77.12"}
BLOCK = "# BEGIN platform hosts (managed by plinth)\n10.232.77.11\ta.test a\n# END platform hosts\n"


def run(container: Any, command: str) -> str:
    code, out = container.exec_run(["/bin/sh", "-c", command])
    text = out.decode(errors="replace").strip()
    if code != 0:
        raise AssertionError(f"{container.name}: `{command}` exited {code}: {text}")
    return str(text)


def wait_booted(container: Any, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    state = "no answer"
    while time.monotonic() < deadline:
        _, out = container.exec_run(["systemctl", "is-system-running", "--wait"])
        state = out.decode().strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError(f"{container.name} did not boot: {state}")


def host_key(address: str) -> str:
    for _ in range(30):
        out = subprocess.run(
            ["ssh-keyscan", "-t", "ed25519", "-T", "3", address],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if out:
            return out.split(None, 1)[1]
        time.sleep(1)
    raise AssertionError(f"no ssh host key from {address}")


def observe(container: Any, address: str) -> dict[str, str]:
    return {
        "system": wait_booted(container),
        "hostname": run(container, "hostname"),
        "address": run(container, "ip -4 -o addr show eth0 | awk '{print $4}'"),
        "routes": run(container, "ip -4 route show | sort"),
        "marker": run(container, "cat /root/marker"),
        "hosts block": run(container, "sed -n '/^# BEGIN platform/,/^# END/p' /etc/hosts"),
        "ssh host key": host_key(address),
        "sshd": run(container, "systemctl is-active ssh"),
        "/run/sshd": run(container, "test -d /run/sshd && echo present"),
    }


def create(client: docker.DockerClient, image: str, name: str, hosts_file: Path) -> Any:
    address = HOSTS[name]
    endpoint = client.api.create_endpoint_config(ipv4_address=address, aliases=[name])
    container = client.containers.create(
        image,
        name=f"{PREFIX}-{name}",
        hostname=name,
        labels={PREFIX: "1"},
        detach=True,
        cap_add=CAPABILITIES,
        security_opt=SECURITY_OPT,
        cgroupns="host",
        volumes={**CGROUP_VOLUME, str(hosts_file): {"bind": "/etc/hosts", "mode": "rw"}},
        tmpfs=TMPFS,
        mem_limit="512m",
        stop_signal=STOP_SIGNAL,
        network=NETWORK,
        networking_config={NETWORK: endpoint},
    )
    # as `lab up` does: a host key of its own before the first boot
    private, public = _host_key()
    container.put_archive(
        "/",
        _tar(
            [
                ("etc/ssh/ssh_host_ed25519_key", private, 0o600),
                ("etc/ssh/ssh_host_ed25519_key.pub", (public + "\n").encode(), 0o644),
            ]
        ),
    )
    return container


def cleanup(client: docker.DockerClient, store: SnapshotStore) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{PREFIX}=1"}):
        container.remove(force=True)
    for network in client.networks.list(names=[NETWORK]):
        network.remove()
    remove_images(client, store, None)


def main() -> int:
    client = docker.from_env(timeout=300)
    image = image_tag()
    client.images.get(image)
    scratch = Path(tempfile.mkdtemp(prefix="snaptest-"))
    store = SnapshotStore(f"{PREFIX}-snapshot", f"{PREFIX}.snapshot", scratch / "snapshots")
    figures: dict[str, float] = {}
    try:
        client.networks.create(
            NETWORK,
            driver="bridge",
            ipam=docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=SUBNET, gateway="10.232.77.1")]
            ),
            labels={PREFIX: "1"},
        )
        containers = {}
        for name in HOSTS:
            hosts_file = scratch / f"hosts-{name}"
            hosts_file.write_text(f"127.0.0.1\tlocalhost\n{HOSTS[name]}\t{name}\n")
            containers[name] = create(client, image, name, hosts_file)
            containers[name].start()
        for name, container in containers.items():
            wait_booted(container)
            run(container, f"echo written-before-snapshot-{name} > /root/marker")
            # the deploy's way: rewrite in place (a bind-mounted file cannot be renamed over)
            run(container, f"printf '%s' '{BLOCK}' >> /etc/hosts")
        run(containers["a"], "ip route replace 10.232.78.0/24 via 10.232.77.254")
        run(containers["b"], "ip route del default")

        # A plain restart: Docker would have rebuilt its own /etc/hosts; ours stays.
        started = time.monotonic()
        containers["a"].restart(timeout=120)
        wait_booted(containers["a"])
        figures["docker restart + boot"] = time.monotonic() - started
        assert "BEGIN platform" in run(containers["a"], "cat /etc/hosts"), "block lost on restart"
        run(containers["a"], "ip route replace 10.232.78.0/24 via 10.232.77.254")

        before = {n: observe(c, HOSTS[n]) for n, c in containers.items()}

        started = time.monotonic()
        records = {n: capture(client, c) for n, c in containers.items()}
        network_record = NetworkRecord.from_inspect(client.networks.get(NETWORK).attrs)
        for name, container in containers.items():
            figures[f"stop {name}"] = stop_cleanly(container, 180)
        refs = {}
        for name, container in containers.items():
            refs[name] = f"{store.repository}:proof.{container.name}"
            commit(container, refs[name], {store.label: "proof"})
        figures["snapshot (capture+stop+commit)"] = time.monotonic() - started
        for name, ref in refs.items():
            image_attrs = client.images.get(ref).attrs
            base = client.images.get(image).attrs["Size"]
            figures[f"image {name} added MB"] = (image_attrs["Size"] - base) / 1e6

        started = time.monotonic()
        for container in containers.values():
            container.remove(force=True)
        client.networks.get(NETWORK).remove()
        create_network(client, network_record)
        restored = {n: recreate(client, records[n], refs[n]) for n in HOSTS}
        for container in restored.values():
            wait_booted(container)
        figures["restore (recreate + boot)"] = time.monotonic() - started

        after = {n: observe(c, HOSTS[n]) for n, c in restored.items()}
        for name in HOSTS:
            for key, value in before[name].items():
                assert after[name][key] == value, (name, key, value, after[name][key])
                print(f"  {name} {key:<13} same: {value.splitlines()[0][:70]}")
        labels = restored["a"].labels
        assert labels.get(PREFIX) == "1" and "plinth.lab" not in labels, labels
    finally:
        cleanup(client, store)
        shutil.rmtree(scratch)
    left = [c.name for c in client.containers.list(all=True, filters={"label": f"{PREFIX}=1"})]
    left += [n.name for n in client.networks.list(names=[NETWORK])]
    ours = client.images.list(all=True, filters={"label": store.label})
    left += [str(i.tags or i.id) for i in ours]
    for label, value in figures.items():
        print(f"  {label:<32} {value:7.1f}")
    print(f"  left behind: {left or 'nothing'}")
    try:
        client.images.get(image)
    except NotFound:
        print("  base image gone?!")
        return 1
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
