"""Airflow's services from the model: certificates, configuration, units, secrets (no host).

Rendered and checked here only; the lab has not run them yet (docs/components/airflow.md).
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from facts.airflow import CURRENT, PENDING, AirflowMigrations
from facts.patroni import MISSING, PostgresDatabases
from operations.airflow import (
    SECRET_ENV_NAMES,
    AirflowConfig,
    airflow_config,
    render_celery_module,
    render_config,
    render_environment,
    render_secrets,
    render_unit,
    render_wrapper,
)
from plinth import provision
from plinth.certificates import host_certificates
from plinth.context import HostContext
from plinth.model import Environment, ModelError, Role, parse_environment
from plinth.provision import required_secrets
from plinth.secrets import SecretStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "example-prod.yaml"
FAKE_SECRETS = {
    # a valid Fernet key (32 bytes), as the generator makes them
    "AIRFLOW__CORE__FERNET_KEY": "ZmVybmV0LW5vdC1yZWFsLWZlcm5ldC1ub3QtcmVhbCE=",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt-not-real",
    "AIRFLOW__API__SECRET_KEY": "api-key-not-real",
    "admin": "admin-not-real",
}


AIRFLOW_VHOST = {
    "name": "airflow",
    "port": 8444,
    "upstream_role": "airflow-api",
    "upstream_port": 8443,
}


def example(services: bool = True, vhost: bool = True, **airflow: Any) -> Environment:
    data = yaml.safe_load(EXAMPLE.read_text())
    components = data.setdefault("components", {})
    components["airflow"] = {"services": services, "constraints": ["celery<5.7"], **airflow}
    if vhost:
        registry = {
            "name": "registry",
            "port": 5443,
            "upstream_role": "registry",
            "upstream_port": 5000,
            "write_identities": ["registry-push"],
            "max_body_size": "0",
        }
        components.setdefault("nginx", {})["virtual_hosts"] = [registry, AIRFLOW_VHOST]
    return parse_environment(data, EXAMPLE)


def spec_for(name: str, env: Environment | None = None) -> AirflowConfig:
    env = env or example()
    host = next(h for h in env.hosts if h.name == name)
    certificates = {c.service: c for c in host_certificates(env, host)}
    context = HostContext(env, EXAMPLE, host, env.datacenters_by_name[host.datacenter])
    return airflow_config(context, certificates)


def parsed(text: str) -> configparser.ConfigParser:
    # Airflow's parser interpolates '%': a stray one would break it.
    parser = configparser.ConfigParser()
    parser.read_string(text)
    for section in parser.sections():
        for key in parser[section]:
            _ = parser[section][key]  # raises on a bad interpolation
    return parser


# ---- off by default: the existing deploy does not change ----


def test_services_are_off_by_default_and_change_nothing_else() -> None:
    env = example(services=False)
    assert not env.components.airflow.services
    assert env.postgresql_login_roles() == env.components.patroni.login_roles
    assert env.postgresql_databases() == ()
    for host in env.hosts:
        assert not [c for c in host_certificates(env, host) if c.service.startswith("airflow")]
    assert "airflow-admin-password" not in required_secrets(env)
    # the three shared keys are generated whenever an api host exists, as before
    assert {"airflow-fernet-key", "airflow-jwt-secret", "airflow-api-secret-key"} <= set(
        required_secrets(env)
    )


def test_services_add_the_role_the_database_and_the_admin_password() -> None:
    env = example()
    assert env.postgresql_login_roles() == ("plinth_probe", "airflow")
    assert env.postgresql_databases() == (("airflow", "airflow"),)
    assert required_secrets(env)["airflow-admin-password"] == "urlsafe"


def test_rules_refuse_a_broker_identity_rabbitmq_does_not_know() -> None:
    with pytest.raises(ModelError) as error:
        example(identity="scheduler_x")
    assert any(
        p.startswith("components.airflow.identity: RabbitMQ user 'scheduler_x'")
        for p in error.value.problems
    )
    with pytest.raises(ModelError) as error:
        example(broker_vhost="nope")
    assert any(p.startswith("components.airflow.broker_vhost") for p in error.value.problems)


def test_rules_want_the_api_behind_nginx_on_the_api_port() -> None:
    with pytest.raises(ModelError) as error:
        example(vhost=False)
    assert any("upstream_role airflow-api" in p for p in error.value.problems)
    with pytest.raises(ModelError) as error:
        example(api_port=9443)
    assert any("is not components.airflow.api_port (9443)" in p for p in error.value.problems)
    example(services=False, vhost=False)  # the install alone needs no virtual host


# ---- certificates ----


def test_certificates_one_client_identity_and_a_server_certificate_on_api_hosts() -> None:
    env = example()
    app1 = next(h for h in env.hosts if h.name == "dc1-app1")
    app3 = next(h for h in env.hosts if h.name == "dc1-app3")
    certs = {c.service: c for c in host_certificates(env, app1)}
    client = certs["airflow-client"]
    assert client.common_name == "airflow"  # PostgreSQL role = RabbitMQ user
    assert client.profile.value == "client"
    assert (client.owner, client.group) == ("airflow", "airflow")
    api = certs["airflow-api"]
    assert api.profile.value == "server"
    assert "dc1-app1.dc1.grid.plinth.internal" in api.dns_names
    assert "edge.dc1.grid.plinth.internal" in api.dns_names  # the VIP routing 'airflow'
    assert [c.service for c in host_certificates(env, app3) if "airflow" in c.service] == [
        "airflow-client"
    ]


# ---- airflow.cfg ----


def test_config_database_broker_and_tls() -> None:
    cfg = parsed(render_config(spec_for("dc1-app3")))
    assert cfg["core"]["executor"] == "CeleryExecutor"
    conn = urlsplit(cfg["database"]["sql_alchemy_conn"])
    assert conn.scheme == "postgresql+psycopg2"
    assert conn.username == "airflow" and conn.password is None
    assert conn.hostname == "pg.dc1.grid.plinth.internal"
    assert (conn.port, conn.path) == (5000, "/airflow")
    query = {k: v[0] for k, v in parse_qs(conn.query).items()}
    assert query == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/plinth/tls/airflow-client/ca.crt",
        "sslcert": "/etc/plinth/tls/airflow-client/airflow-client-chain.crt",
        "sslkey": "/etc/plinth/tls/airflow-client/airflow-client.key",
    }
    assert cfg["database"]["sql_alchemy_pool_pre_ping"] == "True"
    celery = cfg["celery"]
    brokers = celery["broker_url"].split(";")
    assert brokers == [f"amqp://dc1-db{i}.dc1.grid.plinth.internal:5671/airflow" for i in (1, 2, 3)]
    assert "amqps://" not in celery["broker_url"]
    assert celery["result_backend"].startswith("db+postgresql+psycopg2://airflow@pg.dc1.")
    assert "sslmode=verify-full" in celery["result_backend"]
    assert celery["ssl_active"] == "True"
    assert celery["ssl_cert"].endswith("airflow-client-chain.crt")
    assert celery["celery_config_options"] == "plinth_celery.CELERY_CONFIG"


def test_config_execution_api_is_the_local_api_server_or_one_of_the_dc() -> None:
    app1 = parsed(render_config(spec_for("dc1-app1")))
    assert app1["core"]["execution_api_server_url"] == (
        "https://dc1-app1.dc1.grid.plinth.internal:8443/execution/"
    )
    assert app1["api"]["ssl_cert"] == "/etc/plinth/tls/airflow-api/airflow-api-chain.crt"
    assert app1["api"]["ssl_key"] == "/etc/plinth/tls/airflow-api/airflow-api.key"
    app3 = parsed(render_config(spec_for("dc1-app3")))
    assert app3["core"]["execution_api_server_url"].startswith("https://dc1-app")
    assert app3["api"]["ssl_ca_file"] == "/etc/plinth/tls/airflow-client/ca.crt"
    assert app3["api"]["client_use_public_certs"] == "False"
    dc2 = parsed(render_config(spec_for("dc2-app3")))
    assert ".dc2." in dc2["core"]["execution_api_server_url"]
    assert dc2["database"]["sql_alchemy_conn"].startswith(
        "postgresql+psycopg2://airflow@pg.dc2.grid.plinth.internal:5000/"
    )


def test_no_secret_is_rendered_outside_the_secrets_files() -> None:
    spec = spec_for("dc1-app1")
    rendered = [
        render_config(spec),
        render_environment(spec),
        render_celery_module(),
        render_wrapper(),
        *(render_unit(spec, unit, cmd) for unit, cmd in spec.units),
    ]
    for text in rendered:
        for value in FAKE_SECRETS.values():
            assert value not in text
    cfg = parsed(rendered[0])
    assert "fernet_key" not in cfg["core"]
    assert "secret_key" not in cfg["api"]


def test_secrets_files() -> None:
    env_text, passwords = render_secrets(FAKE_SECRETS)
    lines = [line for line in env_text.splitlines() if not line.startswith("#")]
    assert lines == [f'{k}="{FAKE_SECRETS[k]}"' for k in SECRET_ENV_NAMES]
    assert set(SECRET_ENV_NAMES) == {
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
    }
    assert passwords.strip() == '{"admin": "admin-not-real"}'


def test_celery_module_adds_external_login_to_the_defaults() -> None:
    tree = ast.parse(render_celery_module())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert any(
        n.module == "airflow.providers.celery.executors.default_celery"
        and n.names[0].name == "DEFAULT_CELERY_CONFIG"
        for n in imports
    )
    source = render_celery_module()
    assert '"broker_login_method": "EXTERNAL"' in source
    # quorum queues refuse global QoS: Celery must know its queue is one
    assert 'queue_arguments={"x-queue-type": "quorum"}' in source


def test_environment_file_gives_the_sample_dag_a_certificate_connection() -> None:
    text = render_environment(spec_for("dc1-app2"))
    line = next(x for x in text.splitlines() if x.startswith("AIRFLOW_CONN_GRID_DB="))
    uri = urlsplit(line.split("=", 1)[1].strip('"'))
    assert uri.scheme == "postgresql" and uri.username == "airflow" and uri.password is None
    assert "sslmode=verify-full" in uri.query


# ---- units, sites, migration ----


def test_units_follow_roles_and_the_active_site() -> None:
    app1, app2, app3 = (spec_for(f"dc1-app{i}") for i in (1, 2, 3))
    assert [u for u, _ in app1.units] == [
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    ]
    assert [u for u, _ in app2.units] == [
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-triggerer",
        "airflow-worker",
    ]
    assert app3.units == [("airflow-worker", "celery worker --skip-serve-logs")]
    assert app1.active and app3.active
    standby = spec_for("dc2-app1")
    assert not standby.active and not standby.migrates
    # exactly one host of the active site migrates the database
    migrating = [s for s in (app1, app2, app3) if s.migrates]
    assert migrating == [app1]


def test_worker_unit_stops_warmly_under_the_airflow_user() -> None:
    spec = spec_for("dc1-app3")
    unit = render_unit(spec, *spec.units[0])
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(unit)
    service = parser["Service"]
    assert service["User"] == "airflow"
    # no plain-HTTP log server: no Airflow process listens or connects without TLS
    assert service["ExecStart"] == (
        "/opt/airflow/current/bin/airflow celery worker --skip-serve-logs"
    )
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 600
    assert "EnvironmentFile" in service
    scheduler = render_unit(spec_for("dc1-app1"), "airflow-scheduler", "scheduler")
    assert "KillSignal" not in scheduler


@pytest.mark.parametrize("unit", ["airflow-dag-processor", "airflow-triggerer"])
def test_dag_processor_and_triggerer_are_not_waited_for_90_seconds(unit: str) -> None:
    """They hang after logging their graceful exit; systemd's 90 s default made every
    restart of them (and every host shutdown) wait 90 s for nothing."""
    rendered = render_unit(spec_for("dc1-app1"), unit, unit.removeprefix("airflow-"))
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(rendered)
    assert parser["Service"]["TimeoutStopSec"] == "20"


def test_migration_fact() -> None:
    fact = AirflowMigrations()
    assert fact.process([CURRENT]) is True
    assert fact.process([PENDING]) is False
    assert fact.process(["noise"]) is None
    assert "check-migrations" in fact.command("/usr/local/sbin/plinth-airflow")


def test_database_fact() -> None:
    fact = PostgresDatabases()
    assert fact.process([MISSING]) is None
    assert fact.process(["postgres postgres", "airflow airflow"]) == {
        "postgres": "postgres",
        "airflow": "airflow",
    }


# ---- the prepared operations (pyinfra on @local, prepare only: nothing is executed) ----


def prepared(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    """(operation names, everything pyinfra keeps about them) for one host's spec."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.facts import systemd as systemd_facts

    from operations.airflow import airflow_services

    # No systemd on the controller's container: the units read as absent.
    monkeypatch.setattr(systemd_facts.SystemdStatus, "command", lambda *a, **k: "true")
    monkeypatch.setattr(systemd_facts.SystemdEnabled, "command", lambda *a, **k: "true")
    # pyinfra's Inventory, Config and State.get_op_order are unannotated: called through
    # their types.
    new_inventory = cast("Callable[[tuple[list[str], dict[str, Any]]], Inventory]", Inventory)
    new_config = cast("Callable[[], Config]", Config)
    inventory = new_inventory((["@local"], {}))
    state = State(inventory, new_config())
    connect_all(state)
    add_deploy(state, airflow_services, spec_for(name), FAKE_SECRETS, "/opt/airflow/venv-abc")
    names: list[str] = []
    kept = ""
    op_order = cast("Callable[[], list[str]]", state.get_op_order)
    for op_hash in op_order():
        meta = state.op_meta[op_hash]
        names += sorted(meta.names)
        kept += repr(vars(meta))
        for host in inventory:
            data = state.ops[host].get(op_hash)
            if data is not None:
                kept += repr(data.global_arguments)
    return names, kept


