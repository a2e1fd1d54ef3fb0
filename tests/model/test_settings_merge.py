"""Settings maps with defaults (``base.sysctl``, ``components.patroni.parameters``) are
merged key by key: one user key never drops the hardening defaults beside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from operations.patroni.settings import dynamic_settings, render
from plinth.model import (
    DEFAULT_POSTGRESQL_PARAMETERS,
    DEFAULT_SYSCTL,
    ModelError,
    load_environment,
    parse_environment,
)
from plinth.render import render_template
from tests.model.test_validation import base_environment
from tests.test_patroni import spec

HARDENING_SYSCTL = {
    "kernel.kptr_restrict": "2",
    "kernel.dmesg_restrict": "1",
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
}


def with_settings(sysctl: Any = None, parameters: Any = None) -> dict[str, Any]:
    data = base_environment()
    if sysctl is not None:
        data["base"] = {"sysctl": sysctl}
    if parameters is not None:
        data["components"] = {"patroni": {"parameters": parameters}}
    return data


def rendered_sysctl(sysctl: dict[str, str]) -> dict[str, str]:
    text = render_template("base/etc/sysctl.d/60-plinth.conf.j2", sysctl=sysctl)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split(" = ", 1) for line in lines)


def test_one_sysctl_key_keeps_every_hardening_default_in_the_rendered_file() -> None:
    env = parse_environment(with_settings(sysctl={"vm.swappiness": "10", "fs.file-max": "1000"}))
    rendered = rendered_sysctl(env.base.sysctl)
    assert rendered["vm.swappiness"] == "10" and rendered["fs.file-max"] == "1000"
    assert HARDENING_SYSCTL.items() <= rendered.items()
    assert set(rendered) == set(DEFAULT_SYSCTL) | {"fs.file-max"}


def test_one_patroni_parameter_keeps_the_tls_floor_in_the_rendered_config() -> None:
    env = parse_environment(with_settings(parameters={"max_connections": "500"}))
    settings = env.components.patroni
    patroni = dataclasses.replace(spec(), settings=settings)
    config = yaml.safe_load(
        render(patroni, {"superuser": "s", "replication": "r", "rewind": "w", "restapi": "a"})
    )
    # patroni.yml seeds a new cluster; dynamic_settings is what later runs PATCH into etcd
    for parameters in (
        config["bootstrap"]["dcs"]["postgresql"]["parameters"],
        dynamic_settings(patroni)["postgresql"]["parameters"],
    ):
        assert parameters["max_connections"] == "500"
        assert parameters["ssl_min_protocol_version"] == "TLSv1.2"
        assert parameters["password_encryption"] == "scram-sha-256"
    assert set(settings.parameters) == set(DEFAULT_POSTGRESQL_PARAMETERS)


def test_null_removes_a_default_on_purpose() -> None:
    env = parse_environment(
        with_settings(sysctl={"vm.swappiness": None}, parameters={"log_connections": None})
    )
    assert "vm.swappiness" not in env.base.sysctl
    assert "vm.swappiness" not in rendered_sysctl(env.base.sysctl)
    assert HARDENING_SYSCTL.items() <= env.base.sysctl.items()
    assert "log_connections" not in env.components.patroni.parameters
    assert env.components.patroni.parameters["ssl_min_protocol_version"] == "TLSv1.2"


def test_no_key_given_means_the_defaults() -> None:
    env = parse_environment(with_settings(sysctl={}, parameters={}))
    assert env.base.sysctl == DEFAULT_SYSCTL
    assert env.components.patroni.parameters == DEFAULT_POSTGRESQL_PARAMETERS


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            {"sysctl": {"kernel.kptr_restict": None}},
            "base.sysctl: null removes a default, but there is no default named "
            "kernel.kptr_restict (defaults: net.ipv4.tcp_keepalive_time,",
        ),
        ({"sysctl": ["vm.swappiness=1"]}, "base.sysctl: Input should be a valid dictionary"),
        (
            {"sysctl": {"vm.swappiness": 10}},
            "base.sysctl.vm.swappiness: Input should be a valid string",
        ),
        (
            {"parameters": {"ssl_min_protocl_version": None}},
            "components.patroni.parameters: null removes a default, but there is no default "
            "named ssl_min_protocl_version",
        ),
    ],
)
def test_problems_name_the_file_and_the_field(
    tmp_path: Path, settings: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(with_settings(**settings)))
    with pytest.raises(ModelError) as caught:
        load_environment(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_yaml_null_is_what_removes_a_key(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    text = yaml.safe_dump(base_environment()) + "base:\n  sysctl:\n    vm.swappiness: null\n"
    path.write_text(text)
    assert "vm.swappiness" not in load_environment(path).base.sysctl
