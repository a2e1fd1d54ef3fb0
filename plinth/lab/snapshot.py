"""Lab snapshots: a deployed lab stopped cleanly, committed, and brought back in seconds.

A snapshot ``NAME`` is three things that only make sense together:

- one image per container (``docker commit`` of the stopped container), tagged
  ``plinth-lab-snapshot:NAME.HOST`` and labelled ``plinth.lab.snapshot=NAME`` plus the
  commit of this checkout, the digest of the model (``inventory/lab.yaml``) and the digest
  of the controller-side state below. The hosts' SSH host keys are in their images
  (``/etc/ssh``);
- ``.lab/snapshots/NAME/state.tar``: the controller's side of those hosts: the inventory
  (``inventory/lab.yaml``, ``inventory/lab-*.py``), the lab's PKI and secrets
  (``inventory/lab/``) with the passphrase that opens them (``.lab/passphrase``), the hosts'
  keys as the controller trusts them (``.lab/ssh/known_hosts``) and each host's
  ``/etc/hosts`` (``.lab/hosts/``: bind-mounted, so not in the image);
- ``.lab/snapshots/NAME/manifest.json``: how to recreate the networks and containers
  exactly (what ``docker inspect`` said: names, addresses, aliases, mounts, capabilities,
  limits) and each container's routing table.

Not captured, on purpose: the tmpfs mounts (``/run``, ``/run/lock``, ``/tmp``). The hosts
were shut down by systemd, so nothing in them was meant to survive a reboot: PostgreSQL's
socket directory (``/run/postgresql``, the postgresql-common tmpfiles.d entry), haproxy's
``/run/haproxy`` (its unit's ``RuntimeDirectory``) and the other daemons' run directories are
recreated at boot, as on a real host.

A restore replaces whatever lab is up by the snapshot's. It refuses, unless forced, a
snapshot taken at another commit or from another model than ``lab up`` would write now:
the deploy code or the model would not match the hosts, and a test run on it proves
nothing about this checkout.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.errors import APIError, ImageNotFound, NotFound

from plinth import progress
from plinth.lab import ENV_NAME, LABEL, LabError, lab_dir, ssh_dir
from plinth.lab import network as net
from plinth.lab import topology as topo
from plinth.lab.containers import (
    STOP_TIMEOUT,
    HostInfo,
    clean_leftovers,
    controller_key,
    env_file,
    env_file_text,
    lab_containers,
    lab_document,
    parallel,
    phase,
    remove_host_files,
    remove_inventory,
    wait_ready,
)
from plinth.lab.engine import ensure_engine
from plinth.lab.image import image_tag as base_image_tag
from plinth.model import load_environment
from plinth.stacks import inventory_dir, project_root

SNAPSHOT_REPOSITORY = "plinth-lab-snapshot"
SNAPSHOT_LABEL = f"{LABEL}.snapshot"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
STATE_TAR = "state.tar"
MANIFEST = "manifest.json"
# A restore is a cold start of every host at once: RabbitMQ's start job alone held the
# boot 95-105 s on 2 cores (its nodes recover 28 quorum queues while Airflow starts
# beside them), and once past 180 s; a fresh `lab up` boots nothing of the platform.
RESTORE_BOOT_TIMEOUT = 360.0


@dataclass(frozen=True)
class SnapshotStore:
    """Where snapshots live: image repository, label key, and the controller directory."""

    repository: str
    label: str
    directory: Path

    def image_ref(self, name: str, container: str) -> str:
        return f"{self.repository}:{image_tag(name, container)}"


def lab_store() -> SnapshotStore:
    return SnapshotStore(SNAPSHOT_REPOSITORY, SNAPSHOT_LABEL, lab_dir() / "snapshots")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise LabError(
            f"snapshot name {name!r} is not valid: lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 63 characters"
        )
    return name


def image_tag(name: str, container: str) -> str:
    """``NAME.CONTAINER``: unambiguous, since neither a snapshot nor a container name
    has a dot; the labels stay the source of truth."""
    return f"{check_name(name)}.{container}"


def snapshot_labels(
    store: SnapshotStore, name: str, container: str, meta: SnapshotMeta
) -> dict[str, str]:
    """Labels of one snapshot image: what `snapshots` lists and `restore` checks."""
    return {
        store.label: name,
        f"{store.label}.container": container,
        f"{store.label}.created": meta.created,
        f"{store.label}.commit": meta.commit,
        f"{store.label}.dirty": "1" if meta.dirty else "0",
        f"{store.label}.model": meta.model_digest,
        f"{store.label}.state": meta.state_digest,
        f"{store.label}.profile": meta.profile,
    }


# ---- what a snapshot remembers ----


@dataclass(frozen=True)
class SnapshotMeta:
    name: str
    created: str
    """UTC, ISO 8601 to the second."""
    commit: str
    """``git rev-parse HEAD`` of the checkout, or ``unknown`` outside git."""
    dirty: bool
    """The checkout had uncommitted changes: the commit alone does not say what ran."""
    model_digest: str
    state_digest: str
    profile: str
    isolated: bool = False


@dataclass(frozen=True)
class Attachment:
    network: str
    address: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerRecord:
    """What it takes to create the same container again (from ``docker inspect``)."""

    name: str
    hostname: str
    labels: dict[str, str]
    command: tuple[str, ...] | None
    cap_add: tuple[str, ...]
    security_opt: tuple[str, ...]
    cgroupns: str | None
    binds: tuple[str, ...]
    tmpfs: dict[str, str]
    memory: int
    sysctls: dict[str, str]
    stop_signal: str | None
    attachments: tuple[Attachment, ...]
    """The first one is the network the container is created on; the others are
    connected before its first start (the default route comes from the first that has a
    gateway, as when ``lab up`` made it)."""
    routes: tuple[str, ...] = ()
    """``ip -4 route show`` inside the container when it was captured."""

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any], routes: Iterable[str] = ()) -> ContainerRecord:
        config = attrs.get("Config") or {}
        host_config = attrs.get("HostConfig") or {}
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        short_id = str(attrs.get("Id", ""))[:12]
        primary = host_config.get("NetworkMode")
        order = sorted(networks, key=lambda n: (n != primary, n))
        attachments = []
        for network in order:
            endpoint = networks[network] or {}
            address = (endpoint.get("IPAMConfig") or {}).get("IPv4Address") or endpoint.get(
                "IPAddress", ""
            )
            # Docker adds the short container id as an alias on user networks by itself.
            aliases = tuple(a for a in endpoint.get("Aliases") or () if a != short_id)
            attachments.append(Attachment(network, address, aliases))
        command = config.get("Cmd")
        return cls(
            name=str(attrs.get("Name", "")).lstrip("/"),
            hostname=config.get("Hostname", ""),
            labels=dict(config.get("Labels") or {}),
            command=tuple(command) if command else None,
            cap_add=tuple(host_config.get("CapAdd") or ()),
            security_opt=tuple(host_config.get("SecurityOpt") or ()),
            cgroupns=host_config.get("CgroupnsMode") or None,
            binds=tuple(host_config.get("Binds") or ()),
            tmpfs=dict(host_config.get("Tmpfs") or {}),
            memory=int(host_config.get("Memory") or 0),
            sysctls=dict(host_config.get("Sysctls") or {}),
            stop_signal=config.get("StopSignal") or None,
            attachments=tuple(attachments),
            routes=tuple(line for line in routes if line.strip()),
        )

    def create_kwargs(self, image: str) -> dict[str, Any]:
        """``containers.create`` arguments, except the network endpoint (needs the API)."""
        kwargs: dict[str, Any] = {
            "image": image,
            "name": self.name,
            "hostname": self.hostname,
            "labels": dict(self.labels),
            "detach": True,
            "cap_add": list(self.cap_add),
            "security_opt": list(self.security_opt),
            "volumes": list(self.binds),
            "tmpfs": dict(self.tmpfs),
        }
        if self.command:
            kwargs["command"] = list(self.command)
        if self.cgroupns:
            kwargs["cgroupns"] = self.cgroupns
        if self.memory:
            kwargs["mem_limit"] = self.memory
        if self.sysctls:
            kwargs["sysctls"] = dict(self.sysctls)
        if self.stop_signal:
            kwargs["stop_signal"] = self.stop_signal
        return kwargs

    def rerooted(self, old: Path, new: Path) -> ContainerRecord:
        """The same container with bind sources under ``old`` moved under ``new`` (the
        checkout moved, e.g. another worktree restores the snapshot)."""
        if old == new:
            return self
        binds = []
        for bind in self.binds:
            source, sep, rest = bind.partition(":")
            if Path(source).is_relative_to(old):
                source = str(new / Path(source).relative_to(old))
            binds.append(source + sep + rest)
        return ContainerRecord(**{**_fields(self), "binds": tuple(binds)})


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    driver: str
    internal: bool
    subnet: str
    gateway: str | None
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_inspect(cls, attrs: Mapping[str, Any]) -> NetworkRecord:
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        ipv4: dict[str, str] = next((c for c in configs if ":" not in c.get("Subnet", ":")), {})
        return cls(
            name=attrs.get("Name", ""),
            driver=attrs.get("Driver", "bridge"),
            internal=bool(attrs.get("Internal")),
            subnet=ipv4.get("Subnet", ""),
            gateway=ipv4.get("Gateway") or None,
            labels=dict(attrs.get("Labels") or {}),
            options=dict(attrs.get("Options") or {}),
        )


@dataclass(frozen=True)
class Manifest:
    meta: SnapshotMeta
    lab_dir: str
    """``.lab`` of the checkout that took it (bind sources are rerooted on restore)."""
    controller_key: str
    """The public key the hosts' ``authorized_keys`` hold."""
    networks: tuple[NetworkRecord, ...]
    containers: tuple[ContainerRecord, ...]
    bridge_rules: tuple[str, ...] = ()
    """DC names whose bridges need the DOCKER-USER rule (isolated lab with a router)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        containers = []
        for item in data["containers"]:
            item["attachments"] = tuple(
                Attachment(a["network"], a["address"], tuple(a["aliases"]))
                for a in item["attachments"]
            )
            for key in ("cap_add", "security_opt", "binds", "routes"):
                item[key] = tuple(item[key])
            item["command"] = tuple(item["command"]) if item["command"] else None
            containers.append(ContainerRecord(**item))
        return cls(
            meta=SnapshotMeta(**data["meta"]),
            lab_dir=data["lab_dir"],
            controller_key=data["controller_key"],
            networks=tuple(NetworkRecord(**n) for n in data["networks"]),
            containers=tuple(containers),
            bridge_rules=tuple(data.get("bridge_rules", ())),
        )


def _fields(record: ContainerRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


# ---- pure decisions ----


def _via_routes(table: Iterable[str]) -> dict[str, str]:
    """``{destination: gateway}`` of the gateway routes in ``ip -4 route show`` lines."""
    routes = {}
    for line in table:
        fields = line.split()
        if "via" in fields and fields.index("via") + 1 < len(fields):
            routes[fields[0]] = fields[fields.index("via") + 1]
    return routes


def route_commands(captured: Iterable[str], current: Iterable[str]) -> list[list[str]]:
    """``ip`` commands that turn the table Docker gives a new container into the captured
    one. Only gateway routes are compared: the interface routes come back with the
    addresses. A default route Docker adds that the captured table did not have (an
    isolated host, whose default route ``lab up`` deleted) is deleted again."""
    wanted, have = _via_routes(captured), _via_routes(current)
    commands = []
    if "default" in have and "default" not in wanted:
        commands.append(["ip", "route", "del", "default"])
    for destination, via in wanted.items():
        if have.get(destination) != via:
            commands.append(["ip", "route", "replace", destination, "via", via])
    return commands


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "no commit (not a git checkout)"


def restore_refusals(
    meta: SnapshotMeta, commit: str | None, model_digest: str, model_source: str
) -> list[str]:
    """Why restoring ``meta`` here would test something else than this checkout (empty:
    nothing differs). ``model_source`` names what ``model_digest`` was computed from."""
    problems = []
    if meta.commit != (commit or "unknown"):
        problems.append(
            f"it was taken at commit {_short(meta.commit)}, this checkout is at {_short(commit)}"
        )
    if meta.model_digest != model_digest:
        problems.append(
            f"its model (inventory/lab.yaml {meta.model_digest[:12]}) differs from what "
            f"{model_source} writes now ({model_digest[:12]})"
        )
    return problems


def meta_from_labels(labels: Mapping[str, str], label: str = SNAPSHOT_LABEL) -> SnapshotMeta:
    return SnapshotMeta(
        name=labels.get(label, "?"),
        created=labels.get(f"{label}.created", "?"),
        commit=labels.get(f"{label}.commit", "unknown"),
        dirty=labels.get(f"{label}.dirty") == "1",
        model_digest=labels.get(f"{label}.model", ""),
        state_digest=labels.get(f"{label}.state", ""),
        profile=labels.get(f"{label}.profile", "?"),
    )


@dataclass(frozen=True)
class SnapshotListing:
    meta: SnapshotMeta
    images: int
    size: int
    """Bytes the snapshot's images add over their parents (freed when it is removed,
    unless a later snapshot was taken on top of it)."""
    complete: bool
    """Its controller state (``.lab/snapshots/NAME``) is there too."""


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"


def format_listing(snapshots: Iterable[SnapshotListing]) -> list[str]:
    """The table of ``plinth lab snapshots`` (header first), sorted by creation."""
    rows = sorted(snapshots, key=lambda s: (s.meta.created, s.meta.name))
    lines = [
        f"{'NAME':<20} {'PROFILE':<8} {'SIZE':>9} {'CREATED':<20} {'COMMIT':<14} MODEL",
    ]
    for row in rows:
        commit = row.meta.commit[:12] + ("+" if row.meta.dirty else "")
        note = "" if row.complete else "  (incomplete: no controller state; remove it)"
        lines.append(
            f"{row.meta.name:<20} {row.meta.profile:<8} {_size(row.size):>9} "
            f"{row.meta.created:<20} {commit:<14} {row.meta.model_digest[:12]}{note}"
        )
    return lines


# ---- controller-side state ----


def state_files(root: Path) -> list[Path]:
    """The controller files a restored lab needs, relative to the checkout ``root``."""
    inv = root / "inventory"
    lab = root / ".lab"
    candidates = [inv / f"{ENV_NAME}.yaml", *sorted(inv.glob(f"{ENV_NAME}-*.py"))]
    candidates += sorted(p for p in (inv / ENV_NAME).rglob("*") if p.is_file())
    candidates += [lab / "passphrase", lab / "ssh" / "known_hosts"]
    candidates += sorted(p for p in (lab / "hosts").rglob("*") if p.is_file())
    return [p.relative_to(root) for p in candidates if p.is_file()]


def state_tar(root: Path, files: Iterable[Path]) -> tuple[bytes, str]:
    """A tar of ``files`` (relative to ``root``, modes kept) and the digest of its
    content: names, modes and bytes, independent of times and owners."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        # Sorted as strings: tar_digest sees member names, not paths.
        for relative in sorted(files, key=str):
            path = root / relative
            content = path.read_bytes()
            mode = path.stat().st_mode & 0o777
            info = tarfile.TarInfo(str(relative))
            info.size, info.mode, info.mtime = len(content), mode, int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(content))
            digest.update(f"{relative}\0{mode:o}\0{len(content)}\0".encode())
            digest.update(content)
    return buffer.getvalue(), digest.hexdigest()


