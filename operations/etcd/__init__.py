"""etcd: the DCS of one datacenter's Patroni cluster (3 or 5 members, never across DCs).

Clients and peers speak TLS only and must present a certificate chaining to the
platform root (``client-cert-auth`` on both). Each member's peer certificate names its
node IP (etcd checks it against the peer's source address).

Changes are safe under a plain ``pyinfra`` run: a member whose configuration changed is
restarted from a serial operation whose callback first checks, at that moment, that
every member is healthy; it hands leadership away first when it is the leader, and
waits for the member to be healthy again before the next host. A cluster that is not
healthy is never restarted into: the gate stops that host with the reason
(:mod:`.decide` decides, :mod:`.roll` performs).

The package, by concern (deploy order in :func:`etcd_member`):

* :mod:`.settings`: the model's slice, the rendered configuration, ``etcdctl``'s settings;
* :mod:`.decide`: the gated restart's next step from one reading of the cluster (pure);
* :mod:`.roll`: its executor, which only performs those steps;
* :mod:`.member`: started, restarted, healthy: the composition.
"""

from operations.etcd.member import etcd_member
from operations.etcd.settings import EtcdInput, etcd_input

# What deploy.py and the tests imported from operations.etcd before it became a package.
__all__ = ["EtcdInput", "etcd_input", "etcd_member"]