def test_prepared_operations_never_carry_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    names, kept = prepared("dc1-app1", monkeypatch)
    assert not [v for v in FAKE_SECRETS.values() if v in kept]
    short = [n.removeprefix("Airflow services | ") for n in names]
    assert "Airflow database migrated" in short
    assert short.index("Airflow's Celery executor importable") < short.index(
        "Airflow database migrated"
    )
    assert "airflow-scheduler running" in short
    assert "Airflow DAGs from the repository" in short
    # one gated roll per host, after every unit's running/enabled state
    roll = short.index("Airflow restarted for its new configuration, host by host (gated)")
    assert roll > max(i for i, n in enumerate(short) if n.endswith(" running"))


def test_standby_site_installs_units_stopped_and_never_migrates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names, _ = prepared("dc2-app1", monkeypatch)
    short = [n.removeprefix("Airflow services | ") for n in names]
    assert "Airflow database migrated" not in short
    assert "airflow-scheduler stopped (standby site)" in short
    assert not [n for n in short if "restarted" in n]


def test_health_is_read_from_the_json_fields_not_the_http_status() -> None:
    from facts.airflow import NO_ANSWER, AirflowHealth, parse_health

    answer = (
        '{"metadatabase": {"status": "healthy"},'
        ' "scheduler": {"status": "unhealthy",'
        ' "latest_scheduler_heartbeat": "2026-11-27T03:00:00+00:00"},'
        ' "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "x"},'
        ' "dag_processor": {"status": null, "latest_dag_processor_heartbeat": null}}'
    )
    health = parse_health(answer)
    assert health.problems() == [
        "scheduler: unhealthy (last heartbeat 2026-11-27T03:00:00+00:00)",
        "dag_processor: never seen",
    ]
    assert health.problems(("metadatabase", "triggerer")) == []
    fact = AirflowHealth()
    assert fact.process([NO_ANSWER]) is None
    assert fact.process(["<html>bad gateway</html>"]) is None
    assert fact.process(answer.splitlines()) == health
    command = fact.command("dc1-n1.dc1.lab.plinth.internal", 8443, "/etc/ca.crt")
    assert "https://dc1-n1.dc1.lab.plinth.internal:8443/api/v2/monitor/health" in command