def tar_digest(data: bytes) -> str:
    """The digest ``state_tar`` gave when it wrote ``data``."""
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            handle = tar.extractfile(member)
            content = handle.read() if handle else b""
            digest.update(f"{member.name}\0{member.mode & 0o777:o}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()


def extract_state(data: bytes, root: Path) -> list[str]:
    """Write the files of a state tar under ``root`` (only plain files, only inside)."""
    written = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            relative = Path(member.name)
            if not member.isfile() or relative.is_absolute() or ".." in relative.parts:
                raise LabError(f"snapshot state has an unexpected entry {member.name!r}")
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tar.extractfile(member)
            target.write_bytes(handle.read() if handle else b"")
            target.chmod(member.mode & 0o777)
            written.append(str(relative))
    return written


def git_commit(root: Path) -> tuple[str, bool]:
    """(HEAD, has uncommitted changes) of the checkout; ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(status)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- Docker mechanics (any containers: the lab's, or a test's own) ----


def capture(client: docker.DockerClient, container: Any) -> ContainerRecord:
    """The container's record, with its routing table if it runs."""
    container.reload()
    routes: list[str] = []
    if container.status == "running":
        code, out = container.exec_run(["ip", "-4", "route", "show"])
        if code == 0:
            routes = out.decode(errors="replace").splitlines()
    return ContainerRecord.from_inspect(container.attrs, routes)


def without_snapshot_labels(record: ContainerRecord, store: SnapshotStore) -> ContainerRecord:
    """The record without the labels a container inherits from the snapshot image it was
    restored from: the new snapshot's image carries its own."""
    labels = {
        k: v
        for k, v in record.labels.items()
        if k != store.label and not k.startswith(store.label + ".")
    }
    return ContainerRecord(**{**_fields(record), "labels": labels})


def stop_cleanly(container: Any, timeout: int) -> float:
    """Stop with the container's stop signal (systemd: SIGRTMIN+3, a clean shutdown);
    refuse to go on if it had to be killed. Returns the seconds it took."""
    started = time.monotonic()
    waiting = progress.Waiting(_host_name(container))
    waiting.update(f"systemd to shut its units down (up to {timeout} s, then killed)")
    container.stop(timeout=timeout)
    container.reload()
    code = container.attrs["State"]["ExitCode"]
    # 137 = SIGKILL after the timeout: daemons may have been cut mid-write.
    if code == 137:
        raise LabError(
            f"{container.name} did not shut down within {timeout} s and was killed; its "
            "disk state may be torn: not snapshotting it (see `docker logs` for the unit "
            "that hung)"
        )
    waiting.end("stopped cleanly")
    return time.monotonic() - started


def _host_name(container: Any) -> str:
    """The lab host a container is (its label), else the container's name."""
    return str((container.labels or {}).get(f"{LABEL}.host") or container.name)


def commit(container: Any, ref: str, labels: Mapping[str, str]) -> str:
    """``docker commit`` of a stopped container into ``ref`` with ``labels``; image id."""
    repository, _, tag = ref.partition(":")
    changes = [f'LABEL {key}="{value}"' for key, value in sorted(labels.items())]
    image = container.commit(repository=repository, tag=tag, changes=changes, pause=False)
    progress.step(_host_name(container), f"committed as {ref}")
    return str(image.id)


def create_network(client: docker.DockerClient, record: NetworkRecord) -> Any:
    ipam = docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=record.subnet, gateway=record.gateway)]
    )
    try:
        return client.networks.create(
            record.name,
            driver=record.driver,
            ipam=ipam,
            internal=record.internal,
            labels=dict(record.labels),
            options=dict(record.options),
        )
    except APIError as error:
        raise LabError(
            f"cannot create network {record.name} ({record.subnet}): {error.explanation or error}"
        ) from None


