"""The PostgreSQL cell's Debian packages, installed before anything is configured.

They go in first, not started (before host TLS, so the service users that own the keys
exist); the deploy writes each daemon's configuration and then starts it.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files

from plinth.model import Role
from plinth.releases import DebianRelease

POLICY_RC = "/usr/sbin/policy-rc.d"


def cell_packages(roles: Sequence[Role], release: DebianRelease) -> list[str]:
    """Debian packages a host with ``roles`` needs on ``release`` (its table)."""
    table = release.role_packages
    wanted = [p for role in table if role in roles for p in table[role]]
    return list(dict.fromkeys(wanted))


@operation()
def packages_not_started(packages: Sequence[str]) -> Generator[StringCommand, None, None]:
    """Install ``packages`` without letting their maintainer scripts start the daemons.

    A freshly installed etcd would start as a one-node cluster on localhost, plaintext;
    PostgreSQL would create and start a ``main`` cluster Patroni does not own. A
    temporary ``policy-rc.d`` (exit 101) denies every start during this one apt run; the
    deploy writes each daemon's configuration and then starts it. An operator's own
    policy-rc.d is left as it is.
    """
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p not in installed]
    if not missing:
        host.noop("PostgreSQL cell packages installed")
        return
    pkgs = " ".join(shlex.quote(p) for p in missing)
    yield StringCommand(
        f"if [ ! -e {POLICY_RC} ]; then printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC} && "
        f"chmod 755 {POLICY_RC} && trap 'rm -f {POLICY_RC}' EXIT; fi; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
        f"{pkgs}"
    )


@deploy("PostgreSQL cell packages")
def cell_packages_installed(roles: Sequence[Role], release: DebianRelease) -> None:
    """Every daemon package of the host's roles on ``release``, nothing started."""
    packages = cell_packages(roles, release)
    if not packages:
        return
    if Role.POSTGRESQL in roles:
        files.put(
            name="No default PostgreSQL cluster (Patroni creates its own)",
            src=StringIO("# managed by plinth\ncreate_main_cluster = false\n"),
            dest="/etc/postgresql-common/createcluster.conf",
            mode="644",
            create_remote_dir=True,
        )
    packages_not_started(name="PostgreSQL cell packages, not started", packages=packages)