def test_nginx_reaches_the_api_servers_under_a_name_their_certificate_carries() -> None:
    from operations.nginx import virtual_hosts

    env = example()
    vhost = next(v for v in virtual_hosts(env, "dc1") if v.name == "airflow")
    assert vhost.verify_client == "on"  # a platform client certificate at nginx
    assert [s.address for s in vhost.servers] == ["10.40.1.31", "10.40.1.32"]
    assert not any(s.backup for s in vhost.servers)  # stateless: every api-server active
    for name in ("dc1-app1", "dc1-app2"):
        api = spec_for(name, env).api_tls
        assert api is not None and vhost.tls_name in api.dns_names


def test_celery_import_fact() -> None:
    from facts.airflow import IMPORT_FAILED, IMPORT_OK, NOT_YET, AirflowCeleryImport

    fact = AirflowCeleryImport()
    assert fact.process([IMPORT_OK]) is True
    assert fact.process([IMPORT_FAILED]) is False
    assert fact.process([NOT_YET]) is None
    command = fact.command("/opt/airflow/current/bin/python", "/etc/airflow", "/var/lib/airflow")
    assert "runuser -u airflow" in command
    assert "import airflow.providers.celery.executors.celery_executor_utils" in command


def test_the_passwords_file_is_writable_by_airflow_outside_etc() -> None:
    from operations.airflow import HOME, PASSWORDS_FILE

    # Airflow opens it "a+"/"r+"; the units run with ProtectSystem=full (/etc read-only).
    assert PASSWORDS_FILE.startswith(HOME + "/")
    cfg = parsed(render_config(spec_for("dc1-app1")))
    assert cfg["core"]["simple_auth_manager_passwords_file"] == PASSWORDS_FILE
    unit = render_unit(spec_for("dc1-app1"), "airflow-api-server", "api-server")
    assert "ProtectSystem=full" in unit