def recreate(client: docker.DockerClient, record: ContainerRecord, image: str) -> Any:
    """Create the container of ``record`` from ``image``, attach it like before, start it
    and put its routes back."""
    primary, *others = record.attachments
    endpoint = client.api.create_endpoint_config(
        ipv4_address=primary.address or None, aliases=list(primary.aliases) or None
    )
    try:
        container = client.containers.create(
            **record.create_kwargs(image),
            network=primary.network,
            networking_config={primary.network: endpoint},
        )
        for attachment in others:
            client.networks.get(attachment.network).connect(
                container,
                ipv4_address=attachment.address or None,
                aliases=list(attachment.aliases) or None,
            )
        container.start()
    except APIError as error:
        raise LabError(f"recreating {record.name}: {error.explanation or error}") from None
    if record.routes:
        code, out = container.exec_run(["ip", "-4", "route", "show"])
        current = out.decode(errors="replace").splitlines() if code == 0 else []
        for command in route_commands(record.routes, current):
            code, out = container.exec_run(command)
            if code != 0 and b"No such process" not in out:
                raise LabError(f"{record.name}: `{' '.join(command)}` failed: {out!r}")
    host = record.labels.get(f"{LABEL}.host") or record.name
    progress.step(host, f"container recreated and started ({primary.address or 'no address'})")
    return container


