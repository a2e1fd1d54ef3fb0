"""Both sites read live from the controller: the :class:`~plinth.geo.observe.Observed`
the DC commands decide from, through the same pyinfra connections and facts as
``plinth status`` (:mod:`plinth.remote`, :mod:`plinth.status.collect`).

One :class:`LiveSites` holds a connection to every host of every site for the whole
command. A host that does not connect is recorded as not answering
(:attr:`SiteObservation.unreachable`), never left out; each reading retries it. Every
read is bounded: SSH connects time out (``CONNECT_TIMEOUT``), the facts' own commands
carry timeouts (``curl -m 4`` for Patroni, ``timeout 5`` around ``redis-cli``), and a
command this module runs gets ``_timeout``.

What is not read yet (the plans accept it): the fence marker's per-component times
(``fence_age`` stays empty: nothing writes them before ``dc-failover`` is built) and a
stopped member's ``pg_controldata`` (a switchover needs every member running).

pyinfra (gevent) is imported only when a command connects, as in ``plinth status``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from plinth.geo.observe import (
    APPLIED_MARKER,
    FENCE_MARKER,
    Observed,
    PgMember,
    PgSite,
    RedisSite,
    SiteObservation,
    airflow_units,
    pg_member,
    pg_site,
    running,
    with_lineage,
)
from plinth.model import Environment, Host, Role
from plinth.stacks import Stack
from plinth.topology.geo import GeoTopology, geo_topology

T = TypeVar("T")

MARKERS = (
    f"printf 'applied=%s\\n' \"$(cat {APPLIED_MARKER} 2>/dev/null)\"; "
    f"if [ -e {FENCE_MARKER} ]; then echo fenced; fi"
)
"""The markers plinth leaves on a host: the active datacenter its last deploy applied,
and the fence of a failover (missing files are not errors: a host may have neither)."""

RABBITMQ_MESSAGES = (
    "total=0; for v in $(rabbitmqctl -q list_vhosts --no-table-headers name); do "
    'for m in $(rabbitmqctl -q list_queues -p "$v" --no-table-headers messages); do '
    "total=$((total + m)); done; done; echo $total"
)
"""Messages queued in every vhost of the node's cluster, summed."""


