"""``plinth pki ...`` and ``plinth secrets ...``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from plinth import plan as plan_module
from plinth.at_rest import prove_passphrase, rekey
from plinth.certificates import CertificateSpec, host_certificates, reserved_client_identities
from plinth.cli.completion import complete_environments
from plinth.cli.core import OperatorError, operator_errors
from plinth.context import operator_name
from plinth.model import Environment, load_environment
from plinth.pki import (
    REASONS,
    PkiStore,
    crl_warnings,
    init_pki,
    issue_client_bundle,
    refresh_crl,
    reissue_reason,
    revoke,
)
from plinth.pki.crl import refresh_root_crl, revoke_intermediate, revoked_serials
from plinth.pki.log import format_serial
from plinth.provision import SECRET_BYTES, datacenter_trust, passphrase_for, refresh_due_crls
from plinth.secrets import SecretStore
from plinth.stacks import environment_file, resolve, state_dir


def _load(environment: str) -> Environment:
    return load_environment(environment_file(environment))


def _proven_passphrase(env: Environment) -> str:
    """The passphrase, after it opened every CA key and secrets.json the environment has
    (or, when it has none, passed the strength rule): asked by every command that writes."""
    passphrase = passphrase_for(env)
    prove_passphrase(state_dir(env.name), env.name, passphrase)
    return passphrase


def _refresh_due_crls(env: Environment) -> None:
    """What `plinth up` does before a deploy: re-sign the CRLs that are due (or stop)."""
    due = refresh_due_crls(env)
    for path in due.refreshed:
        click.echo(f"pki: re-signed {path} (inside its warning window): commit it", err=True)
    for warning in due.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.group()
def pki() -> None:
    """The platform PKI: offline root, per-DC intermediates, leaves issued on the hosts."""


@pki.command("init")
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def pki_init(environment: str) -> None:
    """Create the root CA and one name-constrained intermediate per datacenter.

    Idempotent: existing CA material is never replaced; a new datacenter gets its
    intermediate. Needs PLINTH_PASSPHRASE (the lab keeps its own).
    """
    env = _load(environment)
    store = PkiStore(state_dir(env.name))
    complete = store.initialized() and all(dc.name in store.datacenters() for dc in env.datacenters)
    # A re-run that creates nothing needs no proof (and works with the root key offline).
    passphrase = passphrase_for(env) if complete else _proven_passphrase(env)
    created = init_pki(state_dir(env.name), env.name, datacenter_trust(env), passphrase)
    if not created:
        click.echo(f"PKI of {env.name} already complete ({state_dir(env.name) / 'pki'})")
    for path in created:
        click.echo(f"created {path}")


def _certificate_row(
    spec: CertificateSpec,
    deployed: Any,
    issuer: x509.Certificate,
    revoked: frozenset[str],
    now: dt.datetime,
) -> dict[str, Any]:
    """One line of ``pki status``: what is on the host against what the model wants."""
    cert_pem = deployed.cert_pem if deployed else None
    problem = reissue_reason(
        cert_pem,
        deployed.public_key_pem if deployed else None,
        spec.dns_names,
        spec.ip_addresses,
        issuer.public_bytes(serialization.Encoding.PEM),
        now,
        expected_profile=spec.profile,
        expected_common_name=spec.common_name,
    )
    chain_ok = False
    if cert_pem:
        try:
            x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(issuer)
            chain_ok = True
        except (ValueError, TypeError, InvalidSignature):
            problem = problem or "not signed by this datacenter's intermediate"
    serial = format_serial(deployed.serial) if deployed and deployed.serial is not None else None
    if problem is None and serial in revoked:
        problem = f"serial {serial} is revoked"
    not_after = deployed.not_after if deployed else None
    return {
        "service": spec.service,
        "serial": serial,
        "not_after": not_after.isoformat() if not_after else None,
        "days_left": None if not_after is None else (not_after - now).days,
        "chain_ok": chain_ok,
        "sans_ok": cert_pem is not None and (problem is None or "SANs" not in problem),
        "key_matches": deployed.key_matches if deployed else None,
        "problem": problem,
        "ok": problem is None,
    }


@pki.command("status")
@click.argument("environment", shell_complete=complete_environments)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@operator_errors
def pki_status(environment: str, as_json: bool) -> None:
    """Every deployed certificate: expiry, days left, chain and SANs.

    Exit 1 unless every certificate is valid, matches its key and the model, is not
    revoked and is outside its renewal window, and no CRL is about to expire.
    """
    from facts.pki import DeployedCertificate
    from plinth.remote import connected, fact_by_host

    env = _load(environment)
    store = PkiStore(state_dir(env.name))
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    for stack in resolve(environment):
        issuer = store.intermediate_certificate(stack.datacenter)
        revoked = revoked_serials(store, stack.datacenter)
        specs = {h.name: host_certificates(env, h) for h in env.hosts_in(stack.datacenter)}
        # Paths depend only on the service, so one fact read per service covers all hosts.
        by_service = {s.service: s for host_specs in specs.values() for s in host_specs}
        with connected(stack) as state:
            deployed = {
                service: fact_by_host(
                    state,
                    DeployedCertificate,
                    cert_path=spec.cert_path,
                    key_path=spec.key_path,
                    _sudo=env.ssh.user != "root",
                )
                for service, spec in sorted(by_service.items())
            }
        for host_name, host_specs in specs.items():
            for spec in host_specs:
                row = _certificate_row(
                    spec, deployed[spec.service].get(host_name), issuer, revoked, now
                )
                rows.append({"stack": stack.name, "host": host_name, **row})
    warnings = crl_warnings(store, now)
    if as_json:
        click.echo(json.dumps({"certificates": rows, "crl_warnings": warnings}, indent=2))
    else:
        click.echo(f"{'host':<14} {'service':<10} {'expires':<11} {'days':>4}  chain  SANs  status")
        for row in rows:
            expires = (row["not_after"] or "-")[:10]
            days = "-" if row["days_left"] is None else str(row["days_left"])
            status = "ok" if row["ok"] else f"NOT OK: {row['problem']}"
            click.echo(
                f"{row['host']:<14} {row['service']:<10} {expires:<11} {days:>4}  "
                f"{'yes' if row['chain_ok'] else 'NO':<5}  {'yes' if row['sans_ok'] else 'NO':<4}"
                f"  {status}"
            )
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
    if not rows or not all(r["ok"] for r in rows) or warnings:
        sys.exit(1)


@pki.command("revoke")
@click.argument("environment", shell_complete=complete_environments)
@click.argument("serial")
@click.option(
    "--reason",
    type=click.Choice(sorted(REASONS)),
    default="unspecified",
    show_default=True,
    help="CRL reason code.",
)
@click.option(
    "--apply",
    "apply_now",
    is_flag=True,
    help="Push the new CRL to every host right away (plinth up --yes).",
)
@operator_errors
def pki_revoke(environment: str, serial: str, reason: str, apply_now: bool) -> None:
    """Revoke certificate SERIAL (hex, as in the issuance log) and regenerate its DC's CRL."""
    env = _load(environment)
    store = PkiStore(state_dir(env.name))
    revoked = revoke(store, serial, _proven_passphrase(env), reason, operator=operator_name())
    click.echo(
        f"revoked {serial} ({revoked.subject}) in {revoked.dc}: CRL number {revoked.crl_number}"
    )
    if apply_now:
        # As `plinth up` would: CRLs inside their warning window are re-signed first.
        _refresh_due_crls(env)
        for stack in resolve(environment):
            result = plan_module.apply(stack)
            click.echo(f"stack {stack.name}: CRL pushed ({result.seconds:.1f} s)")
    else:
        click.echo(f"push it to the hosts with: plinth up {env.name}")


