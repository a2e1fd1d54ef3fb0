from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pytest

from plinth.pki import IssuedCertificate, Profile, reissue_reason, sign_csr
from tests.pki.conftest import Pki

DNS = ["r.dc1.grid.example"]
IPS = ["10.1.0.20"]

Leaf = tuple[IssuedCertificate, bytes]
"""The ``leaf`` fixture: the issued certificate and its key's public PEM."""


@pytest.fixture(scope="module")
def leaf(pki: Pki) -> Leaf:
    key = pki.key()
    issued = sign_csr(pki.store, "dc1", pki.csr(key), Profile.PEER, DNS[0], DNS, IPS,
                      pki.passphrase, "alice", "etcd", "r")  # fmt: skip
    return issued, pki.public_pem(key)


def reason(
    pki: Pki,
    leaf: Leaf,
    now: dt.datetime,
    dns: Iterable[str] = DNS,
    ips: Iterable[str] = IPS,
    issuer: str = "dc1",
    *,
    expected_profile: Profile | None = None,
    expected_common_name: str | None = None,
) -> str | None:
    issued, pub = leaf
    return reissue_reason(
        issued.cert_pem,
        pub,
        dns,
        ips,
        pki.intermediate_pem(issuer),
        now,
        expected_profile=expected_profile,
        expected_common_name=expected_common_name,
    )


def window_start(leaf: Leaf) -> dt.datetime:
    """The instant when exactly one third of the lifetime (90d + 5min backdating) remains."""
    issued, _ = leaf
    return issued.not_after - (dt.timedelta(days=90, minutes=5) / 3)


def test_fresh_certificate_kept(pki: Pki, leaf: Leaf) -> None:
    now = dt.datetime.now(dt.UTC)
    assert (
        reason(pki, leaf, now, expected_profile=Profile.PEER, expected_common_name=DNS[0]) is None
    )


def test_window_edges(pki: Pki, leaf: Leaf) -> None:
    edge = window_start(leaf)
    assert reason(pki, leaf, edge - dt.timedelta(seconds=1)) is None
    assert reason(pki, leaf, edge) is None  # exactly 1/3 left: keep
    assert reason(pki, leaf, edge + dt.timedelta(seconds=1)) == (
        "expires in 30d (< 1/3 of 90d lifetime)"  # 30d 1m39s left
    )


def test_message_with_days_left(pki: Pki, leaf: Leaf) -> None:
    issued, _ = leaf
    now = issued.not_after - dt.timedelta(days=19, hours=3)
    assert reason(pki, leaf, now) == "expires in 19d (< 1/3 of 90d lifetime)"
    assert reason(pki, leaf, issued.not_after - dt.timedelta(hours=5)) == (
        "expires in 5h (< 1/3 of 90d lifetime)"
    )


def test_expired(pki: Pki, leaf: Leaf) -> None:
    issued, _ = leaf
    assert reason(pki, leaf, issued.not_after) == f"expired on {issued.not_after:%Y-%m-%d}"
    assert (reason(pki, leaf, issued.not_after + dt.timedelta(days=3)) or "").startswith("expired")


def test_missing() -> None:
    assert reissue_reason(None, None, DNS, IPS, b"", dt.datetime.now(dt.UTC)) == "missing"


def test_unreadable(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    got = reissue_reason(b"junk", None, DNS, IPS, pki.intermediate_pem(), now)
    assert got == "certificate unreadable"


def test_san_change(pki: Pki, leaf: Leaf) -> None:
    now = dt.datetime.now(dt.UTC)
    got = reason(pki, leaf, now, dns=[*DNS, "vip.dc1.grid.example"], ips=[])
    assert got == "SANs changed: +DNS:vip.dc1.grid.example -IP:10.1.0.20"
    # case and trailing dots are not a change
    assert reason(pki, leaf, now, dns=["R.dc1.grid.example."]) is None


def test_issuer_change(pki: Pki, leaf: Leaf) -> None:
    now = dt.datetime.now(dt.UTC)
    assert reason(pki, leaf, now, issuer="dc2") == "issuer changed"


def test_key_mismatch_and_missing_key(pki: Pki, leaf: Leaf) -> None:
    issued, _ = leaf
    now = dt.datetime.now(dt.UTC)
    other = pki.public_pem(pki.key())
    assert reissue_reason(issued.cert_pem, other, DNS, IPS, pki.intermediate_pem(), now) == (
        "certificate does not match key"
    )
    assert reissue_reason(issued.cert_pem, None, DNS, IPS, pki.intermediate_pem(), now) == (
        "private key missing"
    )


def test_profile_and_cn_change(pki: Pki, leaf: Leaf) -> None:
    now = dt.datetime.now(dt.UTC)
    assert (
        reason(pki, leaf, now, expected_profile=Profile.SERVER) == "profile changed: peer -> server"
    )
    assert reason(pki, leaf, now, expected_common_name="x") == (
        "common name changed: 'r.dc1.grid.example' -> 'x'"
    )


def test_several_reasons_joined(pki: Pki, leaf: Leaf) -> None:
    issued, _ = leaf
    got = reason(pki, leaf, issued.not_after, issuer="dc2", ips=[])
    assert (
        got
        == f"issuer changed; expired on {issued.not_after:%Y-%m-%d}; SANs changed: -IP:10.1.0.20"
    )
