"""plinth's PKI: an offline-capable root, name-constrained intermediates per datacenter,
and 90-day leaves signed from CSRs made on the hosts.

Controller side only, pure ``cryptography``; nothing here imports pyinfra. See
``docs/pki.md`` for the hierarchy, file layout and operator procedures.
"""

from plinth.pki.ca import DatacenterTrust, init_pki
from plinth.pki.crl import REASONS, Revocation, crl_warnings, refresh_crl, revoke
from plinth.pki.errors import PkiError
from plinth.pki.issue import (
    ClientBundle,
    IssuedCertificate,
    LeafSigner,
    Profile,
    issue_client_bundle,
    sign_csr,
)
from plinth.pki.log import IssuanceRecord, read_records
from plinth.pki.renewal import reissue_reason
from plinth.pki.store import PkiStore

__all__ = [
    "REASONS",
    "ClientBundle",
    "DatacenterTrust",
    "IssuanceRecord",
    "IssuedCertificate",
    "LeafSigner",
    "PkiError",
    "PkiStore",
    "Profile",
    "Revocation",
    "crl_warnings",
    "init_pki",
    "issue_client_bundle",
    "read_records",
    "refresh_crl",
    "reissue_reason",
    "revoke",
    "sign_csr",
]
