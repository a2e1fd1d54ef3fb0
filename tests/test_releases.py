"""The release table: which Debian releases plinth deploys onto, and what each gives."""

from __future__ import annotations

import copy

import pytest

from plinth.lab.image import image_tag, sources_list
from plinth.model import ModelError, Role, parse_environment
from plinth.releases import (
    BOOKWORM,
    RELEASES,
    TRIXIE,
    UnsupportedRelease,
    on_line,
    release_named,
    upstream_version,
)
from tests.model.test_validation import base_environment


def test_an_environment_names_its_release_and_defaults_to_debian_12() -> None:
    env = parse_environment(base_environment(), "env.yaml")
    assert env.release == "bookworm"
    assert env.debian is BOOKWORM
    assert env.debian.postgresql_bin == "/usr/lib/postgresql/15/bin"


def test_validate_refuses_an_unknown_release_naming_the_file_and_field() -> None:
    data = copy.deepcopy(base_environment())
    data["release"] = "bullseye"
    with pytest.raises(ModelError) as refused:
        parse_environment(data, "env.yaml")
    text = str(refused.value)
    assert "env.yaml" in text and "release" in text
    assert "'bullseye' is not a Debian release plinth knows (bookworm, trixie)" in text


def test_validate_refuses_a_known_release_not_yet_proven_and_says_why() -> None:
    data = copy.deepcopy(base_environment())
    data["release"] = "trixie"
    with pytest.raises(
        ModelError, match=r"Debian 13 \(trixie\) is not supported yet: .*lab suites"
    ):
        parse_environment(data, "env.yaml")


DAEMON_ROLES = (
    Role.ETCD,
    Role.POSTGRESQL,
    Role.HAPROXY,
    Role.KEEPALIVED,
    Role.REDIS,
    Role.SENTINEL,
    Role.RABBITMQ,
    Role.NGINX,
    Role.SQUID,
    Role.REGISTRY,
)


def test_every_release_lists_the_packages_of_every_daemon_role() -> None:
    for release in RELEASES.values():
        for role in DAEMON_ROLES:
            assert release.role_packages[role], (release.codename, role)
        # Every daemon whose line is checked is one the table installs.
        installed = {p for packages in release.role_packages.values() for p in packages}
        assert set(release.daemon_lines) <= installed, release.codename


def test_the_postgresql_line_follows_the_release() -> None:
    assert "postgresql-15" in BOOKWORM.role_packages[Role.POSTGRESQL]
    assert "postgresql-17" in TRIXIE.role_packages[Role.POSTGRESQL]
    assert TRIXIE.postgresql_bin == "/usr/lib/postgresql/17/bin"
    assert (BOOKWORM.python_tag, TRIXIE.python_tag) == ("cp311", "cp313")


def test_release_named_returns_a_supported_release() -> None:
    assert release_named("bookworm") is BOOKWORM
    with pytest.raises(UnsupportedRelease):
        release_named("trixie")


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("5:7.0.15-1~deb12u1", "7.0.15"),
        ("1:2.2.7-1+b2", "2.2.7"),
        ("3.4.23-4+b6", "3.4.23"),
        ("15.14-0+deb12u1", "15.14"),
        ("2.8.3+ds1-2+b8", "2.8.3+ds1"),
        ("1.0", "1.0"),
    ],
)
def test_upstream_version_drops_epoch_and_debian_revision(debian: str, upstream: str) -> None:
    assert upstream_version(debian) == upstream


@pytest.mark.parametrize(
    ("upstream", "line", "expected"),
    [
        ("3.4.23", "3.4", True),
        ("3.5.16", "3.4", False),
        ("3.40.1", "3.4", False),
        ("15.14", "15", True),
        ("2.8.3+ds1", "2.8", True),
        ("6.13", "6", True),
        ("5.7", "5.7", True),
    ],
)
def test_on_line_compares_version_parts(upstream: str, line: str, expected: bool) -> None:
    assert on_line(upstream, line) is expected


