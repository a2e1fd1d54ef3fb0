"""Patroni + PostgreSQL: the DC's HA database cell (and the cell's packages).

PostgreSQL 15 on Debian 12, 17 on Debian 13 (the release table, plinth/releases.py).

The cell's packages are installed first, not started (before host TLS, so the service
users that own the keys exist). Patroni is configured after etcd, its DCS.

What plinth writes and what it leaves to Patroni:

* ``/etc/patroni/config.yml`` (local configuration: TLS, etcd, authentication, pg_hba)
  is ours; a change is applied with a reload (SIGHUP), which never restarts PostgreSQL.
* ``postgresql.conf`` and ``pg_hba.conf`` are Patroni's, written from the above.
* dynamic settings (timings, synchronous mode, PostgreSQL parameters) live in etcd:
  ``bootstrap.dcs`` seeds them once; afterwards :func:`dynamic_config` compares them
  with the model through ``GET /config`` and sends only the difference with
  ``PATCH /config`` — the cluster's own changes to other keys are left alone.
* a parameter that needs a restart is rolled by :func:`pending_restarts`: replicas one at
  a time, one switchover, the old primary last, each step behind a live gate.
* Patroni itself is not Debian's (bookworm's 3.0.2 can fork the cluster after a
  partition): ``components.patroni.version`` comes from a hash-checked wheelhouse
  (:func:`plinth.wheelhouse.patroni_wheelhouse`) installed offline into
  ``/opt/patroni/venv-<tag>``, ``/opt/patroni/current`` → the venv in use, run by plinth's
  own ``/etc/systemd/system/patroni.service``; ``/usr/local/bin/patronictl`` is the venv's.
  Installing never restarts anything: members running another release are rolled by
  :func:`release_rolled` (decided by the pure :func:`upgrade_steps`), each stopped through
  Patroni so PostgreSQL shuts down cleanly, never adopted by the new Patroni.

Secrets (the passwords of ``postgres``, ``replicator`` and ``rewind_user``, and the REST
API's) are read on the controller from the encrypted store and reach the host only inside
the uploaded files, compared by checksum: never in an operation's arguments, a log line or
a plan. A change through the REST API needs that password and a member's address; plinth's
own (``PATCH /config``, the rolls' ``POST``) run as root on a member and read it from the
root-only ``/etc/patroni/restapi.curlrc`` (:func:`plinth.topology.patroni.unsafe_call`;
who may call what: docs/security.md).

The package, by concern (deploy order in :func:`patroni_member`):

* :mod:`.packages`: the cell's Debian packages, installed not started;
* :mod:`.settings`: the model's slice, dynamic settings, ``config.yml`` (pure);
* :mod:`.install`: the wheelhouse venv, plinth's unit, ``patronictl``;
* :mod:`.rest`: the REST API, read as facts, live, and behind the gate;
* :mod:`.converge`: one member started, ready, patched, its roles and databases;
* :mod:`.decide`: the rolls' next step from one reading of the cluster (pure);
* :mod:`.roll`, :mod:`.release`: the rolls' executors, which only perform those steps;
* :mod:`.member`: the composition.
"""

from operations.patroni.decide import upgrade_steps
from operations.patroni.install import PatroniInstall, config_check, render_unit
from operations.patroni.member import patroni_member
from operations.patroni.packages import cell_packages, cell_packages_installed
from operations.patroni.release import restart_command
from operations.patroni.settings import (
    PatroniInput,
    StandbySource,
    config_difference,
    dynamic_settings,
    flatten,
    patroni_input,
    read_passwords,
    render,
)
from plinth.topology.patroni import standby_slot

# What deploy.py and the tests imported from operations.patroni before it became a package.
__all__ = [
    "PatroniInput",
    "PatroniInstall",
    "StandbySource",
    "cell_packages",
    "cell_packages_installed",
    "config_check",
    "config_difference",
    "dynamic_settings",
    "flatten",
    "patroni_input",
    "patroni_member",
    "read_passwords",
    "render",
    "render_unit",
    "restart_command",
    "standby_slot",
    "upgrade_steps",
]