def test_outputs_give_the_ui_and_api_through_nginx_only_with_the_services() -> None:
    from plinth.outputs import collect, render_text

    assert (
        collect(example(services=False, vhost=False), EXAMPLE)["datacenters"]["dc1"]["airflow"]
        is None
    )
    data = collect(example(), EXAMPLE)
    dc1, dc2 = (data["datacenters"][dc]["airflow"] for dc in ("dc1", "dc2"))
    assert dc1["url"] == "https://edge.dc1.grid.plinth.internal:8444/"
    assert dc1["health"].endswith("/api/v2/monitor/health")
    assert dc1["active"] and not dc2["active"]
    text = render_text(data)
    assert "Airflow (active): UI https://edge.dc1.grid.plinth.internal:8444/" in text
    assert "Airflow (standby: units stopped)" in text


def test_status_judges_the_active_site_by_health_fields_and_the_standby_by_stopped_units() -> None:
    from facts.airflow import describe, parse_health
    from plinth.status import healthy, render
    from plinth.topology.airflow import expected_components

    env = example()
    expected = expected_components([h.roles for h in env.hosts_in("dc1")])
    assert expected == ("metadatabase", "scheduler", "triggerer", "dag_processor")
    good = parse_health(
        '{"metadatabase": {"status": "healthy"},'
        ' "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "t"},'
        ' "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "t"},'
        ' "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "t"}}'
    )
    units = {"dc1-app1": {"airflow-scheduler": True}, "dc1-app3": {"airflow-worker": True}}
    fine = describe(True, expected, {"dc1-app1": good, "dc1-app2": None}, units)
    assert fine["problems"] == ["dc1-app2: the api-server's health endpoint does not answer"]
    standby = describe(False, expected, {"dc2-app1": None}, {"dc2-app1": {"airflow-worker": True}})
    assert standby["problems"] == ["dc2-app1: airflow-worker runs on the standby site"]
    base: dict[str, Any] = {"stack": "x", "etcd": None, "patroni": None, "vips": []}
    ok = describe(True, expected, {"dc1-app1": good}, units)
    assert healthy({**base, "airflow": ok}) and not healthy({**base, "airflow": fine})
    text = render({**base, "airflow": ok})
    assert "airflow (active): healthy" in text
    assert "dc1-app3: airflow-worker=active" in text


