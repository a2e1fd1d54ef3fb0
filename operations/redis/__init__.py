"""Redis + Sentinel: one master, its replicas and three Sentinels in the active
datacenter; every other DC's data nodes are ``replica-priority 0`` replicas of the active
DC's master (bootstrapped so, then re-pointed by the active DC's Sentinels only) and its
Sentinels stay stopped (see docs/components/redis.md).

TLS only: the plaintext ports are 0, clients must present a certificate chaining to
the platform root (``tls-auth-clients yes``), replication and Sentinel speak TLS too.
Three ACL users (``default`` for applications and operators, ``replication``,
``sentinel``) carry passwords from the encrypted secrets.

What plinth writes and what it leaves to the daemons (they rewrite their own files):

* the systemd drop-ins (settings fixed at start: ports, TLS files, ACL file, I/O
  threads) and ``users.acl`` are ours, rewritten on every run;
* ``redis.conf`` and ``sentinel.conf`` are written once, at bootstrap, with the master
  that the Sentinels (or, for a new cell, the model) name at that moment; afterwards
  they belong to Redis and Sentinel: replication and monitoring settings are changed at
  runtime (``CONFIG SET`` + ``CONFIG REWRITE``, ``SENTINEL SET``), never by rewriting the
  file, so a deploy never undoes a failover;
* a node whose running process differs from the drop-in (or from the installed package
  version) is restarted by :func:`.roll.rolling_restart`: replicas, then Sentinels one by
  one with ``SENTINEL CKQUORUM`` passing, then ``SENTINEL FAILOVER``, then the old
  master, each step decided by the pure :func:`.decide.next_step` on a fresh reading of
  the live cell.

Passwords reach the hosts only inside uploaded files (compared by checksum) and root-only
files that ``redis-cli`` reads (``REDISCLI_AUTH``): never in an argument, a log or a plan.

What is on the host follows the release (:attr:`plinth.topology.redis.RedisInput.store`,
from :mod:`plinth.releases`): Redis 7.0 on Debian 12 (``redis-server``, ``/etc/redis``,
user ``redis``, ``redis-cli``), Valkey 8.1 on Debian 13 (``valkey-server``,
``/etc/valkey``, user ``valkey``, ``valkey-cli``), the same protocol, commands and
directives. The component, its roles and secrets stay ``redis``.

The package, by concern (deploy order in :func:`redis_node`):

* :mod:`.settings`: constants, passwords, settings maps, command line, bootstrap files (pure);
* :mod:`.live`: the cell read at execute time (replication, Sentinels, current master);
* :mod:`.bootstrap`: ``redis.conf``/``sentinel.conf`` written once;
* :mod:`.converge`: one node started, answering, its ACL users, runtime settings, Sentinel
  parameters;
* :mod:`.decide`: the roll's next step from one reading of the cell (pure);
* :mod:`.roll`: the roll's executor, which only performs those steps;
* :mod:`.node`: the composition.
"""

from operations.redis.bootstrap import bootstrap_master
from operations.redis.decide import RollPlan, roll_plan
from operations.redis.node import redis_node
from operations.redis.settings import (
    Passwords,
    command_line,
    read_passwords,
    render_redis_conf,
    render_sentinel_conf,
    runtime_settings,
    sentinel_settings,
    setting_difference,
    static_settings,
)

# What deploy.py, bench/ and the tests imported from operations.redis before it became a
# package.
__all__ = [
    "Passwords",
    "RollPlan",
    "bootstrap_master",
    "command_line",
    "read_passwords",
    "redis_node",
    "render_redis_conf",
    "render_sentinel_conf",
    "roll_plan",
    "runtime_settings",
    "sentinel_settings",
    "setting_difference",
    "static_settings",
]