@pki.command("refresh-crl")
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def pki_refresh_crl(environment: str) -> None:
    """Re-sign every DC's CRL, and the root's where the root key is, with a new nextUpdate
    (`plinth up` does it by itself for CRLs inside their warning window)."""
    env = _load(environment)
    store = PkiStore(state_dir(env.name))
    passphrase = _proven_passphrase(env)
    if store.root_key_path.exists():
        number = refresh_root_crl(store, passphrase)
        click.echo(f"root: CRL number {number}")
    else:
        click.echo(
            f"root: not re-signed, {store.rel(store.root_key_path)} is not here (kept "
            "offline): run this command there before the root CRL's warning window",
            err=True,
        )
    for dc in store.datacenters():
        number = refresh_crl(store, dc, passphrase)
        click.echo(f"{dc}: CRL number {number}")
    click.echo(f"push them to the hosts with: plinth up {env.name}")


@pki.command("revoke-intermediate")
@click.argument("environment", shell_complete=complete_environments)
@click.argument("datacenter")
@click.option(
    "--reason",
    type=click.Choice(sorted(REASONS)),
    default="key_compromise",
    show_default=True,
    help="CRL reason code.",
)
@operator_errors
def pki_revoke_intermediate(environment: str, datacenter: str, reason: str) -> None:
    """Revoke DATACENTER's intermediate CA in the root's CRL (needs the root key).

    Once deployed, every certificate of that datacenter is refused by PostgreSQL, nginx and
    haproxy: sign a new intermediate for it first. Then `plinth up`.
    """
    env = _load(environment)
    store = PkiStore(state_dir(env.name))
    revoked = revoke_intermediate(
        store, datacenter, _proven_passphrase(env), reason, operator=operator_name()
    )
    click.echo(
        f"revoked the intermediate of {datacenter} ({revoked.subject}, serial "
        f"{revoked.serial}): root CRL number {revoked.crl_number}"
    )
    click.echo(f"push it to the hosts with: plinth up {env.name}")