def test_roll_counts_alive_jobs_and_refuses_when_a_peer_is_down() -> None:
    from operations.airflow import alive_jobs, roll_refusal

    assert alive_jobs(["Found one alive job."]) == 1
    assert alive_jobs(["[info] noise", "Found 3 alive jobs."]) == 3
    assert alive_jobs(["No alive jobs found."]) == 0
    assert alive_jobs(["Traceback (most recent call last):"]) is None
    assert roll_refusal("SchedulerJob", 2, 2, "dc1-n1") is None
    reason = roll_refusal("SchedulerJob", 1, 2, "dc1-n1")
    assert reason is not None and "only 1 of 2 SchedulerJobs alive" in reason
    assert "cannot count" in (roll_refusal("SchedulerJob", None, 2, "dc1-n1") or "")


def test_roll_drains_the_worker_while_its_api_server_restarts_then_the_jobs() -> None:
    from operations.airflow import RollStep, roll_steps
    from plinth.topology.airflow import COMPONENTS

    every = {role: unit for role, (unit, _) in COMPONENTS.items()}
    assert roll_steps(every) == [
        RollStep("stop", ("airflow-worker",)),
        RollStep("restart", ("airflow-api-server",), "health"),
        RollStep("start", ("airflow-worker",)),
        RollStep(
            "restart", ("airflow-scheduler", "airflow-triggerer", "airflow-dag-processor"), "jobs"
        ),
    ]
    # a worker-only host: drained, then started; a unit this run just started is absent
    worker_only = {Role.AIRFLOW_WORKER: "airflow-worker"}
    assert [s.action for s in roll_steps(worker_only)] == ["stop", "start"]
    assert roll_steps({}) == []
    scheduler_only = {Role.AIRFLOW_SCHEDULER: "airflow-scheduler"}
    assert roll_steps(scheduler_only) == [RollStep("restart", ("airflow-scheduler",), "jobs")]


