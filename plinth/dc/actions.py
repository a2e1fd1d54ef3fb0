"""Each step of a DC switchover plan, done on its hosts over the DC commands' SSH
connections (:class:`~plinth.dc.live.LiveSites`): the :class:`~plinth.geo.execute.Executor`
the loop runs in production.

Every action is idempotent: run again on a host where it already took effect, it changes
nothing (``systemctl`` and ``REPLICAOF`` are; a Patroni role change that is already made
is recognised; the environment file is left untouched when it already says it). An
action fails (:class:`~plinth.geo.execute.StepFailed`) with what the host said; the loop
stops there and prints what the run already did. What each runs:

===================  ==========================================================================
stop-airflow         ``systemctl disable --now`` the scheduler, then the host's other Airflow units
start-airflow        ``systemctl enable --now`` the host's Airflow units; wait for the api-server's
                     health to show the scheduler healthy
add-standby-slot     ``PATCH /config {"slots": {"standby_<other>": {"type": "physical"}}}`` (curl,
                     as root on a member: :func:`plinth.topology.patroni.unsafe_call`)
demote-postgresql    ``patronictl demote-cluster --host <target VIP> --port <haproxy primary port>
                     --primary-slot-name standby_<site>`` on the primary, then ``PATCH /config``
                     removing the slot the site kept for the target
promote-postgresql   ``patronictl promote-cluster`` on the standby leader
verify-*             nothing: the loop reads until the plan moves on (the step's bound)
stop-sentinels       ``systemctl disable --now`` the Sentinel unit
pause-redis-writes   ``CLIENT PAUSE <ms> WRITE`` on the master
promote-redis        wait (the step's bound) for the candidate's offset to reach the paused
                     master's; ``REPLICAOF NO ONE`` on it, ``REPLICAOF <it>`` on the others,
                     ``CONFIG SET replica-priority 100`` + ``CONFIG REWRITE`` on all
follow-redis         ``REPLICAOF <master>``, ``CONFIG SET replica-priority 0``, ``CONFIG REWRITE``,
                     ``CLIENT UNPAUSE``
start-sentinels      ``sentinel.conf`` written afresh monitoring the site's master (the deploy's
                     template, with its bootstrap marker), ``systemctl enable --now``, wait for
                     ``SENTINEL CKQUORUM`` OK
sync-rabbitmq-...    :mod:`plinth.rabbitmq_sync` through ``plinth rabbitmq sync-definitions``' code
purge-rabbitmq       ``rabbitmqctl purge_queue`` of every queue of every vhost
write-model          ``active_datacenter: <site>`` in ``inventory/<env>.yaml`` (that line only)
converge             ``python -m plinth up <env>-<site> --yes --skip-preview`` (a subprocess)
===================  ==========================================================================

The fence, rejoin and re-clone actions of ``dc-failover``/``dc-failback`` are not built:
they fail naming themselves.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from io import StringIO
from typing import Any

from plinth.dc.live import LiveSites
from plinth.geo.decide import Action, Step
from plinth.geo.execute import REDIS_PAUSE_SECONDS, StepFailed
from plinth.geo.model_file import write_active_datacenter
from plinth.geo.observe import Observed
from plinth.model import Host, Role
from plinth.stacks import project_root
from plinth.topology.airflow import COMPONENTS
from plinth.topology.patroni import unsafe_call

PATRONICTL = "/usr/local/bin/patronictl -c /etc/patroni/config.yml"
"""The wheelhouse's patronictl (``/opt/patroni/current``, linked on ``PATH`` by the
deploy) with the member's own configuration (DCS and REST API credentials; root reads
it)."""
AIRFLOW_STOP_SECONDS = 660
"""A worker's warm shutdown lets running tasks finish (``TimeoutStopSec`` 600 s)."""
AIRFLOW_HEALTH_SECONDS = 300
SENTINEL_QUORUM_SECONDS = 60
CONVERGE_SECONDS = 3600
ALREADY = ("already in the required state",)
"""patronictl's answer when the cluster already has the role asked for."""


def _tail(lines: list[str], count: int = 3) -> str:
    return " ".join(line.strip() for line in lines[-count:] if line.strip()) or "no output"