def remove_images(client: docker.DockerClient, store: SnapshotStore, name: str | None) -> list[str]:
    """Untag every image of snapshot ``name`` (all snapshots if None). Docker deletes an
    untagged image once no container and no later snapshot is built on it."""
    selector = store.label if name is None else f"{store.label}={name}"
    removed = []
    for image in client.images.list(filters={"label": selector}):
        for tag in image.tags:
            if not tag.startswith(store.repository + ":"):
                continue
            try:
                # force: untag even while a lab container runs from it (the lab that
                # the snapshot restored); the untagged image goes with that container
                # (`remove_unused`, called by `lab down`).
                client.images.remove(tag, force=True)
            except NotFound:
                continue
            removed.append(f"image {tag}")
    # Untagged leftovers of ours that nothing uses any more (e.g. replaced snapshots).
    for image in client.images.list(all=True, filters={"label": selector, "dangling": True}):
        try:
            client.images.remove(image.id)
        except (NotFound, APIError):
            continue  # a container or a child image still uses it: Docker keeps it
    return removed


def listing(client: docker.DockerClient, store: SnapshotStore) -> list[SnapshotListing]:
    by_name: dict[str, list[Any]] = {}
    for image in client.images.list(filters={"label": store.label}):
        if not any(t.startswith(store.repository + ":") for t in image.tags):
            continue
        by_name.setdefault(image.labels.get(store.label, "?"), []).append(image)
    result = []
    for name, images in by_name.items():
        size = 0
        for image in images:
            own = int(image.attrs.get("Size", 0))
            parent = image.attrs.get("Parent")
            if parent:
                with contextlib.suppress(ImageNotFound):
                    own -= int(client.images.get(parent).attrs.get("Size", 0))
            size += max(own, 0)
        meta = meta_from_labels(images[0].labels, store.label)
        complete = (store.directory / name / MANIFEST).is_file()
        result.append(SnapshotListing(meta, len(images), size, complete))
    return result


