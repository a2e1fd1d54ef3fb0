"""The lab's base image: Debian with systemd and sshd, from debootstrap (no registry here).

One image per Debian release (the lab environment's ``release``, :mod:`plinth.releases`).

The tag carries a hash of the recipe (packages, mirror, configuration files): change the
recipe and the next ``lab up`` builds a new image; otherwise the present one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from plinth import progress
from plinth.lab import LABEL, LabError, lab_dir
from plinth.lab.topology import security_mirror
from plinth.releases import DEFAULT_RELEASE

IMAGE_REPOSITORY = "plinth-lab-base"
DEFAULT_SUITE = DEFAULT_RELEASE
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "PLINTH_LAB_MIRROR"
SCRATCH_PREFIX = "image-build-"

PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "iptables",
    "ca-certificates",
    "openssl",
    "procps",
    "iputils-ping",
    "less",
    "curl",
    "gnupg",
)

# Units that do nothing useful (or fail) in a container: no consoles, no udev, no kernel
# modules or special filesystems to mount, no disks to trim; apt timers would race the
# deploy for the dpkg lock.
MASKED_UNITS = (
    "getty.target",
    "console-getty.service",
    "getty-static.service",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-hwdb-update.service",
    "systemd-modules-load.service",
    "systemd-remount-fs.service",
    "systemd-firstboot.service",
    "systemd-journald-audit.socket",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
)

PROCSYS_UNIT_NAME = "plinth-lab-procsys.service"
# Docker mounts /proc/sys read-only; only the netns-scoped net.* subtree may be made
# writable again (DESIGN.md), which ip_nonlocal_bind for haproxy/keepalived needs.
# Before systemd-sysctl so the deploy's net.* settings apply at boot.
PROCSYS_UNIT = """\
[Unit]
Description=plinth lab: make /proc/sys/net writable inside the container
DefaultDependencies=no
Before=systemd-sysctl.service sysinit.target network-pre.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mount --bind /proc/sys/net /proc/sys/net && \
mount -o remount,rw,bind /proc/sys/net'

