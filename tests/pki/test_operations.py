"""pki.private_key and pki.certificate run for real on the @local connector (no Docker)."""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops

from operations import pki as pki_ops
from plinth.pki import LeafSigner, Profile, read_records
from tests.pki.conftest import Pki

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

USER = getpass.getuser()
GROUP = grp.getgrgid(os.getgid()).gr_name

# pyinfra's Inventory and Config constructors are unannotated: called through their types.
new_inventory = cast("Callable[[tuple[list[str], dict[str, Any]]], Inventory]", Inventory)
new_config = cast("Callable[[], Config]", Config)


def deploy(pki: Pki, signer: LeafSigner, tmp_path: Path, rotate: bool = False) -> State:
    """One prepare + execute round; returns the state."""
    inventory = new_inventory((["@local"], {}))
    state = State(inventory, new_config())
    connect_all(state)
    key = str(tmp_path / "etcd.key")
    add_op(state, pki_ops.private_key, name="key", path=key, owner=USER, group=GROUP,
           rotate=rotate)  # fmt: skip
    add_op(
        state, pki_ops.certificate, name="cert", service="etcd", profile=Profile.PEER,
        common_name="etcd1.dc1.grid.example", dns_names=["etcd1.dc1.grid.example"],
        ip_addresses=["10.1.0.31"], cert_path=str(tmp_path / "peer.crt"),
        chain_path=str(tmp_path / "peer-chain.crt"), ca_path=str(tmp_path / "ca.crt"),
        key_path=key, owner=USER, group=GROUP, signer=signer,
    )  # fmt: skip
    run_ops(state)
    assert not state.failed_hosts
    return state


def test_issue_then_noop_then_rotate(pki: Pki, tmp_path: Path) -> None:
    signer = LeafSigner(pki.store, "dc1", "alice", pki.passphrase)
    assert pki.passphrase not in repr(signer)
    deploy(pki, signer, tmp_path)
    assert list(signer.reissues.values()) == ["missing"]
    key = tmp_path / "etcd.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((tmp_path / "peer-chain.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "peer.crt").read_bytes())
    assert chain[0] == leaf and chain[1] == pki.intermediate("dc1")
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert leaf.public_key() == private.public_key()
    assert (tmp_path / "ca.crt").read_bytes() == pki.store.root_cert_path.read_bytes()
    assert stat.S_IMODE((tmp_path / "peer.crt").stat().st_mode) == 0o644
    assert not list(tmp_path.glob("*.plinth-new"))
    serial = format(leaf.serial_number, "X")
    assert next(r for r in read_records(pki.store) if r.serial == serial).service == "etcd"

    signer.reissues.clear()
    key_before = key.read_bytes()
    deploy(pki, signer, tmp_path)
    assert signer.reissues == {}
    assert key.read_bytes() == key_before
    assert x509.load_pem_x509_certificate((tmp_path / "peer.crt").read_bytes()) == leaf

    deploy(pki, signer, tmp_path, rotate=True)
    assert key.read_bytes() != key_before
    rotated = x509.load_pem_x509_certificate((tmp_path / "peer.crt").read_bytes())
    new_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert rotated.public_key() == new_key.public_key()


def write_crl(path: Path, pem: bytes) -> bool:
    """One prepare + execute round of ``pki.crl_file``; whether it changed the host."""
    inventory = new_inventory((["@local"], {}))
    state = State(inventory, new_config())
    connect_all(state)
    metas = add_op(state, pki_ops.crl_file, name="crl", dest=str(path), pem=pem)
    run_ops(state)
    assert not state.failed_hosts
    return any(meta.did_change() for meta in metas.values())


def test_a_crl_is_written_once_and_an_unchanged_one_reloads_nothing(
    pki: Pki, tmp_path: Path
) -> None:
    target = tmp_path / "dc1.crl.pem"
    pem = pki.store.crl_path("dc1").read_bytes()
    assert write_crl(target, pem)
    assert target.read_bytes() == pem and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not list(tmp_path.glob("*.plinth-new"))
    # The second run with the same CRL changes nothing: TlsChanges stays false, no reload.
    assert not write_crl(target, pem)
    assert write_crl(target, pki.store.crl_path("dc2").read_bytes())


@dataclass
class Ran:
    """An operation's outcome as the ``_if`` callables see it at execute time."""

    changed: bool

    def did_change(self) -> bool:
        return self.changed


def test_a_daemon_reloads_for_its_own_certificates_and_for_any_crl() -> None:
    renewed_patroni = pki_ops.TlsChanges({"nginx": Ran(False), "patroni": Ran(True)},
                                         (Ran(False), Ran(False)))  # fmt: skip
    assert renewed_patroni.changed("patroni")
    assert not renewed_patroni.changed("nginx", "nginx-upstream")
    assert not renewed_patroni.crl_changed()
    new_crl = pki_ops.TlsChanges({"nginx": Ran(False)}, (Ran(False), Ran(True)))
    assert new_crl.changed("nginx") and new_crl.crl_changed()
    # A service the host does not carry is simply not among its certificates.
    assert not pki_ops.TlsChanges({}, (Ran(False),)).changed("registry")
