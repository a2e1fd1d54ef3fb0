"""Patroni's REST API: who may call what (:data:`REST_API_ACCESS`, the statement
docs/security.md shows), and how plinth makes a state-changing call on a member
(:func:`unsafe_call`) without the password ever being part of a command.

Patroni splits its REST API in two (``patroni/api.py`` of 4.1.5, docs/security.md has
the references): reads (``GET``, ``HEAD``, ``OPTIONS``) are served to any client the TLS
handshake accepts, and the endpoints that change state (``PATCH``, ``PUT``, ``POST``,
``DELETE``, each behind ``@check_access``) also check the client's source address against
``restapi.allowlist``/``allowlist_include_members`` and its Basic-auth header against
``restapi.authentication``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from plinth.certificates import CertificateSpec

RESTAPI_USER = "patroni"
"""Basic-auth user of ``restapi.authentication`` and ``ctl.authentication``; its password
is the secret ``postgresql-restapi-password`` (:data:`operations.patroni.settings.SECRET_NAMES`)."""

RESTAPI_CURLRC = "/etc/patroni/restapi.curlrc"
"""curl's config file (``curl -K``) with ``user = "patroni:<password>"``, root:root 0600,
written by the deploy beside ``config.yml``: plinth's state-changing calls, run as root on
a member, read the password from it, so it is never on a command line, in a log or a plan."""

UNSAFE_METHODS = ("PATCH", "PUT", "POST", "DELETE")
"""The methods Patroni guards with ``check_access`` (the rest only need the TLS handshake)."""


@dataclass(frozen=True)
class Access:
    """One row of the access statement: which calls, who makes them, what lets them in."""

    calls: str
    who: str
    how: str


REST_API_ACCESS: tuple[Access, ...] = (
    Access(
        calls="read: `GET`, `HEAD`, `OPTIONS` (`/cluster`, `/patroni`, `/health`, "
        "`/primary`, `/replica`, `/config`, `/metrics`...)",
        who="any holder of a platform certificate: haproxy's checks, plinth's facts and "
        "`plinth status`, the other members",
        how="mutual TLS (`verify_client: required`)",
    ),
    Access(
        calls="change: `PATCH`, `PUT`, `POST`, `DELETE` (`/config`, `/restart`, `/reload`, "
        "`/switchover`, `/failover`, `/reinitialize`...)",
        who="the cluster's members (Patroni itself; `patronictl` there, which reads "
        "`config.yml`) and plinth, whose calls run as root on a member",
        how="mutual TLS, and a member's address as source (`allowlist`: the model's "
        "members; `allowlist_include_members`: those in etcd), and the REST API password "
        "(Basic auth; in `/etc/patroni/restapi.curlrc`, root 0600, and `config.yml`, "
        "postgres 0600)",
    ),
)
"""Who may call Patroni's REST API (docs/security.md shows these rows)."""


def access_rows() -> list[str]:
    """:data:`REST_API_ACCESS` as the markdown table rows docs/security.md carries."""
    return [f"| {a.calls} | {a.who} | {a.how} |" for a in REST_API_ACCESS]


def unsafe_call(
    tls: CertificateSpec,
    method: str,
    url: str,
    body: dict[str, Any],
    *options: str,
    timeout: int = 60,
) -> str:
    """``curl`` command sending ``body`` as JSON with ``method`` to ``url``, run as root on
    a member: the client certificate ``tls`` and the password from :data:`RESTAPI_CURLRC`
    (``-K``; curl fails, exit 26, when the file is missing). ``options`` are shell words
    as they are (``-f``, ``-w ...``)."""
    if method not in UNSAFE_METHODS:
        raise ValueError(f"{method} is not one of Patroni's guarded methods {UNSAFE_METHODS}")
    q = shlex.quote
    words = [
        f"curl -s -m {timeout} -K {q(RESTAPI_CURLRC)}",
        f"--cacert {q(tls.ca_path)} --cert {q(tls.chain_path)} --key {q(tls.key_path)}",
        f"-X{method} -H 'Content-Type: application/json'",
        f"-d {q(json.dumps(body, sort_keys=True))}",
        *options,
        q(url),
    ]
    return " ".join(words)


def standby_slot(datacenter: str) -> str:
    """Replication slot name the active site keeps for ``datacenter``'s standby cluster
    (the deploy's ``slots``; a DC switchover or failover adds it on the new active site)."""
    return "standby_" + re.sub(r"[^a-z0-9_]", "_", datacenter.lower())