def test_the_lab_image_is_one_per_release() -> None:
    mirror = "http://deb.debian.org/debian"
    assert image_tag(mirror, "bookworm").startswith("plinth-lab-base:bookworm-")
    assert image_tag(mirror, "trixie").startswith("plinth-lab-base:trixie-")
    assert "trixie-security" in sources_list(mirror, "trixie")


def test_the_key_value_store_is_redis_on_debian_12_and_valkey_on_debian_13() -> None:
    redis, valkey = BOOKWORM.key_value_store, TRIXIE.key_value_store
    # Debian 12: Redis 7.0, as before.
    assert BOOKWORM.role_packages[Role.REDIS] == ("redis-server", "redis-tools")
    assert BOOKWORM.role_packages[Role.SENTINEL] == ("redis-sentinel", "redis-tools")
    assert (BOOKWORM.daemon_lines["redis-server"], BOOKWORM.daemon_lines["redis-sentinel"]) == (
        "7.0",
        "7.0",
    )
    assert (redis.server_unit, redis.cli, redis.server_config, redis.user) == (
        "redis-server.service",
        "redis-cli",
        "/etc/redis/redis.conf",
        "redis",
    )
    # Debian 13: Valkey 8.1 (BSD-3), no redis-* package at all (Debian 13 has no compat one).
    assert TRIXIE.role_packages[Role.REDIS] == ("valkey-server", "valkey-tools")
    assert TRIXIE.role_packages[Role.SENTINEL] == ("valkey-sentinel", "valkey-tools")
    assert (TRIXIE.daemon_lines["valkey-server"], TRIXIE.daemon_lines["valkey-sentinel"]) == (
        "8.1",
        "8.1",
    )
    installed = {p for packages in TRIXIE.role_packages.values() for p in packages}
    assert not [p for p in installed | set(TRIXIE.daemon_lines) if p.startswith("redis")]
    assert (valkey.server_unit, valkey.sentinel_unit) == (
        "valkey-server.service",
        "valkey-sentinel.service",
    )
    assert (valkey.server_binary, valkey.sentinel_binary, valkey.cli) == (
        "/usr/bin/valkey-server",
        "/usr/bin/valkey-sentinel",
        "valkey-cli",
    )
    assert (valkey.server_config, valkey.sentinel_config, valkey.acl_file) == (
        "/etc/valkey/valkey.conf",
        "/etc/valkey/sentinel.conf",
        "/etc/valkey/users.acl",
    )
    assert (valkey.user, valkey.group, valkey.data_dir, valkey.version_package) == (
        "valkey",
        "valkey",
        "/var/lib/valkey",
        "valkey-server",
    )
    # What the roll compares is a package whose line the release checks.
    for release in RELEASES.values():
        assert release.key_value_store.version_package in release.daemon_lines


def test_the_patroni_lock_follows_the_releases_python(monkeypatch: pytest.MonkeyPatch) -> None:
    from plinth.model import PatroniSettings, _rule_problems

    assert PatroniSettings.lock_path("4.1.5").name == "patroni-4.1.5.txt"
    assert PatroniSettings.lock_path("4.1.5", "cp313").name == "patroni-4.1.5-cp313.txt"
    assert PatroniSettings.lock_path("4.1.5", "cp313").is_file()
    env = parse_environment(base_environment(), "env.yaml")
    # As if Debian 13 were supported: its Patroni lock is the cp313 one.
    on_trixie = env.model_copy(update={"release": "trixie"})
    assert not any("patroni" in p for p in _rule_problems(on_trixie))
    missing = PatroniSettings.lock_path("4.1.5", "cp399")
    monkeypatch.setattr(PatroniSettings, "lock_path", staticmethod(lambda v, t="cp311": missing))
    problems = [p for p in _rule_problems(on_trixie) if "patroni" in p]
    assert problems == [
        "components.patroni.version: no hash lock for Patroni 4.1.5 on Debian 13 (cp313): "
        "commit plinth/locks/patroni-4.1.5-cp399.txt (the command is in "
        "docs/components/postgresql.md)"
    ]
