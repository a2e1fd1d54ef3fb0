"""Issuance throughput of the PKI for every host of the ``full`` lab (no containers).

    python bench/pki.py [--rounds 3]

For each round: a fresh root and two DC intermediates in a temporary directory, then
every certificate the ``full`` lab's hosts carry (``plinth/certificates.py``), each from
a fresh P-256 key and CSR as a host makes them, signed by its DC's intermediate with
the name-constraint checks and the issuance log entry of a real run. Prints the time per
round, per certificate, and how much of it is key generation (done on the hosts in a
real deploy) versus signing on the controller. SSH round trips are not included: the
first ``up`` of the full lab measures those (see docs/pki.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plinth.certificates import host_certificates
from plinth.lab.topology import build_environment
from plinth.model import parse_environment
from plinth.pki import PkiStore
from plinth.pki.ca import init_pki
from plinth.pki.issue import sign_csr
from plinth.provision import datacenter_trust

PASSPHRASE = "bench-only-passphrase"


def csr_for(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def one_round() -> tuple[int, int, float, float]:
    env = parse_environment(build_environment("full"))
    with tempfile.TemporaryDirectory(prefix="plinth-bench-pki-") as tmp:
        state = Path(tmp)
        init_pki(state, env.name, datacenter_trust(env), PASSPHRASE)
        store = PkiStore(state)
        keys = signing = 0.0
        count = 0
        for host in env.hosts:
            for spec in host_certificates(env, host):
                started = time.perf_counter()
                csr = csr_for(spec.common_name)
                keys += time.perf_counter() - started
                started = time.perf_counter()
                sign_csr(
                    store, host.datacenter, csr, spec.profile, spec.common_name,
                    spec.dns_names, spec.ip_addresses, PASSPHRASE, "bench", spec.service,
                    host.name,
                )  # fmt: skip
                signing += time.perf_counter() - started
                count += 1
        return len(env.hosts), count, keys, signing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    hosts, count = rounds[0][0], rounds[0][1]
    totals = [k + s for _, _, k, s in rounds]
    signing = [s for _, _, _, s in rounds]
    print(f"full lab: {hosts} hosts, {count} certificates per round, {args.rounds} rounds")
    print(f"issue all (key + CSR + sign): median {statistics.median(totals):.2f} s")
    print(f"  of which signing on the controller: median {statistics.median(signing):.2f} s")
    print(f"per certificate: {1000 * statistics.median(totals) / count:.1f} ms")


if __name__ == "__main__":
    main()
