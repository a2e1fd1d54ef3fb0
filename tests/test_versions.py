"""``plinth versions``: readings -> rows, verdicts, summary, JSON and exit code (no host
contacted), the wheelhouse-release fact's command and parser, and the command's wiring."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pyinfra.api.exceptions import FactProcessError

from facts.versions import (
    AIRFLOW_PREFIX,
    PATRONI_PREFIX,
    WHEELHOUSE_VENVS,
    WheelhouseReleases,
    dist_info_name,
    parse_wheelhouse_releases,
)
from plinth.cli import main
from plinth.model import load_environment
from plinth.plan import PlanError
from plinth.releases import BOOKWORM, TRIXIE
from plinth.versions import (
    AIRFLOW,
    DEBIAN,
    DIFFERS,
    MISSING,
    OK,
    PATRONI,
    WHEELHOUSE,
    Expected,
    HostReading,
    HostVersions,
    UnreadHost,
    VersionsReport,
    build_report,
    check_host,
    expected_daemons,
    judge,
)

REPO = Path(__file__).resolve().parents[1]

# What a healthy bookworm host of each kind reports (dpkg -l, via DebPackages).
DB_PACKAGES: dict[str, set[str]] = {
    "etcd-server": {"3.4.23-4+b6"},
    "etcd-client": {"3.4.23-4+b6"},
    "postgresql-15": {"15.14-0+deb12u1"},
    "postgresql-client-15": {"15.14-0+deb12u1"},
    "python3-venv": {"3.11.2-1+b1"},
    "redis-server": {"5:7.0.15-1~deb12u1"},
    "redis-sentinel": {"5:7.0.15-1~deb12u1"},
    "redis-tools": {"5:7.0.15-1~deb12u1"},
    "rabbitmq-server": {"3.10.8-1.1"},
    "libc6": {"2.36-9+deb12u10"},
}
EDGE_PACKAGES: dict[str, set[str]] = {
    "haproxy": {"2.6.12-1+deb12u2"},
    "keepalived": {"1:2.2.7-1+b2"},
    "nginx": {"1.22.1-9+deb12u2"},
    "squid": {"5.7-2+deb12u4"},
}
APP_PACKAGES: dict[str, set[str]] = {"docker-registry": {"2.8.2+ds1-1+b6"}}
WHEELS = {PATRONI: "4.1.5", AIRFLOW: "3.3.2"}


def bookworm(roles: list[str]) -> tuple[Expected, ...]:
    return expected_daemons(BOOKWORM, roles, patroni="4.1.5", airflow="3.3.2")


def reading(packages: dict[str, set[str]], **wheelhouse: str | None) -> HostReading:
    return HostReading(packages, {PATRONI: None, AIRFLOW: None, **wheelhouse})


def row_of(host: HostVersions, daemon: str) -> tuple[str | None, str | None, str, str]:
    row = next(r for r in host.rows if r.daemon == daemon)
    return row.installed, row.upstream, row.expected, row.verdict


# ---- what a host should run ----


def test_a_host_expects_only_its_roles_daemons_in_the_tables_order() -> None:
    wanted = bookworm(["etcd", "postgresql", "redis", "sentinel", "rabbitmq", "minio"])
    assert [(e.daemon, e.source, e.expected) for e in wanted] == [
        ("postgresql-15", DEBIAN, "15"),
        ("etcd-server", DEBIAN, "3.4"),
        ("redis-server", DEBIAN, "7.0"),
        ("redis-sentinel", DEBIAN, "7.0"),
        ("rabbitmq-server", DEBIAN, "3.10"),
        ("patroni", WHEELHOUSE, "4.1.5"),
    ]
    # clients and python3-venv carry no daemon: not in daemon_lines, not checked
    assert [e.daemon for e in bookworm(["haproxy", "keepalived", "nginx", "squid"])] == [
        "haproxy",
        "keepalived",
        "nginx",
        "squid",
    ]


def test_airflow_hosts_expect_the_models_airflow_and_their_other_roles() -> None:
    app = bookworm(["registry", "airflow-api", "airflow-worker"])
    assert [(e.daemon, e.expected) for e in app] == [
        ("docker-registry", "2.8"),
        ("airflow", "3.3.2"),
    ]
    assert [e.daemon for e in bookworm(["airflow-worker"])] == ["airflow"]


def test_a_host_with_no_daemon_roles_expects_nothing() -> None:
    assert bookworm(["minio"]) == ()
    assert bookworm([]) == ()


def test_roles_may_be_role_enums_and_the_release_decides_the_lines() -> None:
    from plinth.model import Role

    trixie = expected_daemons(TRIXIE, [Role.ETCD, Role.POSTGRESQL], patroni="4.1.5", airflow="x")
    assert [(e.daemon, e.expected) for e in trixie] == [
        ("postgresql-17", "17"),
        ("etcd-server", "3.5"),
        ("patroni", "4.1.5"),
    ]


# ---- verdicts ----


@pytest.mark.parametrize(
    ("daemon", "line", "version", "upstream"),
    [
        ("redis-server", "7.0", "5:7.0.15-1~deb12u1", "7.0.15"),  # epoch, ~ suffix
        ("keepalived", "2.2", "1:2.2.7-1+b2", "2.2.7"),  # binNMU
        ("keepalived", "2.2", "2.2.7-1+b2", "2.2.7"),
        ("etcd-server", "3.4", "3.4.23-4+b6", "3.4.23"),
        ("postgresql-15", "15", "15.14-0+deb12u1", "15.14"),
        ("docker-registry", "2.8", "2.8.2+ds1-1+b6", "2.8.2+ds1"),  # +dfsg-like suffix
        ("rabbitmq-server", "3.10", "3.10.8-1.1", "3.10.8"),
        ("squid", "5.7", "5.7-2+deb12u4", "5.7"),
    ],
)
def test_a_debian_version_on_its_line_is_ok(
    daemon: str, line: str, version: str, upstream: str
) -> None:
    row = judge(Expected(daemon, DEBIAN, line), reading({daemon: {version}}))
    assert (row.installed, row.upstream, row.expected, row.verdict) == (
        version,
        upstream,
        line,
        OK,
    )


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("3.4", "3.5.16-4"),  # the next line
        ("3.4", "3.40.1-1"),  # not a prefix match
        ("7.0", "5:8.0.2-3"),
        ("15", "17.5-1.pgdg120+1"),  # PGDG's major
    ],
)
def test_a_debian_version_on_another_line_differs(line: str, version: str) -> None:
    row = judge(Expected("pkg", DEBIAN, line), reading({"pkg": {version}}))
    assert row.verdict == DIFFERS
    assert row.installed == version


def test_a_package_not_installed_is_missing() -> None:
    row = judge(Expected("etcd-server", DEBIAN, "3.4"), reading({"etcd-client": {"3.4.23-4"}}))
    assert (row.installed, row.upstream, row.verdict) == (None, None, MISSING)


def test_several_installed_versions_must_all_be_on_the_line() -> None:
    both_ok = judge(Expected("p", DEBIAN, "3.4"), reading({"p": {"3.4.23-4", "3.4.23-4+b6"}}))
    assert (both_ok.installed, both_ok.upstream, both_ok.verdict) == (
        "3.4.23-4, 3.4.23-4+b6",
        "3.4.23",
        OK,
    )
    one_off = judge(Expected("p", DEBIAN, "3.4"), reading({"p": {"3.4.23-4", "3.5.0-1"}}))
    assert one_off.verdict == DIFFERS


def test_wheelhouse_daemons_are_compared_exactly() -> None:
    expected = Expected(PATRONI, WHEELHOUSE, "4.1.5")
    assert judge(expected, reading({}, patroni="4.1.5")).verdict == OK
    older = judge(expected, reading({}, patroni="4.1.4"))
    assert (older.installed, older.verdict) == ("4.1.4", DIFFERS)
    assert judge(expected, reading({}, patroni="4.1.50")).verdict == DIFFERS
    absent = judge(expected, reading({"patroni": {"3.0.2-1"}}))  # Debian's does not count
    assert (absent.installed, absent.verdict) == (None, MISSING)
    assert judge(Expected(AIRFLOW, WHEELHOUSE, "3.3.2"), HostReading({})).verdict == MISSING


# ---- the report ----


def fake_report() -> VersionsReport:
    """dc1 healthy but for two hosts; dc2 all healthy, one host with nothing to check."""
    db = ["etcd", "postgresql", "redis", "sentinel", "rabbitmq", "minio"]
    edge = ["haproxy", "keepalived", "nginx", "squid"]
    stale_etcd = DB_PACKAGES | {"etcd-server": {"3.5.16-4"}}
    no_sentinel = {k: v for k, v in DB_PACKAGES.items() if k != "redis-sentinel"}
    hosts = (
        check_host("dc1", "dc1-db1", bookworm(db), reading(stale_etcd, patroni="4.1.5")),
        check_host("dc1", "dc1-db2", bookworm(db), reading(no_sentinel, patroni="4.1.4")),
        check_host("dc1", "dc1-edge1", bookworm(edge), reading(EDGE_PACKAGES)),
        check_host(
            "dc1",
            "dc1-app1",
            bookworm(["registry", "airflow-api"]),
            reading(APP_PACKAGES, **WHEELS),
        ),
        check_host("dc2", "dc2-db1", bookworm(db), reading(DB_PACKAGES, patroni="4.1.5")),
        check_host("dc2", "dc2-minio1", bookworm(["minio"]), reading({})),
    )
    return VersionsReport("prod", BOOKWORM, hosts)


def test_the_report_names_each_differing_host_and_its_daemons() -> None:
    report = fake_report()
    assert [h.host for h in report.differing] == ["dc1-db1", "dc1-db2"]
    assert row_of(report.hosts[0], "etcd-server") == ("3.5.16-4", "3.5.16", "3.4", DIFFERS)
    assert row_of(report.hosts[1], "redis-sentinel") == (None, None, "7.0", MISSING)
    assert row_of(report.hosts[1], "patroni") == ("4.1.4", "4.1.4", "4.1.5", DIFFERS)
    assert report.summary() == (
        "2 host(s) differ: dc1-db1 (etcd-server DIFFERS); "
        "dc1-db2 (redis-sentinel MISSING, patroni DIFFERS)"
    )
    assert report.exit_code == 1


def test_a_report_with_everything_ok_exits_zero() -> None:
    ok = VersionsReport("prod", BOOKWORM, fake_report().hosts[2:])
    assert ok.summary() == "all 4 hosts run the release table's lines"
    assert ok.exit_code == 0
    assert VersionsReport("prod", BOOKWORM, ()).exit_code == 0


def test_the_table_per_datacenter() -> None:
    text = fake_report().render()
    print(text)  # the command's output on this fake example: pytest -s
    lines = text.splitlines()
    assert lines[0] == "prod-dc1 on Debian 12 (bookworm):"
    assert lines[1].split() == ["host", "daemon", "installed", "upstream", "expected", "verdict"]
    assert lines[2].split() == ["dc1-db1", "postgresql-15", "15.14-0+deb12u1", "15.14", "15", "ok"]
    rows = [line.split() for line in lines]
    assert ["dc1-db1", "etcd-server", "3.5.16-4", "3.5.16", "3.4", "DIFFERS"] in rows
    assert ["dc1-db2", "redis-sentinel", "-", "-", "7.0", "MISSING"] in rows
    assert ["dc1-app1", "airflow", "3.3.2", "3.3.2", "3.3.2", "ok"] in rows
    assert "prod-dc2 on Debian 12 (bookworm):" in lines
    assert ["dc2-minio1", "(no", "daemon", "to", "check)"] in rows
    assert lines[-1].startswith("2 host(s) differ: dc1-db1 (etcd-server DIFFERS)")
    assert all(line == line.rstrip() for line in lines)


def test_the_json_document() -> None:
    data = fake_report().as_json()
    json.dumps(data)  # serialisable as is
    assert set(data) == {
        "environment",
        "release",
        "datacenters",
        "ok",
        "differing_hosts",
        "summary",
    }
    assert data["environment"] == "prod"
    assert data["release"] == {"codename": "bookworm", "number": "12"}
    assert data["ok"] is False
    assert data["differing_hosts"] == ["dc1-db1", "dc1-db2"]
    assert [dc["name"] for dc in data["datacenters"]] == ["dc1", "dc2"]
    db1 = data["datacenters"][0]["hosts"][0]
    assert (db1["name"], db1["ok"]) == ("dc1-db1", False)
    assert db1["daemons"][1] == {
        "daemon": "etcd-server",
        "source": "debian",
        "installed": "3.5.16-4",
        "upstream": "3.5.16",
        "expected": "3.4",
        "verdict": "DIFFERS",
    }
    assert db1["daemons"][-1] == {
        "daemon": "patroni",
        "source": "wheelhouse",
        "installed": "4.1.5",
        "upstream": "4.1.5",
        "expected": "4.1.5",
        "verdict": "ok",
    }
    minio = data["datacenters"][1]["hosts"][1]
    assert minio == {"name": "dc2-minio1", "ok": True, "daemons": []}


# ---- from an environment ----


def healthy_reading(roles: tuple[str, ...]) -> HostReading:
    if "postgresql" in roles:
        return reading(DB_PACKAGES, patroni="4.1.5")
    if "haproxy" in roles:
        return reading(EDGE_PACKAGES)
    return reading(APP_PACKAGES, airflow="3.3.2")


def test_build_report_checks_every_host_of_the_environment() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    readings = {h.name: healthy_reading(h.roles) for h in env.hosts}
    report = build_report(env, readings)
    assert [h.host for h in report.hosts] == [h.name for h in env.hosts]
    assert report.exit_code == 0, report.render()
    assert report.summary() == f"all {len(env.hosts)} hosts run the release table's lines"
    app3 = next(h for h in report.hosts if h.host == "dc1-app3")  # airflow-worker only
    assert [r.daemon for r in app3.rows] == ["airflow"]
    assert env.components.patroni.version == "4.1.5"  # the fixtures above assume it

    one_dc = build_report(env, readings, ["dc2"])
    assert {h.datacenter for h in one_dc.hosts} == {"dc2"}


def test_build_report_refuses_a_host_without_a_reading() -> None:
    env = load_environment(REPO / "inventory" / "example-prod.yaml")
    readings = {h.name: healthy_reading(h.roles) for h in env.hosts if h.name != "dc2-edge1"}
    with pytest.raises(UnreadHost, match="dc2-edge1"):
        build_report(env, readings)


# ---- the wheelhouse-release fact ----


def test_the_fact_knows_where_operations_install_the_venvs() -> None:
    from operations.airflow.install import PREFIX as AIRFLOW_OPERATIONS_PREFIX
    from operations.patroni.settings import PREFIX as PATRONI_OPERATIONS_PREFIX

    assert PATRONI_PREFIX == PATRONI_OPERATIONS_PREFIX
    assert AIRFLOW_PREFIX == AIRFLOW_OPERATIONS_PREFIX
    assert set(WHEELHOUSE_VENVS) == {PATRONI, AIRFLOW}
    assert dist_info_name("apache-airflow") == "apache_airflow"
    assert dist_info_name("Patroni") == "patroni"


def test_parse_wheelhouse_releases() -> None:
    output = [
        "patroni\t/opt/patroni/venv-1a2b\t4.1.5",
        "airflow\t\t__PLINTH_VERSIONS_MISSING__",
    ]
    assert parse_wheelhouse_releases(output) == {PATRONI: "4.1.5", AIRFLOW: None}
    with pytest.raises(FactProcessError):
        parse_wheelhouse_releases(["garbage"])


def test_the_fact_command_reads_the_current_venvs_dist_info(tmp_path: Path) -> None:
    site = tmp_path / "patroni" / "venv-1a2b" / "lib" / "python3.11" / "site-packages"
    (site / "Patroni-4.1.5.dist-info").mkdir(parents=True)
    (site / "Patroni-4.1.5.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: patroni\nVersion: 4.1.5\n\nVersion: not this\n"
    )
    (tmp_path / "patroni" / "current").symlink_to(tmp_path / "patroni" / "venv-1a2b")
    airflow = tmp_path / "airflow" / "venv-9f" / "lib" / "python3.11" / "site-packages"
    (airflow / "apache_airflow_core-3.3.2.dist-info").mkdir(parents=True)  # not apache-airflow
    (airflow / "apache_airflow_core-3.3.2.dist-info" / "METADATA").write_text("Version: 3.3.2\n")
    (tmp_path / "airflow" / "current").symlink_to(tmp_path / "airflow" / "venv-9f")
    venvs = (
        (PATRONI, str(tmp_path / "patroni"), "patroni"),
        (AIRFLOW, str(tmp_path / "airflow"), "apache-airflow"),
        ("none", str(tmp_path / "absent"), "x"),
    )
    fact = WheelhouseReleases()
    run = subprocess.run(["sh", "-c", fact.command(venvs)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert fact.process(run.stdout.splitlines()) == {PATRONI: "4.1.5", AIRFLOW: None, "none": None}


# ---- the command ----


class FakeState:
    failed_hosts: frozenset[Any] = frozenset()


def fake_ssh(
    monkeypatch: pytest.MonkeyPatch, readings: dict[str, HostReading], connected_to: list[str]
) -> None:
    """``plinth.remote`` as if the hosts answered with ``readings``."""

    @contextmanager
    def connected(stack: Any) -> Iterator[FakeState]:
        connected_to.append(stack.name)
        yield FakeState()

    def fact_by_host(state: Any, fact: Any, **kwargs: Any) -> dict[str, Any]:
        if fact is WheelhouseReleases:
            return {name: dict(r.wheelhouse) for name, r in readings.items()}
        return {name: r.packages for name, r in readings.items()}

    install_fake_remote(monkeypatch, connected, fact_by_host)


def install_fake_remote(monkeypatch: pytest.MonkeyPatch, connected: Any, fact_by_host: Any) -> None:
    """A stand-in ``plinth.remote`` in ``sys.modules``: the command's lazy import takes it,
    and the real one is never imported. Importing it brings pyinfra_cli, whose gevent
    monkey-patching makes threads cooperative for the rest of the test process; a later
    test taking a blocking flock from two threads (the PKI's) then waits forever."""
    fake = types.ModuleType("plinth.remote")
    fake.connected = connected  # type: ignore[attr-defined]
    fake.fact_by_host = fact_by_host  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "plinth.remote", fake)


