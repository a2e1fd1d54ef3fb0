"""Patroni's REST API as a certificate holder meets it (issue 15, docs/security.md): a
platform certificate reads; a change needs a member's address and the REST API password.

The certificate is Airflow's identity, the one a DAG's user can read on every Airflow host.
From the controller it reads ``/cluster`` but ``PATCH /config`` and ``POST /restart`` are
refused (403: not a member's address, even with the password), and nothing changed. On a
member (the small lab's members are Airflow hosts too, so the address check lets a DAG
there through) the same certificate is refused for want of the password (401), and so is
the member's own certificate without it. As root with the curlrc, a ``PATCH`` is accepted
(set on the leader from a replica, reset from the leader), and so is ``patronictl reload``.

The last test is the upgrade: the members' config.yml without authentication (as every
cluster deployed before this change has it), a dynamic setting drifted, then one
``plinth up``: the curlrc arrives before config.yml, the PATCH that repairs the drift
succeeds, and afterwards a change without the password is refused.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from plinth.certificates import CertificateSpec, host_certificates
from plinth.model import Host, Role
from plinth.topology.patroni import RESTAPI_CURLRC
from tests.lab.conftest import DEPLOY, Baseline, Lab, lab_secret, plinth

pytestmark = pytest.mark.lab

APP_CN = "airflow"
"""The identity of the Airflow hosts (``components.airflow.identity``): its key is readable
by the user that runs DAG code."""
SETTING = "maximum_lag_on_failover"
"""A dynamic setting the model manages (a repair deploy puts it back) and that needs no
restart."""
UPLOADED = "/root/plinth-access-test"


# ---- helpers ----


def api_url(lab: Lab, host: Host) -> str:
    return f"https://{host.address}:{lab.environment.components.patroni.rest_api_port}"


def status_and_body(stdout: str) -> tuple[int, str]:
    """curl's ``-w '\\n%{http_code}'`` output split: (status, body); status 0 when curl
    did not get an answer."""
    body, _, code = stdout.rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body


def from_controller(
    bundle: Path, method: str, url: str, body: dict[str, Any] | None = None, password: str = ""
) -> tuple[int, str]:
    """A call from the controller (not a member's address) with the application
    certificate; ``password`` goes to curl on stdin (``-K -``), never in its arguments."""
    cmd = ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "--cacert", str(bundle / "ca.crt"),
           "--cert", str(bundle / f"{APP_CN}.crt"), "--key", str(bundle / f"{APP_CN}.key"),
           "-X", method]  # fmt: skip
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    if password:
        cmd += ["-K", "-"]
    result = subprocess.run(
        [*cmd, url],
        input=f'user = "patroni:{password}"\n' if password else None,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return status_and_body(result.stdout)


def on_member(
    remote: Any,
    tls: CertificateSpec | tuple[str, str, str],
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    curlrc: bool = False,
) -> tuple[int, str]:
    """A call run as root on a member with the certificate ``tls`` (a spec, or (ca,
    chain, key) paths), with the password from the curlrc only when ``curlrc``."""
    ca, chain, key = (
        (tls.ca_path, tls.chain_path, tls.key_path) if isinstance(tls, CertificateSpec) else tls
    )
    q = shlex.quote
    words = [f"curl -sS -m 10 -w '\\n%{{http_code}}' --cacert {q(ca)} --cert {q(chain)}",
             f"--key {q(key)} -X {method}"]  # fmt: skip
    if curlrc:
        words.append(f"-K {RESTAPI_CURLRC}")
    if body is not None:
        words.append(f"-H 'Content-Type: application/json' -d {q(json.dumps(body))}")
    words.append(q(url))
    return status_and_body(remote.run(" ".join(words)).stdout)


def read_json(remote: Any, tls: CertificateSpec, url: str) -> dict[str, Any]:
    status, body = on_member(remote, tls, "GET", url)
    assert status == 200, (url, status, body)
    document: dict[str, Any] = json.loads(body)
    return document


def wait_for_setting(remote: Any, tls: CertificateSpec, url: str, value: int) -> None:
    """Wait until ``GET /config`` shows ``SETTING`` at ``value``. The REST API answers
    ``GET /config`` from the cluster view of Patroni's last loop (``dcs.cluster``), so an
    accepted ``PATCH`` shows there only after the next loop (up to ``loop_wait``)."""
    deadline = time.monotonic() + 30
    while (seen := read_json(remote, tls, url)[SETTING]) != value:
        assert time.monotonic() < deadline, (url, seen, value)
        time.sleep(1)


def certificate(lab: Lab, host: Host, service: str) -> CertificateSpec | None:
    return next((c for c in host_certificates(lab.environment, host) if c.service == service), None)


def app_certificate_on(
    lab: Lab, host: Host, remote: Any, bundle: Path
) -> CertificateSpec | tuple[str, str, str]:
    """The Airflow identity's certificate on ``host``: the host's own one where it is an
    Airflow host (the file a DAG's user reads), else the controller's bundle uploaded."""
    own = certificate(lab, host, "airflow-client")
    if own is not None:
        return own
    files = {"ca.crt": "ca.crt", f"{APP_CN}.crt": "app.crt", f"{APP_CN}.key": "app.key"}
    remote.run(f"install -d -m 700 {UPLOADED}")
    for source, name in files.items():
        data = base64.b64encode((bundle / source).read_bytes()).decode()
        remote.run(f"echo {data} | base64 -d > {UPLOADED}/{name} && chmod 600 {UPLOADED}/{name}")
    return (f"{UPLOADED}/ca.crt", f"{UPLOADED}/app.crt", f"{UPLOADED}/app.key")


def members(lab: Lab) -> list[Host]:
    return lab.environment.hosts_with(Role.POSTGRESQL, "dc1")


def leader_and_replica(lab: Lab, bundle: Path) -> tuple[Host, Host]:
    status, body = from_controller(bundle, "GET", api_url(lab, members(lab)[0]) + "/cluster")
    assert status == 200, (status, body)
    cluster = json.loads(body)
    leader = next(m["name"] for m in cluster["members"] if m["role"] in ("leader", "master"))
    hosts = {h.name: h for h in members(lab)}
    replica = next(name for name in hosts if name != leader)
    return hosts[leader], hosts[replica]


@pytest.fixture(scope="module")
def app_bundle(deployed_small_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Airflow identity's certificate, issued to the controller (it is reserved: a
    component's identity, hence ``--reserved-identity``)."""
    out = tmp_path_factory.mktemp("access-clients")
    plinth("pki", "client-cert", "lab", "--cn", APP_CN, "--reserved-identity", "--out", str(out))
    return out


# ---- the tests ----


def test_an_application_certificate_reads_but_changes_nothing_from_the_controller(
    deployed_small_lab: Lab, app_bundle: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader, _ = leader_and_replica(lab, app_bundle)
    api = api_url(lab, leader)
    remote = lab.host(leader.name, tmp_path)
    patroni_tls = certificate(lab, leader, "patroni")
    assert patroni_tls is not None
    config_before = read_json(remote, patroni_tls, api + "/config")
    started_before = read_json(remote, patroni_tls, api + "/patroni")["postmaster_start_time"]

    status, body = from_controller(app_bundle, "GET", api + "/cluster")
    assert status == 200, body
    assert {m["name"] for m in json.loads(body)["members"]} == {h.name for h in members(lab)}

    # Not a member's address: refused before the password is even looked at.
    patch = {SETTING: 1, "postgresql": {"parameters": {"archive_command": "/bin/true pwned"}}}
    assert from_controller(app_bundle, "PATCH", api + "/config", patch)[0] == 403
    assert (
        from_controller(app_bundle, "POST", api + "/restart", {"restart_pending": True})[0] == 403
    )
    password = lab_secret("postgresql-restapi-password")
    assert from_controller(app_bundle, "PATCH", api + "/config", patch, password)[0] == 403

    assert read_json(remote, patroni_tls, api + "/config") == config_before
    assert read_json(remote, patroni_tls, api + "/patroni")["postmaster_start_time"] == (
        started_before
    )
    undoable_lab.undone()


def test_on_a_member_a_change_needs_the_password(
    deployed_small_lab: Lab, app_bundle: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader, _ = leader_and_replica(lab, app_bundle)
    api = api_url(lab, leader)
    remote = lab.host(leader.name, tmp_path)
    patroni_tls = certificate(lab, leader, "patroni")
    assert patroni_tls is not None
    config_before = read_json(remote, patroni_tls, api + "/config")
    try:
        app = app_certificate_on(lab, leader, remote, app_bundle)
        # What a DAG on this member could do with the certificate its user reads: the
        # address check passes (a member's), the password check does not.
        assert on_member(remote, app, "GET", api + "/cluster")[0] == 200
        assert on_member(remote, app, "PATCH", api + "/config", {SETTING: 1})[0] == 401
        assert on_member(remote, app, "POST", api + "/restart", {"restart_pending": True})[0] == 401
        # Nor is the member's own certificate enough without the password.
        assert on_member(remote, patroni_tls, "PATCH", api + "/config", {SETTING: 1})[0] == 401
    finally:
        remote.run(f"rm -rf {UPLOADED}")
    assert read_json(remote, patroni_tls, api + "/config") == config_before
    undoable_lab.undone()


def test_root_on_a_member_changes_with_the_curlrc_and_patronictl_works(
    deployed_small_lab: Lab, app_bundle: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader, replica = leader_and_replica(lab, app_bundle)
    api = api_url(lab, leader)
    on_leader = lab.host(leader.name, tmp_path)
    on_replica = lab.host(replica.name, tmp_path)
    leader_tls = certificate(lab, leader, "patroni")
    replica_tls = certificate(lab, replica, "patroni")
    assert leader_tls is not None and replica_tls is not None
    for host in members(lab):
        mode = lab.host(host.name, tmp_path).check_output(f"stat -c '%a %U %G' {RESTAPI_CURLRC}")
        assert mode == "600 root root", (host.name, mode)
    wanted = read_json(on_leader, leader_tls, api + "/config")[SETTING]

    # Set from a replica (another member's address, as the rolls' POSTs are sent) ...
    status, body = on_member(
        on_replica, replica_tls, "PATCH", api + "/config", {SETTING: wanted + 1}, curlrc=True
    )
    assert status == 200, body
    wait_for_setting(on_leader, leader_tls, api + "/config", wanted + 1)
    # ... and reset from the leader itself.
    status, body = on_member(
        on_leader, leader_tls, "PATCH", api + "/config", {SETTING: wanted}, curlrc=True
    )
    assert status == 200, body
    wait_for_setting(on_leader, leader_tls, api + "/config", wanted)

    # patronictl authenticates from config.yml's ctl section (POST /reload to each member).
    scope = f"{lab.environment.components.patroni.scope_prefix}-dc1"
    reload = on_leader.run(f"patronictl -c /etc/patroni/config.yml reload {scope} --force")
    assert reload.rc == 0, reload.stdout + reload.stderr
    # patronictl prints a refusal and still exits 0: every member must have accepted.
    assert "Failed" not in reload.stdout, reload.stdout
    for host in members(lab):
        assert f"member {host.name}" in reload.stdout, reload.stdout
    undoable_lab.undone()


STRIP_AUTHENTICATION = """
import yaml
path = "/etc/patroni/config.yml"
config = yaml.safe_load(open(path))
for key in ("authentication", "allowlist", "allowlist_include_members"):
    config["restapi"].pop(key, None)
config["ctl"].pop("authentication", None)
with open(path, "w") as out:
    yaml.safe_dump(config, out)
"""


def test_a_cluster_without_authentication_is_upgraded_by_one_run(
    deployed_small_lab: Lab, app_bundle: Path, undoable_lab: Baseline, tmp_path: Path
) -> None:
    lab = deployed_small_lab
    leader, _ = leader_and_replica(lab, app_bundle)
    api = api_url(lab, leader)
    on_leader = lab.host(leader.name, tmp_path)
    leader_tls = certificate(lab, leader, "patroni")
    assert leader_tls is not None
    wanted = read_json(on_leader, leader_tls, api + "/config")[SETTING]
    drifted = 2 * wanted  # more lag allowed for a moment, never less

    # Every member as a deploy before this change left it: no authentication, no curlrc.
    for host in members(lab):
        remote = lab.host(host.name, tmp_path)
        python = "/opt/patroni/current/bin/python"
        remote.check_output(f"{python} -c {shlex.quote(STRIP_AUTHENTICATION)}")
        remote.check_output(f"rm -f {RESTAPI_CURLRC} && systemctl reload patroni")
    # Patroni applies a reload on its next loop: until then a change still needs the
    # password. The drift the deploy must PATCH back is the proof the old rules are on.
    deadline = time.monotonic() + 30
    while True:
        status, body = on_member(
            on_leader, leader_tls, "PATCH", api + "/config", {SETTING: drifted}
        )
        if status == 200:
            break
        assert time.monotonic() < deadline, (status, body)
        time.sleep(1)
    wait_for_setting(on_leader, leader_tls, api + "/config", drifted)

    result = plinth(*DEPLOY)
    assert "stack lab-dc1: applied" in result.stdout, result.stdout[-3000:]

    # The PATCH of that run (sent with the curlrc, whether or not the reload had landed)
    # put the model's value back; the new rules are on: no password, no change.
    wait_for_setting(on_leader, leader_tls, api + "/config", wanted)
    for host in members(lab):
        remote = lab.host(host.name, tmp_path)
        tls = certificate(lab, host, "patroni")
        assert tls is not None
        assert remote.check_output(f"stat -c '%a %U' {RESTAPI_CURLRC}") == "600 root"
        change = {SETTING: drifted}
        status, _ = on_member(remote, tls, "PATCH", api_url(lab, host) + "/config", change)
        assert status == 401, host.name
    assert read_json(on_leader, leader_tls, api + "/config")[SETTING] == wanted
    undoable_lab.undone()