[Install]
WantedBy=sysinit.target
"""

SSHD_CONFIG = """\
# plinth lab: root logs in with the controller's key only; host keys come from the
# controller at container creation (each container gets its own).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
"""


def mirror() -> str:
    return os.environ.get(MIRROR_ENV, DEFAULT_MIRROR).rstrip("/")


def sources_list(main: str, suite: str) -> str:
    return (
        f"deb {main} {suite} main\n"
        f"deb {main} {suite}-updates main\n"
        f"deb {security_mirror(main)} {suite}-security main\n"
    )


def recipe_hash(main: str | None = None, suite: str = DEFAULT_SUITE) -> str:
    """Short hash of everything that shapes the image."""
    recipe = {
        "suite": suite,
        "packages": PACKAGES,
        "mirror": main or mirror(),
        "masked": MASKED_UNITS,
        "procsys": PROCSYS_UNIT,
        "sshd": SSHD_CONFIG,
        "version": 1,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def image_tag(main: str | None = None, suite: str = DEFAULT_SUITE) -> str:
    return f"{IMAGE_REPOSITORY}:{suite}-{recipe_hash(main, suite)}"


def _scratch_root() -> Path:
    return lab_dir()


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts proc/sys in the target)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _remove_scratch(path: Path) -> None:
    # Unmount deepest first: an interrupted debootstrap leaves proc/sys mounted, and
    # rm -rf through a live /sys mount would be a disaster.
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(path):
        raise LabError(f"cannot unmount {path}; unmount by hand, then remove it")
    shutil.rmtree(path, ignore_errors=True)


def clean_build_leftovers() -> list[Path]:
    """Remove scratch dirs of interrupted builds; return what was removed."""
    root = _scratch_root()
    removed = []
    if root.is_dir():
        for leftover in sorted(root.glob(SCRATCH_PREFIX + "*")):
            _remove_scratch(leftover)
            removed.append(leftover)
    return removed


def _run_debootstrap(target: Path, main: str, suite: str, log_path: Path) -> None:
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        suite,
        str(target),
        main,
    ]
    progress.step("image", f"{' '.join(cmd)} (log: {log_path})")
    # Per-package lines are hundreds: each is only what the wait is at (shown every few
    # seconds); the phases are steps of their own; everything is in the log.
    per_package = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ")
    waiting = progress.Waiting("debootstrap")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        last = ""
        for line in proc.stdout:
            log.write(line)
            line = line.rstrip()
            if line:
                last = line
            if line and per_package.match(line):
                waiting.update(line.removeprefix("I: "), changed=False)
            elif line:
                progress.step("image", f"debootstrap: {line}")
        status = proc.wait()
    waiting.end(f"exited with status {status}")
    if status != 0:
        raise LabError(f"debootstrap failed with status {status} ({last}); see {log_path}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _mask(rootfs: Path, unit: str) -> None:
    link = rootfs / "etc/systemd/system" / unit
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def configure_rootfs(rootfs: Path, main: str, suite: str) -> None:
    """Turn a debootstrap tree into a container host image (files only, no chroot)."""
    _write(rootfs / "etc/apt/sources.list", sources_list(main, suite))
    # trixie's debootstrap writes deb822 sources too; one list, the one above.
    deb822 = rootfs / "etc/apt/sources.list.d/debian.sources"
    if deb822.exists():
        deb822.unlink()
    _write(rootfs / "etc/ssh/sshd_config.d/plinth-lab.conf", SSHD_CONFIG)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty machine-id: systemd generates a fresh one in each container at boot.
    _write(rootfs / "etc/machine-id", "", 0o444)
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    for unit in MASKED_UNITS:
        _mask(rootfs, unit)
    _write(rootfs / "etc/systemd/system" / PROCSYS_UNIT_NAME, PROCSYS_UNIT)
    wants = rootfs / "etc/systemd/system/sysinit.target.wants" / PROCSYS_UNIT_NAME
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.is_symlink():
        wants.symlink_to(f"/etc/systemd/system/{PROCSYS_UNIT_NAME}")
    # Docker provides these per container.
    for name in ("etc/hostname", "etc/resolv.conf"):
        path = rootfs / name
        if path.is_symlink() or path.exists():
            path.unlink()
    _write(rootfs / "etc/hostname", "localhost\n")
    root_ssh = rootfs / "root/.ssh"
    root_ssh.mkdir(mode=0o700, exist_ok=True)
    # Keep the image small: package lists and caches are refetched by the deploy.
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/debconf/*-old",
        "var/log/*.log",
        "var/log/apt/*",
    ):
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def _import(
    client: docker.DockerClient, rootfs: Path, tarball: Path, tag: str, recipe: str
) -> None:
    progress.step("image", f"packing {rootfs.name} and importing it as {tag}")
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."],
        check=True,
    )
    repository, _, version = tag.partition(":")
    changes = [
        'CMD ["/sbin/init"]',
        # (STOPSIGNAL is not allowed in an import; containers set SIGRTMIN+3 at create.)
        "ENV container=docker",
        f"LABEL {LABEL}.recipe={recipe}",
    ]
    client.api.import_image_from_file(
        str(tarball), repository=repository, tag=version, changes=changes
    )
    try:
        client.images.get(tag)
    except ImageNotFound:
        raise LabError(
            f"docker import of {tag} reported success but the image is missing"
        ) from None


def ensure_base_image(client: docker.DockerClient, suite: str = DEFAULT_SUITE) -> str:
    """The base image of Debian ``suite``; built with debootstrap when missing, else reused."""
    main = mirror()
    tag = image_tag(main, suite)
    try:
        client.images.get(tag)
        progress.step("image", f"reusing {tag} (built before; its recipe is unchanged)")
        return tag
    except ImageNotFound:
        pass
    if os.geteuid() != 0:
        raise LabError(f"building {tag} needs root (debootstrap); run as root")
    if shutil.which("debootstrap") is None:
        raise LabError(f"building {tag} needs debootstrap: apt-get install debootstrap")
    for leftover in clean_build_leftovers():
        progress.step("image", f"removed leftover of an interrupted build: {leftover}")
    progress.note("image", f"building {tag} with debootstrap (no cached image; minutes)")
    started = time.monotonic()
    recipe = recipe_hash(main, suite)
    scratch = _scratch_root() / f"{SCRATCH_PREFIX}{recipe}"
    scratch.mkdir(parents=True)
    rootfs = scratch / "rootfs"
    try:
        _run_debootstrap(rootfs, main, suite, lab_dir() / "image-build.log")
        configure_rootfs(rootfs, main, suite)
        _import(client, rootfs, scratch / "rootfs.tar", tag, recipe)
    finally:
        _remove_scratch(scratch)
    size = client.images.get(tag).attrs.get("Size", 0) / 2**20
    progress.note("image", f"built {tag} ({size:.0f} MiB) in {time.monotonic() - started:.0f} s")
    return tag