@pki.command("rekey")
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def pki_rekey(environment: str) -> None:
    """Re-encrypt CA keys and secrets.json written with a weak key derivation.

    Earlier plinth versions encrypted CA keys with PBKDF2 (2,048 iterations) and secrets.json
    with scrypt n=2^15; both still open, and `plinth preview`/`up` warn about them. This
    rewrites them with scrypt n=2^17 r=8 p=1 under the same passphrase, each file replaced
    atomically (0600); nothing is written unless the passphrase opens every file. Commit
    the result. Run it on the offline machine too if the root key lives there.
    """
    env = _load(environment)
    rewritten = rekey(state_dir(env.name), env.name, passphrase_for(env))
    if not rewritten:
        click.echo(f"nothing to rekey: every encrypted file of {env.name} is already strong")
    for path in rewritten:
        click.echo(f"rekeyed {path}")


@pki.command("rotate")
@click.argument("environment", shell_complete=complete_environments)
@click.option(
    "--service",
    required=True,
    help="Service whose certificates are reissued ('all' for every one).",
)
@click.option("--keys", is_flag=True, help="Also make new private keys on the hosts first.")
@operator_errors
def pki_rotate(environment: str, service: str, keys: bool) -> None:
    """Reissue SERVICE's certificates now on every host of ENVIRONMENT (or of one stack)."""
    stacks = resolve(environment)
    env = stacks[0].environment
    known = {s.service for h in env.hosts for s in host_certificates(env, h)}
    if service != "all" and service not in known:
        raise OperatorError(
            f"unknown service {service!r}: certificates exist for {', '.join(sorted(known))}"
        )
    _refresh_due_crls(env)
    data = {"plinth_rotate_service": service}
    if keys:
        data["plinth_rotate_keys"] = "1"
    for stack in stacks:
        result = plan_module.apply(stack, data)
        click.echo(
            f"stack {stack.name}: {service} rotated{' with new keys' if keys else ''} "
            f"({result.seconds:.1f} s)"
        )