# ---- the lab ----


@dataclass
class SnapshotResult:
    name: str
    timings: dict[str, float]
    images: list[str]
    replaced: bool = False


def _current_model(profile: str, isolated: bool) -> tuple[str, str]:
    source = f"`plinth lab up --profile {profile} --{'isolated' if isolated else 'connected'}`"
    document = lab_document("full" if profile == "full" else "small", isolated)
    return text_digest(env_file_text(document)), source


def _controller_public_key() -> str:
    path = ssh_dir() / "id_ed25519.pub"
    return path.read_text().strip() if path.exists() else ""


def take_snapshot(name: str, stop_timeout: int | None = None) -> SnapshotResult:
    """Stop the lab cleanly, commit every container, keep the controller state, and bring
    the lab back from the snapshot just taken (so the lab that runs afterwards is what
    any later restore gives)."""
    check_name(name)
    store = lab_store()
    timings: dict[str, float] = {}
    client = _engine()
    containers = sorted(lab_containers(client), key=lambda c: c.name)
    if not containers or not env_file().exists():
        raise LabError("no lab to snapshot: run `plinth lab up` (and deploy it) first")
    not_running = [c.name for c in containers if c.status != "running"]
    if not_running:
        raise LabError(
            f"{', '.join(not_running)} not running: a snapshot of it would not restore "
            "healthy; `docker start` it (or `plinth lab up` again), then snapshot"
        )
    root = project_root()
    env_text = env_file().read_text()
    profile, isolated = topo.profile_of(yaml.safe_load(env_text))
    commit_id, dirty = git_commit(root)
    data, state_digest = state_tar(root, state_files(root))
    meta = SnapshotMeta(
        name=name,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        commit=commit_id,
        dirty=dirty,
        model_digest=text_digest(env_text),
        state_digest=state_digest,
        profile=profile,
        isolated=isolated,
    )
    with phase(timings, "capture"):
        records = [without_snapshot_labels(capture(client, c), store) for c in containers]
        networks = [
            NetworkRecord.from_inspect(n.attrs)
            for n in client.networks.list(filters={"label": f"{LABEL}=1"})
        ]
    bridge_rules = (
        tuple(topo.datacenters_of(profile)) if isolated and topo.has_router(profile) else ()
    )
    manifest = Manifest(
        meta=meta,
        lab_dir=str(lab_dir()),
        controller_key=_controller_public_key(),
        networks=tuple(networks),
        containers=tuple(records),
        bridge_rules=bridge_rules,
    )
    with phase(timings, "stop"):
        parallel(lambda c: stop_cleanly(c, stop_timeout or STOP_TIMEOUT), containers)
    directory = store.directory / name
    replaced = directory.exists() or bool(
        client.images.list(filters={"label": f"{store.label}={name}"})
    )
    with phase(timings, "commit"):
        refs = [store.image_ref(name, r.name) for r in records]
        parallel(
            lambda pair: commit(pair[0], pair[1], snapshot_labels(store, name, pair[0].name, meta)),
            list(zip(containers, refs, strict=True)),
        )
    with phase(timings, "state"):
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        store.directory.chmod(0o700)  # the tar holds the lab's passphrase and secrets
        (directory / STATE_TAR).write_bytes(data)
        (directory / MANIFEST).write_text(manifest.to_json())
        progress.step("state", f"kept in {directory}")
    restored = _recreate_lab(client, store, manifest)
    timings.update({f"restore {k}": v for k, v in restored.items()})
    if replaced:
        remove_unused(client, store)
    return SnapshotResult(name, timings, refs, replaced)