def test_versions_command_prints_the_table_and_exits_by_the_verdicts(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = load_environment(project / "inventory" / "example-prod.yaml")
    readings = {h.name: healthy_reading(h.roles) for h in env.hosts}
    stacks: list[str] = []
    fake_ssh(monkeypatch, readings, stacks)
    result = CliRunner().invoke(main, ["versions", "example-prod"])
    assert result.exit_code == 0, result.output
    assert stacks == ["example-prod-dc1", "example-prod-dc2"]
    assert result.output.splitlines()[-1] == "all 16 hosts run the release table's lines"
    assert (project / "inventory" / "example-prod-dc1.py").is_file()

    readings["dc2-db3"] = reading(DB_PACKAGES | {"redis-server": {"5:8.0.2-3"}}, patroni="4.1.5")
    result = CliRunner().invoke(main, ["versions", "example-prod-dc2", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["differing_hosts"] == ["dc2-db3"]
    assert [dc["name"] for dc in data["datacenters"]] == ["dc2"]

    path = str(project / "inventory" / "example-prod.yaml")
    assert CliRunner().invoke(main, ["versions", path]).exit_code == 1


def test_versions_command_names_an_unreachable_or_unread_host(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = load_environment(project / "inventory" / "example-prod.yaml")
    readings = {h.name: healthy_reading(h.roles) for h in env.hosts if h.name != "dc1-edge2"}
    fake_ssh(monkeypatch, readings, [])
    result = CliRunner().invoke(main, ["versions", "example-prod"])
    assert result.exit_code == 1
    assert "error: stack example-prod-dc1: cannot read dc1-edge2" in result.output

    @contextmanager
    def unreachable(stack: Any) -> Iterator[None]:
        raise PlanError(f"stack {stack.name}: cannot connect to dc1-db2")
        yield

    monkeypatch.setattr(sys.modules["plinth.remote"], "connected", unreachable)
    result = CliRunner().invoke(main, ["versions", "example-prod"])
    assert result.exit_code == 1
    assert "cannot connect to dc1-db2" in result.output
