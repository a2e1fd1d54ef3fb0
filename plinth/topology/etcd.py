"""etcd, Patroni's DCS: who may do what on its client port (:data:`ETCD_ACCESS`, the
statement docs/security.md shows).

This states what is deployed today, not what issue 15 asks for: etcd checks that a
client's certificate chains to the platform root (``--client-cert-auth``) and nothing
more. etcd authentication (users, roles) is off, because it cannot be switched on under
the current shape without taking the DCS away from every Patroni member at once: Patroni
speaks to etcd through the gRPC gateway, where etcd ignores the certificate's CN as a
user and, once authentication is on, answers 400 to every request whose client
certificate carries a CN at all (Patroni's does: the host's FQDN). docs/security.md has
the sources and the shape that would work.
"""

from __future__ import annotations

from plinth.topology.patroni import Access

ETCD_ACCESS: tuple[Access, ...] = (
    Access(
        calls="every key (Patroni's `/plinth/<scope>/`, its leader key included): read, "
        "write, delete, watch, leases; the cluster: member list, endpoint status, "
        "move-leader, alarms, defragment, snapshot; authentication: user, role, "
        "`auth enable`",
        who="any holder of a certificate that chains to the platform root: Patroni "
        "members, plinth's `etcdctl` on the etcd members, and equally every other service "
        "certificate of every host, Airflow's `airflow-client` (readable by the user that "
        "runs DAG code) and every `plinth pki client-cert`",
        how="mutual TLS only (`--client-cert-auth`); etcd authentication is off: no user, "
        "no role, no password",
    ),
)
"""Who may do what on etcd's client port today (docs/security.md shows these rows)."""


def access_rows() -> list[str]:
    """:data:`ETCD_ACCESS` as the markdown table rows docs/security.md carries."""
    return [f"| {a.calls} | {a.who} | {a.how} |" for a in ETCD_ACCESS]
