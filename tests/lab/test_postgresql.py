"""The PostgreSQL HA cell in the small lab: etcd, Patroni/PostgreSQL, haproxy, keepalived."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from facts.etcd import etcd_cluster_command, parse_etcd_cluster
from plinth.model import Role
from tests.lab.conftest import Lab, plinth

pytestmark = pytest.mark.lab

ETCD_TLS = "/etc/plinth/tls/etcd"


def etcd_endpoints(lab: Lab) -> tuple[str, ...]:
    port = lab.environment.components.etcd.client_port
    return tuple(f"https://{h.address}:{port}" for h in lab.environment.hosts_with(Role.ETCD))


def test_etcd_has_three_healthy_members_over_tls(deployed_small_lab: Lab, tmp_path: Path) -> None:
    lab = deployed_small_lab
    members = [h.name for h in lab.environment.hosts_with(Role.ETCD)]
    for name in members:
        remote = lab.host(name, tmp_path)
        command = etcd_cluster_command(
            f"{ETCD_TLS}/ca.crt", f"{ETCD_TLS}/etcd-chain.crt", f"{ETCD_TLS}/etcd.key",
            etcd_endpoints(lab),
        )  # fmt: skip
        state = parse_etcd_cluster(remote.check_output(command).splitlines())
        assert state is not None and state.healthy, state
        assert sorted(m.name for m in state.members) == sorted(members)
        assert state.leader in members
        key = remote.file(f"{ETCD_TLS}/etcd.key")
        assert key.user == "etcd" and key.mode == 0o600
        assert "ENCRYPTED" not in remote.check_output(f"head -1 {ETCD_TLS}/etcd.key")


def test_etcd_refuses_plaintext_and_clients_without_a_certificate(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    first = lab.environment.hosts_with(Role.ETCD)[0]
    remote = lab.host(first.name, tmp_path)
    url = f"{first.address}:{lab.environment.components.etcd.client_port}"
    # the same request succeeds with a client certificate...
    ok = remote.run(
        f"curl -sf --cacert {ETCD_TLS}/ca.crt --cert {ETCD_TLS}/etcd-chain.crt "
        f"--key {ETCD_TLS}/etcd.key https://{url}/health"
    )
    assert ok.rc == 0 and '"health":"true"' in ok.stdout
    # ...and fails in plaintext, or over TLS without one
    assert remote.run(f"curl -sf -m 5 http://{url}/health").rc != 0
    assert remote.run(f"curl -sf -m 5 --cacert {ETCD_TLS}/ca.crt https://{url}/health").rc != 0
    # peers too: the raft port wants a certificate
    peer = f"{first.address}:{lab.environment.components.etcd.peer_port}"
    assert remote.run(f"curl -sf -m 5 --cacert {ETCD_TLS}/ca.crt https://{peer}/version").rc != 0


PROBE = "plinth_probe"


def psql_binary() -> str:
    found = shutil.which("psql")
    if found is None:
        pytest.skip("the controller has no psql (apt-get install postgresql-client)")
    return found


@pytest.fixture(scope="session")
def client_bundle(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client certificate for the probe role, as an application gets one."""
    out = tmp_path_factory.mktemp("pg-client")
    plinth("pki", "client-cert", "lab", "--cn", PROBE, "--out", str(out))
    return out


def dsn(lab: Lab, bundle: Path | None, host: str, address: str, **extra: str) -> str:
    params = {
        "host": host,
        "hostaddr": address,
        "port": str(lab.environment.components.patroni.postgresql_port),
        "dbname": "postgres",
        "user": PROBE,
        "sslmode": "verify-full",
        "connect_timeout": "3",
    }
    if bundle is not None:
        params |= {
            "sslrootcert": str(bundle / "ca.crt"),
            "sslcert": str(bundle / f"{PROBE}.crt"),
            "sslkey": str(bundle / f"{PROBE}.key"),
        }
    params |= extra
    return " ".join(f"{k}={v}" for k, v in params.items())


def psql(conninfo: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [psql_binary(), conninfo, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def patroni_members(lab: Lab, tmp: Path) -> list[dict[str, Any]] | None:
    """`patronictl list` from the first member that answers (one may be stopped)."""
    for host in lab.environment.hosts_with(Role.POSTGRESQL):
        try:
            result = lab.host(host.name, tmp).run(
                "patronictl -c /etc/patroni/config.yml list -f json"
            )
        except RuntimeError:  # ssh could not reach this container
            continue
        if result.rc == 0:
            members: list[dict[str, Any]] = json.loads(result.stdout)
            return members
    return None


def leader_of(lab: Lab, tmp: Path) -> str:
    members = patroni_members(lab, tmp)
    assert members is not None, "no Patroni member answers"
    leader: str = next(m["Member"] for m in members if m["Role"] == "Leader")
    return leader


def test_write_needs_verify_full_tls_and_a_client_certificate(
    deployed_small_lab: Lab, client_bundle: Path, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    env = lab.environment
    # Through the PostgreSQL VIP (haproxy passes TLS through to the primary), as
    # applications connect: the host firewall admits the clients to haproxy's ports on
    # the VIP, not to a member's own PostgreSQL port (docs/security.md, "Host firewall").
    vip = next(v for v in env.vips if "postgresql" in v.services)
    name, address = env.vip_fqdn(vip), str(vip.address)
    port = str(env.components.haproxy.primary_port)
    good = dsn(lab, client_bundle, name, address, port=port)
    result = psql(
        good,
        "create table if not exists cert_write (id serial primary key, at timestamptz);"
        "insert into cert_write default values;"
        "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("t|TLSv1.")

    # no client certificate
    no_cert = dsn(lab, None, name, address, port=port)
    no_cert += f" sslrootcert={client_bundle / 'ca.crt'}"
    refused = psql(no_cert, "select 1")
    assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr

    # a certificate from another CA, with the right CN
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(other / "o.key"), "-out", str(other / "o.crt"),
         "-subj", f"/CN={PROBE}", "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    (other / "o.key").chmod(0o600)
    foreign = dsn(lab, client_bundle, name, address, port=port)
    foreign += f" sslcert={other / 'o.crt'} sslkey={other / 'o.key'}"
    refused = psql(foreign, "select 1")
    assert refused.returncode != 0 and "unknown ca" in refused.stderr, refused.stderr

    # plaintext: no pg_hba line accepts it
    plain = dsn(lab, None, name, address, port=port, sslmode="disable")
    refused = psql(plain, "select 1")
    assert refused.returncode != 0 and "no encryption" in refused.stderr, refused.stderr


def test_replicas_stream_over_verified_tls_with_one_synchronous(
    deployed_small_lab: Lab, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader = leader_of(lab, tmp_path)
    out = lab.host(leader, tmp_path).check_output(
        'cd / && runuser -u postgres -- psql -XAtc "select r.usename, r.state, r.sync_state, '
        "s.ssl, s.client_dn from pg_stat_replication r join pg_stat_ssl s using (pid) "
        'order by r.sync_state"'
    )
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == 2, out
    assert all(r[0] == "replicator" and r[1] == "streaming" and r[3] == "t" for r in rows), out
    assert all(r[4] == "/CN=replicator" for r in rows), out
    assert sorted(r[2] for r in rows) == ["async", "sync"], out