def remove_unused(client: docker.DockerClient, store: SnapshotStore) -> None:
    """Delete untagged snapshot images nothing uses (left by a replaced snapshot)."""
    for image in client.images.list(all=True, filters={"label": store.label, "dangling": True}):
        try:
            client.images.remove(image.id)
        except (NotFound, APIError):
            continue


def _engine() -> docker.DockerClient:
    return ensure_engine(start=False)


def read_manifest(store: SnapshotStore, name: str) -> tuple[Manifest, bytes]:
    directory = store.directory / check_name(name)
    try:
        manifest = Manifest.from_json((directory / MANIFEST).read_text())
        data = (directory / STATE_TAR).read_bytes()
    except FileNotFoundError:
        raise LabError(
            f"no snapshot {name!r} in {store.directory} (`plinth lab snapshots` lists them)"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise LabError(f"snapshot {name!r}: unreadable {directory / MANIFEST} ({error})") from None
    return manifest, data


def restore_snapshot(name: str, force: bool = False) -> dict[str, float]:
    """Replace whatever lab is up by snapshot ``name``; returns phase timings."""
    store = lab_store()
    manifest, data = read_manifest(store, name)
    client = _engine()
    meta = manifest.meta
    if tar_digest(data) != meta.state_digest:
        raise LabError(
            f"snapshot {name}: {store.directory / name / STATE_TAR} does not match the "
            "snapshot's images (state digest differs); take the snapshot again"
        )
    for record in manifest.containers:
        ref = store.image_ref(name, record.name)
        try:
            image = client.images.get(ref)
        except ImageNotFound:
            raise LabError(f"snapshot {name} is incomplete: image {ref} is missing") from None
        if (image.labels or {}).get(f"{store.label}.state") != meta.state_digest:
            raise LabError(f"snapshot {name}: image {ref} belongs to another snapshot {name}")
    if manifest.controller_key and manifest.controller_key != _controller_public_key():
        raise LabError(
            f"snapshot {name}: its hosts trust another controller key than "
            f"{ssh_dir() / 'id_ed25519.pub'}; nothing was changed"
        )
    commit_id, _ = git_commit(project_root())
    model_digest, source = _current_model(meta.profile, meta.isolated)
    problems = restore_refusals(meta, commit_id, model_digest, source)
    if problems and not force:
        raise LabError(
            f"restore of snapshot {name} refused: {'; '.join(problems)}; nothing was "
            "changed (--force restores it anyway)"
        )
    for problem in problems:
        progress.warning("restore", f"forced although {problem}")
    return _recreate_lab(client, store, manifest, data)


def _recreate_lab(
    client: docker.DockerClient,
    store: SnapshotStore,
    manifest: Manifest,
    state: bytes | None = None,
) -> dict[str, float]:
    """Remove the lab that is there, put the snapshot's controller state back (when
    given), recreate networks and containers, wait until every host answers SSH with the
    host key known_hosts expects."""
    timings: dict[str, float] = {}
    name = manifest.meta.name
    with phase(timings, "remove"):
        clean_leftovers(client)
        remove_unused(client, store)  # of snapshots removed while their lab ran
        if state is not None:
            remove_inventory()
            remove_host_files()
            extract_state(state, project_root())
    with phase(timings, "networks"):
        for record in manifest.networks:
            create_network(client, record)
            progress.step("networks", f"{record.name} ({record.subnet})")
        if manifest.bridge_rules:
            helper = base_image_tag()
            if not client.images.list(name=helper):
                helper = store.image_ref(name, manifest.containers[0].name)
            net.allow_bridged(client, helper, list(manifest.bridge_rules))
    old, new = Path(manifest.lab_dir), lab_dir()
    with phase(timings, "containers"):
        parallel(
            lambda r: recreate(client, r.rerooted(old, new), store.image_ref(name, r.name)),
            list(manifest.containers),
        )
    env = load_environment(inventory_dir() / f"{ENV_NAME}.yaml")
    infos = [
        HostInfo(h.name, topo.container_name(h.name), h.datacenter, str(h.address))
        for h in env.hosts
    ]
    key_path, _ = controller_key()
    with phase(timings, "ssh-ready"):
        parallel(
            lambda h: wait_ready(h, key_path, ssh_dir() / "known_hosts", RESTORE_BOOT_TIMEOUT),
            infos,
        )
    for info in infos:
        if info.failed_units:
            progress.warning(info.name, f"degraded, failed units: {', '.join(info.failed_units)}")
    return timings


def remove_snapshots(name: str | None = None) -> list[str]:
    """Remove snapshot ``name`` (all if None): images and controller state."""
    store = lab_store()
    client = _engine()
    removed = remove_images(client, store, name)
    targets = [store.directory / check_name(name)] if name else [store.directory]
    for path in targets:
        if path.exists():
            shutil.rmtree(path)
            removed.append(f"{path}/")
    return removed


def leftover_snapshots(client: docker.DockerClient) -> list[str]:
    """Snapshot images or state still present (``lab down --all`` must leave none)."""
    store = lab_store()
    found = [
        f"image {image.short_id}"
        for image in client.images.list(all=True, filters={"label": store.label})
    ]
    if store.directory.exists():
        found.append(str(store.directory))
    return found