def test_roll_spec_from_the_model_skips_units_this_run_started() -> None:
    from operations.airflow.decide import RollSpec
    from plinth.topology.airflow import COMPONENTS

    config = spec_for("dc1-app1")
    spec = RollSpec.of(config, {"airflow-worker"})
    assert spec.fqdn == "dc1-app1.dc1.grid.plinth.internal"
    assert [unit for _, unit in spec.units] == [
        unit for unit, _ in COMPONENTS.values() if unit != "airflow-worker"
    ]
    assert spec.health_command is not None
    assert spec.health_command.endswith(":8443/api/v2/monitor/health")
    # two schedulers and triggerers in dc1 (gated), one dag-processor (no peer)
    assert spec.gated() == [("SchedulerJob", 2), ("TriggererJob", 2)]
    assert RollSpec.of(replace(config, api_tls=None), ()).health_command is None


def test_the_jwt_secret_is_an_hs512_sized_key_and_an_older_short_one_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = example()
    monkeypatch.setattr(provision, "state_dir", lambda name: tmp_path)
    monkeypatch.setattr(provision, "passphrase_for", lambda env: "correct horse battery staple")
    monkeypatch.setattr(provision, "prove_passphrase", lambda *args: None)
    assert "airflow-jwt-secret" in provision.ensure_secrets(env)
    store = SecretStore(tmp_path / "secrets.json", "correct horse battery staple")
    assert len(store.get("airflow-jwt-secret").reveal().encode()) >= 64
    assert len(store.get("airflow-api-secret-key").reveal().encode()) < 64  # the default
    assert provision.short_secrets(env) == []

    # A store written before the rule: 32 random bytes, 43 characters.
    store.set("airflow-jwt-secret", "x" * 43)
    (warning,) = provision.short_secrets(env)
    assert "airflow-jwt-secret is 43 bytes, 64 wanted" in warning
    assert f"plinth secrets generate {env.name} airflow-jwt-secret --force" in warning
    assert "x" * 43 not in warning
