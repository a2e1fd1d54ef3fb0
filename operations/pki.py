"""TLS keys and certificates on hosts, signed by the controller's PKI.

Leaf keys are generated on the host and never leave it: the controller reads a CSR at
execute time, signs it with the datacenter's intermediate and uploads the certificate.
Nothing here touches CA keys on hosts; they never go there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import shlex
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from pyinfra import host
from pyinfra.api import (
    FileUploadCommand,
    FunctionCommand,
    OperationError,
    QuoteString,
    StringCommand,
    deploy,
    operation,
)
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import files

from facts.pki import CertificateSigningRequest, CrlHashLinks, DeployedCertificate, HashedCrl
from plinth.certificates import (
    ALL_CRLS,
    CRL_DIR,
    TLS_ROOT,
    CertificateSpec,
    all_crls_pem,
    crl_path,
)
from plinth.pki import LeafSigner, Profile, reissue_reason
from plinth.pki.crl import revoked_serials
from plinth.pki.log import format_serial
from plinth.pki.names import outside_constraints, parse_ip
from plinth.reasons import explain_change

_NEW = ".plinth-new"


@operation()
def private_key(
    path: str, owner: str, group: str, rotate: bool = False
) -> Generator[StringCommand, None, None]:
    """An ECDSA P-256 private key at ``path``, mode 0600, owned by the service user.

    + path: key file; its directory must exist
    + owner, group: the service user that reads the key
    + rotate: replace an existing key with a new one (every certificate made for the old
      key is then reissued by ``pki.certificate``). Pass it for one run only: a deploy that
      always passes ``rotate=True`` makes a new key on every run.

    An existing key is never regenerated otherwise; only its owner and mode are corrected.
    Keys are written unencrypted (etcd and MinIO cannot read encrypted keys), so the 0600
    mode is what protects them.

    **Example:**

    .. code:: python

        pki.private_key(name="etcd key", path="/etc/etcd/pki/etcd.key",
                        owner="etcd", group="etcd", _sudo=True)
    """
    info = host.get_fact(File, path=path)
    if info is False:
        raise OperationError(f"{path} exists and is not a regular file")
    if info and not rotate:
        fixes: list[StringCommand] = []
        if info.get("user") != owner or info.get("group") != group:
            fixes.append(StringCommand("chown", f"{owner}:{group}", QuoteString(path)))
        if info.get("mode") != 600:
            fixes.append(StringCommand("chmod", "600", QuoteString(path)))
        if not fixes:
            host.noop(f"key {path} already present")
        yield from fixes
        return
    tmp = QuoteString(path + _NEW)
    # The key is created under umask 077, so it is never readable by others, not even
    # between creation and chmod; rename makes the swap atomic for a running service.
    yield StringCommand(
        "(umask 077 && rm -f", tmp, "&& openssl genpkey -algorithm EC",
        "-pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve -out", tmp, ")",
    )  # fmt: skip
    yield StringCommand("chown", f"{owner}:{group}", tmp)
    yield StringCommand("mv", "-f", tmp, QuoteString(path))


@operation()
def certificate(
    service: str,
    profile: Profile,
    common_name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    cert_path: str,
    chain_path: str,
    ca_path: str,
    key_path: str,
    owner: str,
    group: str,
    signer: LeafSigner,
    force_reason: str | None = None,
) -> Generator[Any, None, None]:
    """A certificate for ``service`` signed by ``signer``'s datacenter, kept valid.

    + service: name used in the issuance log and messages
    + profile: ``server``, ``client`` or ``peer``
    + common_name, dns_names, ip_addresses: subject and SANs (VIPs included)
    + cert_path: leaf only; chain_path: leaf + intermediate (may equal cert_path)
    + ca_path: the root certificate, kept in sync on its own
    + key_path: the key made by ``pki.private_key`` (it must exist at execute time)
    + signer: a :class:`plinth.pki.LeafSigner` for the host's datacenter
    + force_reason: reissue even if the certificate is still good (``plinth pki rotate``)

    The certificate is reissued when it is missing, expires within a third of its
    lifetime, its SANs, CN or profile changed, the intermediate changed, or it does not
    match the key. The reason is decided at preview time, logged at info
    ("reissue SERVICE certificate: REASON") and recorded in ``signer.reissues``; signing
    happens only when the operation executes. The key is never touched.

    **Example:**

    .. code:: python

        pki.certificate(name="etcd peer certificate", service="etcd", profile=Profile.PEER,
                        common_name=fqdn, dns_names=[fqdn], ip_addresses=[node_ip],
                        cert_path="/etc/etcd/pki/peer.crt",
                        chain_path="/etc/etcd/pki/peer-chain.crt",
                        ca_path="/etc/etcd/pki/ca.crt", key_path="/etc/etcd/pki/etcd.key",
                        owner="etcd", group="etcd", signer=signer, _sudo=True)
    """
    profile = Profile(profile)
    now = dt.datetime.now(dt.UTC)
    deployed = host.get_fact(DeployedCertificate, cert_path=cert_path, key_path=key_path)
    if deployed is None:
        reason: str | None = "missing (openssl is not installed yet)"
    else:
        reason = reissue_reason(
            deployed.cert_pem,
            deployed.public_key_pem,
            dns_names,
            ip_addresses,
            signer.issuer_pem(),
            now,
            expected_profile=profile,
            expected_common_name=common_name,
        )
        if reason is None and chain_path != cert_path and not host.get_fact(File, path=chain_path):
            reason = "chain file missing"
    # A revoked certificate still on the host fails every peer that checks the CRL.
    if (
        reason is None
        and deployed is not None
        and deployed.serial is not None
        and format_serial(deployed.serial) in revoked_serials(signer.store, signer.dc)
    ):
        reason = f"serial {format_serial(deployed.serial)} is revoked"
    if reason is None and force_reason:
        reason = force_reason
    # Refused at preview time, before anything runs anywhere: signing would refuse it
    # at apply time, half-way through a deploy.
    outside = outside_constraints(
        signer.issuer_certificate(), dns_names, [parse_ip(ip) for ip in ip_addresses]
    )
    if outside:
        raise OperationError(
            f"{service} certificate: {', '.join(outside)} outside the name constraints of "
            f"{signer.dc}'s intermediate; fix the model (names must be in the DC's domain "
            "and subnet)"
        )
    # Decided and logged before the first yield: pyinfra's prepare phase stops there.
    if reason is not None:
        signer.record_reissue(host.name, service, reason)
        explain_change(f"reissue {service} certificate: {reason}")

    yield from files.put._inner(
        src=io.BytesIO(signer.ca_bundle_pem()),
        dest=ca_path,
        user=owner,
        group=group,
        mode="644",
    )

    if reason is None:
        assert deployed is not None and deployed.not_after is not None
        host.noop(f"certificate for {service} valid until {deployed.not_after:%Y-%m-%d}")
        return

    # (temporary file, destination, content); a single file gets the chain.
    installs = [(chain_path + _NEW, chain_path, "chain")]
    if chain_path != cert_path:
        installs.insert(0, (cert_path + _NEW, cert_path, "cert"))
    yield FunctionCommand(
        _sign_and_upload,
        (signer, service, profile, common_name, tuple(dns_names), tuple(ip_addresses)),
        {"key_path": key_path, "uploads": [(tmp, kind) for tmp, _, kind in installs]},
    )
    # Uploaded next to the destination, then renamed: a service reloading at the wrong
    # moment sees the old or the new certificate, never half of one.
    for tmp, dest, _ in installs:
        yield StringCommand("chown", f"{owner}:{group}", QuoteString(tmp))
        yield StringCommand("chmod", "644", QuoteString(tmp))
        yield StringCommand("mv", "-f", QuoteString(tmp), QuoteString(dest))


def _sign_and_upload(
    state: Any,
    host: Any,
    signer: LeafSigner,
    service: str,
    profile: Profile,
    common_name: str,
    dns_names: tuple[str, ...],
    ip_addresses: tuple[str, ...],
    *,
    key_path: str,
    uploads: list[tuple[str, str]],
) -> bool:
    """Execute-time half of ``certificate``: CSR from the host, sign here, upload."""
    csr = host.get_fact(CertificateSigningRequest, key_path=key_path, common_name=common_name)
    issued = signer.sign(
        csr.encode(), profile, common_name, dns_names, ip_addresses, service, host.name
    )
    # The callback does not receive the operation's connector arguments (_sudo, ...);
    # they are still set on the host while its commands run.
    arguments = {
        key: value
        for key, value in (host.current_op_global_arguments or {}).items()
        if key in CONNECTOR_ARGUMENT_KEYS
    }
    contents = {"cert": issued.cert_pem, "chain": issued.chain_pem}
    for remote, kind in uploads:
        if not host.put_file(io.BytesIO(contents[kind]), remote, **arguments):
            return False
    host.log(
        f"issued {service} certificate serial {issued.serial:X}, "
        f"valid until {issued.not_after:%Y-%m-%d}"
    )
    return True


@operation()
def crl_file(dest: str, pem: bytes) -> Generator[Any, None, None]:
    """``pem`` at ``dest``, mode 0644, replaced atomically when its content differs.

    + dest: a file under :data:`~plinth.certificates.CRL_DIR`
    + pem: one or more PEM CRLs

    Uploaded beside it and renamed: etcd reads its CRL file at every handshake and must never
    see half of one. Compared by sha1, so an unchanged CRL changes nothing and reloads nothing.
    """
    wanted = hashlib.sha1(pem).hexdigest()
    info = host.get_fact(File, path=dest)
    if host.get_fact(Sha1File, path=dest) == wanted and info and info.get("mode") == 644:
        host.noop(f"{dest} up to date")
        return
    explain_change(f"{dest}: {'content differs' if info else 'missing'}")
    tmp = dest + _NEW
    yield FileUploadCommand(io.BytesIO(pem), tmp)
    yield StringCommand("chmod", "644", QuoteString(tmp))
    yield StringCommand("mv", "-f", QuoteString(tmp), QuoteString(dest))


def unhashed_issuers(found: Sequence[HashedCrl], wanted: Sequence[str]) -> list[str]:
    """The issuers of ``wanted`` whose CRL the directory does not serve correctly: its file
    unreadable, ``<hash>.r0`` absent or elsewhere, or ``<issuer>.crl.pem`` not linked to the
    live file."""
    good = {
        c.issuer
        for c in found
        if c.hash is not None
        and c.hash_link == f"{c.issuer}.crl.pem"
        and c.issuer_link == crl_path(c.issuer)
    }
    return sorted(set(wanted) - good)


@operation()
def crl_hash_directory(
    directory: str, issuers: Sequence[str], group: str = "root"
) -> Generator[StringCommand, None, None]:
    """``directory`` as ``openssl rehash`` makes it for the CRLs of ``issuers``.

    + directory: for Erlang's ``{crl_cache, {ssl_crl_hash_dir, {internal, [{dir, D}]}}}``,
      which looks a CRL up as ``<issuer name hash>.r0`` at every handshake
    + issuers: ``root`` and the datacenters, whose CRLs :func:`host_tls` keeps in
      :data:`~plinth.certificates.CRL_DIR`
    + group: may read the directory (the daemon's)

    Each ``<issuer>.crl.pem`` here links to the live file in ``CRL_DIR``, so a re-signed CRL
    is read at the next handshake without touching this directory; it is rebuilt only when
    an issuer or its name hash (a new PKI) changes.
    """
    wanted = tuple(sorted(issuers))
    found = host.get_fact(CrlHashLinks, directory=directory, crl_dir=CRL_DIR, issuers=wanted)
    missing = unhashed_issuers(found, wanted)
    if not missing:
        host.noop(f"{directory} hashes the CRLs of {', '.join(wanted)}")
        return
    explain_change(f"{directory}: hash links missing for {', '.join(missing)}")
    q = shlex.quote
    links = " && ".join(f"ln -sfn {q(crl_path(i))} {q(f'{directory}/{i}.crl.pem')}" for i in wanted)
    yield StringCommand(
        f"set -e; install -d -m 750 -o root -g {q(group)} {q(directory)}; "
        f"find {q(directory)} -maxdepth 1 -type l -delete; {links}; "
        f"openssl rehash {q(directory)}"
    )


@dataclass(frozen=True)
class TlsChanges:
    """What :func:`host_tls` changed on this host, for the daemons that must reload then.

    Read only from ``_if`` callables (pyinfra evaluates them at execute time, after these
    operations ran): ``lambda: tls.changed("nginx", "nginx-upstream")``.
    """

    certificates: dict[str, Any]
    """service -> the ``certificate`` operation (its ``did_change()``)."""
    crls: tuple[Any, ...]
    """The CRL file operations."""

    def certificate_changed(self, *services: str) -> bool:
        return any(self.certificates[s].did_change() for s in services if s in self.certificates)

    def crl_changed(self) -> bool:
        return any(op.did_change() for op in self.crls)

    def changed(self, *services: str) -> bool:
        """A certificate of ``services`` or any CRL was written in this run."""
        return self.certificate_changed(*services) or self.crl_changed()


@deploy("Host TLS")
def host_tls(
    specs: Sequence[CertificateSpec],
    signer: LeafSigner,
    crls: dict[str, bytes],
    rotate_service: str | None = None,
    rotate_keys: bool = False,
) -> TlsChanges:
    """Keys, certificates and CRLs a host carries (see :mod:`plinth.certificates`).

    + specs: the host's certificates, from ``plinth.certificates.host_certificates``
    + signer: the host's datacenter signer
    + crls: issuer -> CRL PEM (``plinth.context.published_crls``): the root's and every
      DC's, because a service may verify clients from the other DC (DC2 replicating from
      DC1); each in ``<issuer>.crl.pem``, all of them in ``all.crl.pem``
    + rotate_service, rotate_keys: ``plinth pki rotate``: reissue that service's
      certificate now, and with ``rotate_keys`` make a new key first

    Returns the :class:`TlsChanges` the component deploys reload on.
    """
    files.directory(name="TLS directory", path=TLS_ROOT, mode="755")
    certificates: dict[str, Any] = {}
    # host.loop keeps operation order stable across hosts (pyinfra is untyped here)
    for spec in host.loop(specs):  # type: ignore[no-untyped-call]
        rotating = rotate_service in (spec.service, "all")
        files.directory(
            name=f"{spec.service} TLS directory",
            path=spec.directory,
            user=spec.owner,
            group=spec.group,
            mode="750",
        )
        private_key(
            name=f"{spec.service} private key",
            path=spec.key_path,
            owner=spec.owner,
            group=spec.group,
            rotate=rotating and rotate_keys,
        )
        certificates[spec.service] = certificate(
            name=f"{spec.service} certificate",
            service=spec.service,
            profile=spec.profile,
            common_name=spec.common_name,
            dns_names=list(spec.dns_names),
            ip_addresses=list(spec.ip_addresses),
            cert_path=spec.cert_path,
            chain_path=spec.chain_path,
            ca_path=spec.ca_path,
            key_path=spec.key_path,
            owner=spec.owner,
            group=spec.group,
            signer=signer,
            force_reason="rotation requested (plinth pki rotate)" if rotating else None,
        )
    files.directory(name="CRL directory", path=CRL_DIR, mode="755")
    written = []
    for issuer, pem in host.loop(sorted(crls.items())):  # type: ignore[no-untyped-call]
        written.append(crl_file(name=f"CRL of {issuer}", dest=crl_path(issuer), pem=pem))
    written.append(
        crl_file(
            name="CRLs of the root and every datacenter in one file",
            dest=ALL_CRLS,
            pem=all_crls_pem(crls),
        )
    )
    return TlsChanges(certificates, tuple(written))
