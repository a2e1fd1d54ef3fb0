"""Lab snapshots: the pure parts (no Docker): names, labels, refusals, listing, records,
routes, the controller state tar."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from plinth.lab import LabError
from plinth.lab import snapshot as snap

META = snap.SnapshotMeta(
    name="deployed",
    created="2025-01-02T03:04:05Z",
    commit="a" * 40,
    dirty=False,
    model_digest="m" * 64,
    state_digest="s" * 64,
    profile="small",
)


@pytest.mark.parametrize("name", ["deployed", "small-1", "full_after_up", "0"])
def test_valid_names(name: str) -> None:
    assert snap.check_name(name) == name
    assert snap.image_tag(name, "plinth-lab-dc1-n1") == f"{name}.plinth-lab-dc1-n1"


@pytest.mark.parametrize("name", ["", "Deployed", "-x", "a.b", "a/b", "x" * 64, "a b"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(LabError, match="not valid"):
        snap.check_name(name)


def test_labels_carry_what_listing_and_restore_read() -> None:
    store = snap.SnapshotStore("plinth-lab-snapshot", "plinth.lab.snapshot", Path("/x"))
    labels = snap.snapshot_labels(store, "deployed", "plinth-lab-dc1-n1", META)
    assert labels["plinth.lab.snapshot"] == "deployed"
    assert labels["plinth.lab.snapshot.container"] == "plinth-lab-dc1-n1"
    assert snap.meta_from_labels(labels) == META
    assert store.image_ref("deployed", "plinth-lab-router") == (
        "plinth-lab-snapshot:deployed.plinth-lab-router"
    )


def test_restore_of_the_same_commit_and_model_is_allowed() -> None:
    assert snap.restore_refusals(META, "a" * 40, "m" * 64, "lab up") == []


def test_restore_says_which_differs() -> None:
    commit_only = snap.restore_refusals(META, "b" * 40, "m" * 64, "lab up")
    assert commit_only == [f"it was taken at commit {'a' * 12}, this checkout is at {'b' * 12}"]
    model_only = snap.restore_refusals(META, "a" * 40, "n" * 64, "`plinth lab up`")
    assert len(model_only) == 1
    assert "its model (inventory/lab.yaml mmmmmmmmmmmm)" in model_only[0]
    assert "`plinth lab up` writes now (nnnnnnnnnnnn)" in model_only[0]
    assert len(snap.restore_refusals(META, None, "n" * 64, "lab up")) == 2


def test_listing_format() -> None:
    later = dataclasses.replace(META, name="later", created="2025-02-01T00:00:00Z", dirty=True)
    rows = [
        snap.SnapshotListing(later, images=4, size=3 * 2**30, complete=False),
        snap.SnapshotListing(META, images=3, size=512 * 2**20, complete=True),
    ]
    lines = snap.format_listing(rows)
    assert lines[0].split() == ["NAME", "PROFILE", "SIZE", "CREATED", "COMMIT", "MODEL"]
    assert lines[1].split() == [
        "deployed", "small", "512.0MiB", "2025-01-02T03:04:05Z", "a" * 12, "m" * 12,
    ]  # fmt: skip
    assert lines[2].split()[:6] == [
        "later", "small", "3.0GiB", "2025-02-01T00:00:00Z", "a" * 12 + "+", "m" * 12,
    ]  # fmt: skip
    assert "incomplete" in lines[2]


# ---- routes ----


DOCKER_TABLE = [
    "default via 10.231.1.1 dev eth0",
    "10.231.1.0/24 dev eth0 proto kernel scope link src 10.231.1.11",
]


def test_routes_of_a_connected_single_dc_host_need_nothing() -> None:
    assert snap.route_commands(DOCKER_TABLE, DOCKER_TABLE) == []


def test_isolated_host_loses_dockers_default_route_and_gets_the_inter_dc_route() -> None:
    captured = [
        "10.231.1.0/24 dev eth0 proto kernel scope link src 10.231.1.11",
        "10.231.2.0/24 via 10.231.1.254 dev eth0",
    ]
    assert snap.route_commands(captured, DOCKER_TABLE) == [
        ["ip", "route", "del", "default"],
        ["ip", "route", "replace", "10.231.2.0/24", "via", "10.231.1.254"],
    ]


def test_squid_host_keeps_the_egress_default_route() -> None:
    captured = ["default via 10.231.250.1 dev eth1"]
    current = ["default via 10.231.250.1 dev eth1", "10.231.250.0/24 dev eth1 scope link"]
    assert snap.route_commands(captured, current) == []


# ---- records ----


def inspect_host(lab: str = "/repo/.lab") -> dict[str, Any]:
    return {
        "Id": "0123456789abcdef",
        "Name": "/plinth-lab-dc1-n1",
        "Config": {
            "Hostname": "dc1-n1",
            "Labels": {"plinth.lab": "1", "plinth.lab.host": "dc1-n1"},
            "Cmd": ["/sbin/init"],
            "StopSignal": "SIGRTMIN+3",
        },
        "HostConfig": {
            "NetworkMode": "plinth-lab-dc1",
            "CapAdd": ["SYS_ADMIN", "NET_ADMIN", "NET_RAW"],
            "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"],
            "CgroupnsMode": "host",
            "Binds": ["/sys/fs/cgroup:/sys/fs/cgroup:rw", f"{lab}/hosts/dc1-n1:/etc/hosts:rw"],
            "Tmpfs": {"/run": "", "/run/lock": "", "/tmp": ""},
            "Memory": 4 * 2**30,
            "Sysctls": None,
        },
        "NetworkSettings": {
            "Networks": {
                "plinth-lab-egress": {
                    "IPAMConfig": None,
                    "Aliases": None,
                    "IPAddress": "10.231.250.2",
                },
                "plinth-lab-dc1": {
                    "IPAMConfig": {"IPv4Address": "10.231.1.11"},
                    "Aliases": ["dc1-n1", "dc1-n1.dc1.lab.plinth.internal", "0123456789ab"],
                    "IPAddress": "10.231.1.11",
                },
            }
        },
    }


def test_container_record_from_inspect() -> None:
    record = snap.ContainerRecord.from_inspect(inspect_host(), ["default via 10.231.1.1", ""])
    assert record.name == "plinth-lab-dc1-n1"
    assert record.hostname == "dc1-n1"
    # the network it was created on comes first; Docker's own id alias is dropped
    assert record.attachments == (
        snap.Attachment(
            "plinth-lab-dc1", "10.231.1.11", ("dc1-n1", "dc1-n1.dc1.lab.plinth.internal")
        ),
        snap.Attachment("plinth-lab-egress", "10.231.250.2", ()),
    )
    assert record.routes == ("default via 10.231.1.1",)
    kwargs = record.create_kwargs("plinth-lab-snapshot:x.plinth-lab-dc1-n1")
    assert kwargs["image"] == "plinth-lab-snapshot:x.plinth-lab-dc1-n1"
    assert kwargs["cap_add"] == ["SYS_ADMIN", "NET_ADMIN", "NET_RAW"]
    assert kwargs["cgroupns"] == "host"
    assert kwargs["stop_signal"] == "SIGRTMIN+3"
    assert kwargs["mem_limit"] == 4 * 2**30
    assert kwargs["tmpfs"] == {"/run": "", "/run/lock": "", "/tmp": ""}
    assert "/repo/.lab/hosts/dc1-n1:/etc/hosts:rw" in kwargs["volumes"]
    assert "sysctls" not in kwargs


def test_bind_sources_follow_the_checkout() -> None:
    record = snap.ContainerRecord.from_inspect(inspect_host("/old/.lab"))
    moved = record.rerooted(Path("/old/.lab"), Path("/new/.lab"))
    assert moved.binds == (
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "/new/.lab/hosts/dc1-n1:/etc/hosts:rw",
    )


def test_snapshot_labels_are_not_carried_into_the_next_snapshot() -> None:
    attrs = inspect_host()
    attrs["Config"]["Labels"].update(
        {"plinth.lab.snapshot": "old", "plinth.lab.snapshot.commit": "x"}
    )
    record = snap.without_snapshot_labels(
        snap.ContainerRecord.from_inspect(attrs), snap.lab_store()
    )
    assert record.labels == {"plinth.lab": "1", "plinth.lab.host": "dc1-n1"}


def test_manifest_round_trip() -> None:
    network = snap.NetworkRecord.from_inspect(
        {
            "Name": "plinth-lab-dc1",
            "Driver": "bridge",
            "Internal": True,
            "IPAM": {"Config": [{"Subnet": "10.231.1.0/24", "Gateway": "10.231.1.1"}]},
            "Labels": {"plinth.lab": "1"},
            "Options": {"com.docker.network.bridge.name": "plab-dc1"},
        }
    )
    assert network.subnet == "10.231.1.0/24"
    assert (network.gateway, network.internal) == ("10.231.1.1", True)
    manifest = snap.Manifest(
        meta=META,
        lab_dir="/repo/.lab",
        controller_key="ssh-ed25519 AAAA plinth-lab-controller",
        networks=(network,),
        containers=(snap.ContainerRecord.from_inspect(inspect_host(), ["default via x"]),),
        bridge_rules=("dc1", "dc2"),
    )
    assert snap.Manifest.from_json(manifest.to_json()) == manifest


# ---- controller state ----


def test_state_tar_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    files = {
        "inventory/lab.yaml": ("name: lab\n", 0o644),
        "inventory/lab-dc1.py": ("hosts = []\n", 0o644),
        "inventory/lab/secrets.json": ("{}\n", 0o600),
        "inventory/lab/pki/root.crt": ("PEM\n", 0o644),
        ".lab/passphrase": ("secret\n", 0o600),
        ".lab/ssh/known_hosts": ("10.231.1.11 ssh-ed25519 AAAA\n", 0o644),
        ".lab/hosts/dc1-n1": ("127.0.0.1\tlocalhost\n", 0o644),
    }
    for relative, (text, mode) in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    # not the lab's: stays out
    (root / "inventory/prod.yaml").write_text("name: prod\n")
    (root / ".lab/ssh/id_ed25519").write_text("private\n")

    listed = snap.state_files(root)
    assert sorted(map(str, listed)) == sorted(files)
    data, digest = snap.state_tar(root, listed)
    assert snap.tar_digest(data) == digest

    target = tmp_path / "restored"
    snap.extract_state(data, target)
    for relative, (text, mode) in files.items():
        assert (target / relative).read_text() == text
        assert (target / relative).stat().st_mode & 0o777 == mode

    (root / "inventory/lab/secrets.json").write_text('{"changed": 1}\n')
    assert snap.state_tar(root, listed)[1] != digest