class LiveSites:
    """Every host of every site of ``stacks`` (one environment), connected for the
    command; use as a context manager."""

    def __init__(
        self, stacks: list[Stack], target: str | None = None, connect_timeout: int = 10
    ) -> None:
        self.stacks = stacks
        self.target = target
        """The site the command moves the active site to: its RabbitMQ is the only one
        read (what the switchover decides from); the others' counts are None (not read)."""
        self._rabbitmq_clean: set[str] = set()
        """Sites whose RabbitMQ read 0 missing objects and 0 messages: not read again
        during this command (nothing publishes there while its Airflow is stopped)."""
        self.env: Environment = stacks[0].environment
        self.environment_file: Path = stacks[0].environment_file
        self.connect_timeout = connect_timeout
        self._states: dict[str, Any] = {}
        self._exit = ExitStack()

    def __enter__(self) -> LiveSites:
        from plinth.remote import connected_answering

        for stack in self.stacks:
            self._states[stack.datacenter] = self._exit.enter_context(
                connected_answering(stack, self.connect_timeout)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def reload(self) -> None:
        """Read the environment file again (a DC command rewrote ``active_datacenter``)."""
        from plinth.model import load_environment

        self.env = load_environment(self.environment_file)
        self.stacks = [replace(s, environment=self.env) for s in self.stacks]

    # ---- hosts ----

    def model_host(self, name: str) -> Host:
        return next(h for h in self.env.hosts if h.name == name)

    def pyinfra_host(self, name: str) -> Any | None:
        """The connected pyinfra host ``name`` (reconnected when it dropped); None when
        it does not answer SSH."""
        state = self._states[self.model_host(name).datacenter]
        host = state.inventory.get_host(name)
        if not host.connected:
            host.connect(show_errors=False)
            if host.connected:
                state.activate_host(host)
        return host if host.connected else None

    def run(self, name: str, command: str, timeout: int = 60) -> tuple[bool, list[str], list[str]]:
        """Run ``command`` on host ``name`` (as root: sudo when the SSH user is not):
        (succeeded, stdout lines, stderr lines); a host that does not answer fails."""
        from pyinfra.api import StringCommand

        host = self.pyinfra_host(name)
        if host is None:
            return False, [], [f"{name} does not answer SSH"]
        arguments: dict[str, Any] = {"_timeout": timeout}
        if host.data.get("_sudo"):
            arguments["_sudo"] = True
        try:
            ok, output = host.run_shell_command(
                StringCommand(command), print_output=False, **arguments
            )
        except Exception as error:  # a dropped connection, a timeout: the step fails
            return False, [], [f"{name}: {error}"]
        return bool(ok), list(output.stdout_lines), list(output.stderr_lines)

    def fact(self, name: str, fact: Any, **kwargs: Any) -> Any:
        """A fact of host ``name``; None when the host does not answer or the read fails
        (the caller records what that means: a member without an answer...)."""
        from pyinfra.api.facts import get_fact
        from pyinfra.context import ctx_host, ctx_state

        host = self.pyinfra_host(name)
        if host is None:
            return None
        state = self._states[self.model_host(name).datacenter]
        try:
            with ctx_state.use(state), ctx_host.use(host):
                return get_fact(state, host, fact, kwargs=kwargs, apply_failed_hosts=False)
        except Exception:
            return None

    # ---- the reading ----

    def topology(self) -> GeoTopology:
        return geo_topology(self.env)

    def observe(self) -> Observed:
        """Every site, read once."""
        topology = self.topology()
        names = [dc.name for dc in self.env.datacenters]
        read = self._each(names, lambda dc: self._site(topology, dc))  # both sites at once
        sites = tuple(read[dc] for dc in names)
        live_active = next((s.name for s in sites if s.postgresql.writable), None)
        if live_active is not None and self.target is not None:
            sites = tuple(
                self._rabbitmq(s, live_active) if s.name == self.target else s for s in sites
            )
        return Observed(topology, sites)

    def _each(self, names: list[str], read: Callable[[str], T]) -> dict[str, T]:
        """``read(name)`` for every name at once (gevent, as pyinfra reads facts): a
        reading of a site costs its slowest host, not their sum."""
        import gevent  # type: ignore[import-untyped]

        jobs = {name: gevent.spawn(read, name) for name in names}
        gevent.joinall(list(jobs.values()))
        return {name: job.value for name, job in jobs.items()}

    def _host_state(self, name: str) -> tuple[dict[str, bool | None], str | None, bool]:
        """A host's units (``SystemdStatus``), the active datacenter its last deploy
        applied (None: none recorded), and whether it carries the fence marker."""
        from pyinfra.facts.systemd import SystemdStatus

        units = self.fact(name, SystemdStatus) or {}
        ok, out, _ = self.run(name, MARKERS, timeout=30)
        lines = [line.strip() for line in out] if ok else []
        applied = next(
            (line[len("applied=") :] for line in lines if line.startswith("applied=")), ""
        )
        return units, applied or None, "fenced" in lines

    def _site(self, topology: GeoTopology, dc: str) -> SiteObservation:
        layout = topology.site(dc)
        hosts = self.env.hosts_in(dc)
        answering = self._each([h.name for h in hosts], lambda n: self.pyinfra_host(n) is not None)
        reachable = frozenset(n for n, ok in answering.items() if ok)
        states = self._each(sorted(reachable), self._host_state)
        systemd = {name: state[0] for name, state in states.items()}
        applied = {state[1] for state in states.values()}
        fenced = frozenset(name for name, state in states.items() if state[2])
        store = self.env.debian.key_value_store
        units = {
            h.name: airflow_units(h.roles, systemd[h.name])
            for h in hosts
            if h.name in layout.airflow and h.name in systemd
        }
        sentinel_unit = store.sentinel_unit.removesuffix(".service")
        site = SiteObservation(
            name=dc,
            reachable=reachable,
            unreachable=frozenset(h.name for h in hosts) - reachable,
            postgresql=self._postgresql(topology, dc, reachable),
            redis=RedisSite(
                nodes=self._redis_nodes(dc, reachable),
                sentinels_running=running(
                    {h: s for h, s in systemd.items() if h in layout.sentinels}, sentinel_unit
                ),
            ),
            airflow_units=units,
            etcd_running=running({h: s for h, s in systemd.items() if h in layout.etcd}, "etcd"),
            keepalived_running=running(
                {h: s for h, s in systemd.items() if h in layout.keepalived}, "keepalived"
            ),
            fenced=fenced,
            # every host that answered must have applied the same one
            applied_active=applied.pop() if len(applied) == 1 else None,
            rabbitmq_missing=None,
            rabbitmq_messages=None,
        )
        if not self.env.hosts_with(Role.RABBITMQ, dc) or dc in self._rabbitmq_clean:
            return replace(site, rabbitmq_missing=0, rabbitmq_messages=0)
        return site

    def _patroni_tls(self, host: Host) -> tuple[dict[str, str], str]:
        from plinth.status.collect import host_certificate, patroni_api

        tls = host_certificate(self.env, host, "patroni")
        files = {"ca": tls.ca_path, "cert": tls.chain_path, "key": tls.key_path}
        return files, patroni_api(self.env, host)

    def _postgresql(self, topology: GeoTopology, dc: str, reachable: frozenset[str]) -> PgSite:
        from facts.patroni import PatroniDynamicConfig, PatroniSelf
        from facts.postgresql import PostgresTimeline

        port = self.env.components.patroni.postgresql_port

        def read(name: str) -> tuple[PgMember, dict[str, Any] | None]:
            tls, api = self._patroni_tls(self.model_host(name))
            document = self.fact(name, PatroniSelf, api=api, **tls)
            member = pg_member(name, document)
            if member.running:
                member = with_lineage(member, self.fact(name, PostgresTimeline, port=port))
            config = self.fact(name, PatroniDynamicConfig, api=api, **tls) if document else None
            return member, config

        names = [h.name for h in self.env.hosts_with(Role.POSTGRESQL, dc) if h.name in reachable]
        readings = self._each(names, read)
        members = [member for member, _ in readings.values()]
        config = next((c for _, c in readings.values() if c is not None), None)
        try:
            return pg_site(members, config, topology)
        except ValueError:
            # standby_cluster names no site's VIP: not a cluster the plans may act on
            return pg_site(members, None, topology)

    def _redis_nodes(self, dc: str, reachable: frozenset[str]) -> tuple[Any, ...]:
        """Every data node of ``dc`` as the first Redis host that answers reads them (by
        address); a node nobody could ask is recorded as not answering."""
        from facts.redis import RedisNode, RedisReplication

        nodes = self.env.hosts_with(Role.REDIS, dc)
        addresses = tuple(str(h.address) for h in nodes)
        for host in nodes:
            if host.name not in reachable:
                continue
            spec = self.redis_spec(host)
            state = self.fact(
                host.name,
                RedisReplication,
                tls=spec.cli("default"),
                addresses=addresses,
                port=spec.settings.port,
            )
            if state is not None:
                return tuple(state.nodes)
        silent = "no Redis host of the site answers"
        return tuple(RedisNode(address=a, error=silent) for a in addresses)

    def redis_spec(self, host: Host, active: str | None = None) -> Any:
        """The Redis slice of the model on ``host`` (with ``active`` as the active site:
        what a site about to take over runs)."""
        from plinth.context import HostContext
        from plinth.status.collect import host_certificate
        from plinth.topology.redis import redis_input

        env = self.env
        if active is not None and active != env.active_site:
            env = env.model_copy(update={"active_datacenter": active})
        redis_tls = host_certificate(env, host, "redis") if Role.REDIS in host.roles else None
        sentinel_tls = (
            host_certificate(env, host, "redis-sentinel") if Role.SENTINEL in host.roles else None
        )
        context = HostContext(
            env, self.environment_file, host, env.datacenters_by_name[host.datacenter]
        )
        return redis_input(context, redis_tls, sentinel_tls)

    def rabbitmq_host(self, dc: str) -> Host | None:
        """The first RabbitMQ node of ``dc`` that answers SSH."""
        return next(
            (
                h
                for h in self.env.hosts_with(Role.RABBITMQ, dc)
                if self.pyinfra_host(h.name) is not None
            ),
            None,
        )

    def _rabbitmq_messages(self, dc: str) -> int | None:
        if not self.env.hosts_with(Role.RABBITMQ, dc):
            return 0
        host = self.rabbitmq_host(dc)
        if host is None:
            return None
        ok, out, _ = self.run(host.name, RABBITMQ_MESSAGES, timeout=60)
        try:
            return int(out[-1].strip()) if ok and out else None
        except ValueError:
            return None

    def _rabbitmq(self, site: SiteObservation, live_active: str) -> SiteObservation:
        """``site`` with what its RabbitMQ lacks of the live-active site's (0 there) and
        the messages queued in it."""
        if site.rabbitmq_missing == 0 and site.rabbitmq_messages == 0:
            return site  # no RabbitMQ, or read clean earlier in this command
        missing: int | None = 0
        if site.name != live_active:
            try:
                missing = self.rabbitmq_missing(live_active, site.name).created
            except Exception:
                missing = None
        messages = self._rabbitmq_messages(site.name)
        if missing == 0 and messages == 0:
            self._rabbitmq_clean.add(site.name)
        return replace(site, rabbitmq_missing=missing, rabbitmq_messages=messages)

    def rabbitmq_missing(self, source: str, target: str) -> Any:
        """:func:`plinth.rabbitmq_sync.plan_sync` of ``target``'s RabbitMQ against
        ``source``'s, read through the first node of each that answers."""
        from plinth.cli.rabbitmq import read_cluster
        from plinth.rabbitmq_sync import plan_sync

        stacks = {s.datacenter: s for s in self.stacks}
        _, have = read_cluster(
            self._states[source], stacks[source], self.env.hosts_with(Role.RABBITMQ, source)
        )
        _, lacks = read_cluster(
            self._states[target], stacks[target], self.env.hosts_with(Role.RABBITMQ, target)
        )
        return plan_sync(have, lacks)

    def state(self, dc: str) -> Any:
        return self._states[dc]