@pki.command("client-cert")
@click.argument("environment", shell_complete=complete_environments)
@click.option("--cn", required=True, help="Identity: a PostgreSQL role, an application name.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory for <cn>.key, <cn>.crt and ca.crt.",
)
@click.option("--dc", "datacenter", default=None, help="Issuing datacenter (default: first).")
@click.option(
    "--reserved-identity",
    "reserved_ok",
    is_flag=True,
    help="Issue a CN the platform reserves (a component's identity, a host, a write "
    "identity); the issuance log records it. For break-glass and lab checks only.",
)
@operator_errors
def pki_client_cert(
    environment: str, cn: str, out_dir: Path, datacenter: str | None, reserved_ok: bool
) -> None:
    """Key, certificate and CA bundle for an application or operator identity (mTLS client).

    Refused, with nothing written: a DC the environment does not have, and a CN the platform
    reserves (a host's name, an identity the platform issues to its own components, a
    PostgreSQL role of Patroni's, an identity a virtual host grants writes to) unless
    --reserved-identity says that is meant.
    """
    env = _load(environment)
    dc = datacenter or env.datacenters[0].name
    if dc not in env.datacenters_by_name:
        known = ", ".join(d.name for d in env.datacenters)
        raise OperatorError(
            f"unknown datacenter {dc!r}: environment {env.name} has {known}; no certificate issued"
        )
    why = reserved_client_identities(env).get(cn.lower().removesuffix("."))
    if why and not reserved_ok:
        raise OperatorError(
            f"client identity {cn!r} is reserved: {why}. A certificate for it would act as "
            "that identity; no certificate issued (--reserved-identity if that is really "
            "meant)"
        )
    store = PkiStore(state_dir(env.name))
    bundle = issue_client_bundle(
        store,
        dc,
        cn,
        out_dir,
        _proven_passphrase(env),
        operator_name(),
        service=f"client-reserved:{cn}" if why else None,
    )
    click.echo(f"key:  {bundle.key_path}\ncert: {bundle.cert_path}\nCA:   {bundle.ca_path}")
    click.echo(f"serial {bundle.issued.serial:X}, valid until {bundle.issued.not_after:%Y-%m-%d}")


@click.group()
def secrets() -> None:
    """Encrypted secrets stored beside the environment (AES-GCM, scrypt from the passphrase)."""


def _store(environment: str, *, writing: bool = False) -> SecretStore:
    env = _load(environment)
    passphrase = _proven_passphrase(env) if writing else passphrase_for(env)
    return SecretStore(state_dir(env.name) / "secrets.json", passphrase)


@secrets.command("list")
@click.argument("environment", shell_complete=complete_environments)
@operator_errors
def secrets_list(environment: str) -> None:
    """Names of the stored secrets (never their values)."""
    for name in _store(environment).names():
        click.echo(name)


@secrets.command("get")
@click.argument("environment", shell_complete=complete_environments)
@click.argument("name")
@operator_errors
def secrets_get(environment: str, name: str) -> None:
    """Print one secret's value on stdout (only when asked by name)."""
    click.echo(_store(environment).get(name).reveal())


@secrets.command("set")
@click.argument("environment", shell_complete=complete_environments)
@click.argument("name")
@operator_errors
def secrets_set(environment: str, name: str) -> None:
    """Store NAME from standard input (or a hidden prompt), never from the command line."""
    if sys.stdin.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        raise OperatorError(f"empty value for {name}: nothing stored")
    _store(environment, writing=True).set(name, value)
    click.echo(f"stored {name}")


@secrets.command("generate")
@click.argument("environment", shell_complete=complete_environments)
@click.argument("name")
@click.option(
    "--kind", type=click.Choice(["urlsafe", "hex", "fernet"]), default="urlsafe", show_default=True
)
@click.option("--force", is_flag=True, help="Replace an existing value.")
@operator_errors
def secrets_generate(environment: str, name: str, kind: str, force: bool) -> None:
    """Generate a random value for NAME (kept if it exists, unless --force)."""
    store = _store(environment, writing=True)
    if name in store.names() and not force:
        raise OperatorError(f"{name} already exists: use --force to replace it")
    # A secret with a length rule (the JWT key) gets it; every other one the default.
    store.generate(name, SECRET_BYTES.get(name, 32), alphabet=kind)  # type: ignore[arg-type]
    click.echo(f"generated {name}")