class HostExecutor:
    """The loop's executor over SSH (see the module docstring)."""

    def __init__(
        self,
        live: LiveSites,
        say: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.live = live
        self.say = say
        self.sleep = sleep

    # ---- Executor ----

    def observe(self) -> Observed:
        return self.live.observe()

    def perform(self, step: Step, observed: Observed) -> str:
        handler = self._handlers().get(step.action)
        if handler is None:
            raise StepFailed(
                f"{step.action.value} is not built yet (only dc-switchover's steps are)"
            )
        return handler(step, observed)

    def _handlers(self) -> dict[Action, Callable[[Step, Observed], str]]:
        return {
            Action.STOP_AIRFLOW: self.stop_airflow,
            Action.START_AIRFLOW: self.start_airflow,
            Action.ADD_STANDBY_SLOT: self.add_standby_slot,
            Action.DEMOTE_POSTGRESQL: self.demote_postgresql,
            Action.VERIFY_CAUGHT_UP: self.verify,
            Action.PROMOTE_POSTGRESQL: self.promote_postgresql,
            Action.VERIFY_FOLLOWING: self.verify,
            Action.VERIFY_STANDBY: self.verify,
            Action.STOP_SENTINELS: self.stop_sentinels,
            Action.PAUSE_REDIS: self.pause_redis,
            Action.PROMOTE_REDIS: self.promote_redis,
            Action.FOLLOW_REDIS: self.follow_redis,
            Action.START_SENTINELS: self.start_sentinels,
            Action.SYNC_RABBITMQ: self.sync_rabbitmq,
            Action.PURGE_RABBITMQ: self.purge_rabbitmq,
            Action.WRITE_MODEL: self.write_model,
            Action.CONVERGE: self.converge,
        }

    # ---- helpers ----

    def _run(self, host: str, command: str, timeout: int = 60) -> list[str]:
        ok, out, err = self.live.run(host, command, timeout=timeout)
        if not ok:
            raise StepFailed(f"{host}: {' '.join(command.split()[:3])}...: {_tail(err or out)}")
        return out

    def _host(self, name: str) -> Host:
        return self.live.model_host(name)

    def _patroni_call(self, host: Host, method: str, path: str, body: dict[str, Any]) -> None:
        from plinth.status.collect import host_certificate, patroni_api

        tls = host_certificate(self.live.env, host, "patroni")
        command = unsafe_call(tls, method, patroni_api(self.live.env, host) + path, body, "-f")
        self._run(host.name, command)

    def _running_member(self, observed: Observed, site: str) -> Host:
        pg = observed.site(site).postgresql
        member = pg.leader or next((m for m in pg.members if m.running), None)
        if member is None:
            raise StepFailed(f"no PostgreSQL member of {site} runs")
        return self._host(member.name)

    def _redis_cli(self, host: Host, *args: str, user: str = "default") -> str:
        spec = self.live.redis_spec(host)
        return str(spec.redis_cli(spec.address, *args, user=user))

    def _redis(self, host: Host, *args: str) -> str:
        """One redis-cli command against ``host``'s own data node, run there; its answer."""
        out = self._run(host.name, self._redis_cli(host, *args))
        answer = _tail(out, 1)
        if answer.startswith(("ERR", "(error)", "NOAUTH", "WRONGPASS", "NOPERM")):
            raise StepFailed(f"{host.name}: {' '.join(args)}: {answer}")
        return answer

    # ---- Airflow ----

    def _airflow_units(self, host: Host) -> list[str]:
        """The host's Airflow units, the scheduler first (no new task once it stopped)."""
        units = [unit for role, (unit, _) in COMPONENTS.items() if role in host.roles]
        return sorted(units, key=lambda u: u != COMPONENTS[Role.AIRFLOW_SCHEDULER][0])

    def stop_airflow(self, step: Step, observed: Observed) -> str:
        for name in step.hosts:
            units = self._airflow_units(self._host(name))
            command = " && ".join(f"systemctl disable --now {u}.service" for u in units)
            self._run(name, command, timeout=AIRFLOW_STOP_SECONDS)
        return f"Airflow units stopped and disabled on {', '.join(step.hosts)}"

    def start_airflow(self, step: Step, observed: Observed) -> str:
        from facts.airflow import AirflowHealth
        from plinth.status.collect import host_certificate

        for name in step.hosts:
            units = " ".join(f"{u}.service" for u in self._airflow_units(self._host(name)))
            self._run(name, f"systemctl enable --now {units}", timeout=120)
        env = self.live.env
        api_hosts = [self._host(n) for n in step.hosts if Role.AIRFLOW_API in self._host(n).roles]
        deadline = time.monotonic() + AIRFLOW_HEALTH_SECONDS
        problems: list[str] = ["no api-server among the hosts"] if not api_hosts else []
        for host in api_hosts:
            ca = host_certificate(env, host, "airflow-api").ca_path
            while True:
                health = self.live.fact(
                    host.name,
                    AirflowHealth,
                    fqdn=env.fqdn(host),
                    port=env.components.airflow.api_port,
                    ca_path=ca,
                )
                problems = (
                    ["no answer"]
                    if health is None
                    else health.problems(("metadatabase", "scheduler"))
                )
                if not problems or time.monotonic() >= deadline:
                    break
                self.sleep(5)
            if problems:
                raise StepFailed(
                    f"{host.name}'s api-server health after {AIRFLOW_HEALTH_SECONDS} s: "
                    f"{'; '.join(problems)}"
                )
        return f"Airflow units enabled and started on {', '.join(step.hosts)}; scheduler healthy"

    # ---- PostgreSQL ----

    def add_standby_slot(self, step: Step, observed: Observed) -> str:
        other = observed.others(step.site)[0].name
        slot = observed.layout(other).slot
        member = self._running_member(observed, step.site)
        self._patroni_call(member, "PATCH", "/config", {"slots": {slot: {"type": "physical"}}})
        return f"slot {slot} added to {step.site}'s dynamic configuration (through {member.name})"

    def _patronictl(self, host: Host, *args: str) -> str:
        command = f"timeout 170 {PATRONICTL} {' '.join(shlex.quote(a) for a in args)} 2>&1"
        ok, out, err = self.live.run(host.name, command, timeout=180)
        text = _tail(out + err, 2)
        if not ok and not any(already in text for already in ALREADY):
            raise StepFailed(f"{host.name}: patronictl {args[0]}: {_tail(out + err, 4)}")
        return text

    def demote_postgresql(self, step: Step, observed: Observed) -> str:
        assert step.source is not None
        site = observed.site(step.site)
        primary = site.postgresql.writable[0] if site.postgresql.writable else None
        member = self._host(primary.name) if primary else self._running_member(observed, step.site)
        vip = observed.layout(step.source).postgresql_vip
        if vip is None:
            raise StepFailed(f"{step.source} has no PostgreSQL VIP to stream from")
        address, _, port = vip.rpartition(":")
        slot = observed.layout(step.site).slot
        scope = observed.layout(step.site).scope
        said = self._patronictl(
            member, "demote-cluster", scope, "--force", "--host", address, "--port", port,
            "--primary-slot-name", slot,
        )  # fmt: skip
        # The slot this site kept for the target would hold WAL on a standby for nobody:
        # the model's converge never removes a key (config_difference), so it goes here.
        kept = observed.layout(step.source).slot
        if kept in site.postgresql.slots:
            self._patroni_call(member, "PATCH", "/config", {"slots": {kept: None}})
        return f"{scope} follows {step.source} ({address}:{port}, slot {slot}): {said}"

    def promote_postgresql(self, step: Step, observed: Observed) -> str:
        member = self._running_member(observed, step.site)
        scope = observed.layout(step.site).scope
        said = self._patronictl(member, "promote-cluster", scope, "--force")
        return f"{scope} promoted: {said}"

    def verify(self, step: Step, observed: Observed) -> str:
        return ""  # the loop reads until the plan moves on, within the step's bound

    # ---- Redis ----

    def stop_sentinels(self, step: Step, observed: Observed) -> str:
        unit = self.live.env.debian.key_value_store.sentinel_unit
        for name in step.hosts:
            self._run(name, f"systemctl disable --now {unit}")
        return f"{unit} stopped and disabled on {', '.join(step.hosts)}"

    def pause_redis(self, step: Step, observed: Observed) -> str:
        master = self._host(step.hosts[0])
        ms = str(REDIS_PAUSE_SECONDS * 1000)
        self._redis(master, "CLIENT", "PAUSE", ms, "WRITE")
        return f"writes to {master.name} held for {REDIS_PAUSE_SECONDS} s"

    def _offsets(self, reader: Host, addresses: tuple[str, ...]) -> dict[str, int | None]:
        from facts.redis import RedisReplication

        spec = self.live.redis_spec(reader)
        state = self.live.fact(
            reader.name,
            RedisReplication,
            tls=spec.cli("default"),
            addresses=addresses,
            port=spec.settings.port,
        )
        nodes = {n.address: n for n in (state.nodes if state is not None else ())}
        return {a: nodes[a].offset if a in nodes and nodes[a].up else None for a in addresses}

    def promote_redis(self, step: Step, observed: Observed) -> str:
        candidate, *others = (self._host(n) for n in step.hosts)
        source = observed.others(step.site)[0]
        master = source.redis.master
        if master is None:
            raise StepFailed(f"no single Redis master in {source.name} to take over from")
        bound = step.seconds or 30
        deadline = time.monotonic() + bound
        pair = (master.address, str(candidate.address))
        while True:
            offsets = self._offsets(candidate, pair)
            have, want = offsets[pair[1]], offsets[pair[0]]
            if have is not None and want is not None and have >= want:
                break
            if time.monotonic() >= deadline:
                raise StepFailed(
                    step.refusal or f"{candidate.name} did not reach the master's offset"
                )
            self.sleep(0.5)
        port = str(self.live.env.components.redis.port)
        self._redis(candidate, "REPLICAOF", "NO", "ONE")
        self._redis(candidate, "CONFIG", "SET", "replica-priority", "100")
        self._redis(candidate, "CONFIG", "REWRITE")
        for host in others:
            self._redis(host, "REPLICAOF", str(candidate.address), port)
            self._redis(host, "CONFIG", "SET", "replica-priority", "100")
            self._redis(host, "CONFIG", "REWRITE")
        return f"{candidate.name} is master at offset {have} (the paused master's {want})"

    def follow_redis(self, step: Step, observed: Observed) -> str:
        assert step.source is not None
        master = observed.site(step.source).redis.master
        if master is None:
            raise StepFailed(f"no single Redis master in {step.source} to follow")
        port = str(self.live.env.components.redis.port)
        for name in step.hosts:
            host = self._host(name)
            self._redis(host, "REPLICAOF", master.address, port)
            self._redis(host, "CONFIG", "SET", "replica-priority", "0")
            self._redis(host, "CONFIG", "REWRITE")
            self._redis(host, "CLIENT", "UNPAUSE")
        return f"{', '.join(step.hosts)} replicate {observed.host_of(master)}"

    def start_sentinels(self, step: Step, observed: Observed) -> str:
        from operations.redis.bootstrap import upload_command
        from operations.redis.settings import read_passwords, render_sentinel_conf
        from plinth.context import HostContext

        master = observed.site(step.site).redis.master
        if master is None:
            raise StepFailed(f"no single Redis master in {step.site} for its Sentinels")
        env = self.live.env
        for name in step.hosts:
            host = self._host(name)
            spec = self.live.redis_spec(host, active=step.site)
            store = spec.store
            context = HostContext(
                env, self.live.environment_file, host, env.datacenters_by_name[host.datacenter]
            )
            text = render_sentinel_conf(
                spec, read_passwords(context), (master.address, spec.settings.port)
            )
            candidate = f"{store.sentinel_config}.plinth-candidate"
            self._put(name, text, candidate)
            self._run(
                name,
                # a running Sentinel owns its file: it is not rewritten under it
                f"systemctl is-active --quiet {store.sentinel_unit} || "
                f"{{ {upload_command(store, candidate, store.sentinel_config, '640')}; }}; "
                f"rm -f {shlex.quote(candidate)}; systemctl enable --now {store.sentinel_unit}",
            )
        for name in step.hosts:
            host = self._host(name)
            spec = self.live.redis_spec(host, active=step.site)
            probe = spec.redis_cli(
                spec.address, "SENTINEL", "CKQUORUM", spec.master_name, user="sentinel"
            )
            self._run(
                name,
                f"for i in $(seq {SENTINEL_QUORUM_SECONDS}); do {probe} 2>/dev/null | "
                f"grep -q '^OK' && exit 0; sleep 1; done; echo 'no quorum' >&2; exit 1",
                timeout=SENTINEL_QUORUM_SECONDS + 30,
            )
        return f"Sentinels of {step.site} monitor {observed.host_of(master)}, quorum OK"

    def _put(self, name: str, text: str, path: str) -> None:
        """Upload ``text`` (it may hold a password: never on a command line or a log)."""
        host = self.live.pyinfra_host(name)
        if host is None:
            raise StepFailed(f"{name} does not answer SSH")
        arguments: dict[str, Any] = {"_sudo": True} if host.data.get("_sudo") else {}
        if not host.put_file(
            StringIO(text), path, print_output=False, print_input=False, **arguments
        ):
            raise StepFailed(f"{name}: could not upload {path}")

    # ---- RabbitMQ ----

    def sync_rabbitmq(self, step: Step, observed: Observed) -> str:
        from plinth.cli.rabbitmq import import_plan, read_cluster
        from plinth.rabbitmq_sync import plan_sync

        assert step.source is not None
        env = self.live.env
        stacks = {s.datacenter: s for s in self.live.stacks}
        try:
            _, have = read_cluster(
                self.live.state(step.source),
                stacks[step.source],
                env.hosts_with(Role.RABBITMQ, step.source),
            )
            through, lacks = read_cluster(
                self.live.state(step.site),
                stacks[step.site],
                env.hosts_with(Role.RABBITMQ, step.site),
            )
            plan = plan_sync(have, lacks)
            if plan.created:
                import_plan(self.live.state(step.site), through, plan)
        except Exception as error:
            raise StepFailed(str(error)) from None
        return f"{plan.created} RabbitMQ object(s) of {step.source} created in {step.site}"

    def purge_rabbitmq(self, step: Step, observed: Observed) -> str:
        host = self.live.rabbitmq_host(step.site)
        if host is None:
            raise StepFailed(f"no RabbitMQ node of {step.site} answers")
        self._run(
            host.name,
            "for v in $(rabbitmqctl -q list_vhosts --no-table-headers name); do "
            'for q in $(rabbitmqctl -q list_queues -p "$v" --no-table-headers name); do '
            'rabbitmqctl -q purge_queue -p "$v" "$q" || exit 1; done; done',
            timeout=300,
        )
        return f"every queue of {step.site}'s RabbitMQ purged"

    # ---- the model and the files ----

    def write_model(self, step: Step, observed: Observed) -> str:
        path = self.live.environment_file
        changed = write_active_datacenter(path, step.site)
        self.live.reload()
        if not changed:
            return f"{path} already names {step.site}"
        return f"{path}: active_datacenter: {step.site} (commit it)"

    def converge(self, step: Step, observed: Observed) -> str:
        stack = f"{self.live.env.name}-{step.site}"
        # No preview pass: it decides nothing (every gate is decided while applying) and
        # costs a pass over every host; what changed is listed after the run.
        command = [sys.executable, "-m", "plinth", "up", stack, "--yes", "--skip-preview"]
        self.say(f"   running: plinth up {stack} --yes --skip-preview")
        environ = dict(os.environ, PLINTH_ROOT=str(project_root()))
        try:
            done = subprocess.run(
                command,
                cwd=project_root(),
                env=environ,
                capture_output=True,
                text=True,
                timeout=CONVERGE_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"plinth up {stack} ran longer than {CONVERGE_SECONDS} s") from None
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise StepFailed(f"plinth up {stack} failed:\n" + "\n".join(tail))
        applied = [line for line in done.stdout.splitlines() if line.startswith("stack ")]
        return "; ".join(applied) or f"plinth up {stack}: done"
