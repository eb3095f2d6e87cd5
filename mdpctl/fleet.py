"""The fleet as mdpctl sees it: every host's supervisord processes and every broker's view.

A worker *slot* is one supervisord process whose command runs ``mdp.worker``; its
service is the ``--service`` argument.  A slot is matched with the brokers' records of
it by pid, and by host name where pids of two hosts could collide.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from mdp.status import BrokerView, WorkerStatus
from mdpctl.brokers import fetch_all
from mdpctl.cluster import Cluster, Host
from mdpctl.errors import CtlError
from mdpctl.hostconf import VERSION_PROBE_PROGRAM
from mdpctl.rpc import ProcessConfig, ProcessInfo, Supervisor
from mdpctl.scalestate import KEEPER_NAME, KEEPER_PROGRAM, KeeperState, last_state

log = logging.getLogger(__name__)

_SLOT_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Role:
    """What a supervisord program is, read from its command line."""

    kind: str  # "worker", "broker" or "other"
    service: str | None = None
    binds: tuple[str, ...] = ()


def parse_command(command: str) -> Role:
    """Tell workers and brokers apart by the module or script they run."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return Role("other")
    runs = ""
    if "-m" in argv[:-1]:
        runs = argv[argv.index("-m") + 1]
    elif argv:
        runs = argv[0].rsplit("/", 1)[-1]
    if runs in ("mdp.worker", "mdp-worker"):
        return Role("worker", service=_option(argv, "--service"))
    if runs in ("mdp.broker", "mdp-broker"):
        binds = tuple(v for v in _options(argv, "--bind"))
        return Role("broker", binds=binds)
    return Role("other")


def _options(argv: Sequence[str], flag: str) -> Iterable[str]:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            yield argv[i + 1]
        elif arg.startswith(flag + "="):
            yield arg[len(flag) + 1 :]


def _option(argv: Sequence[str], flag: str) -> str | None:
    return next(iter(_options(argv, flag)), None)


@dataclass(frozen=True)
class Slot:
    """One worker process slot on one host."""

    host: str
    service: str
    number: int
    autostart: bool
    startsecs: int
    stopwaitsecs: int
    process: ProcessInfo

    @property
    def fullname(self) -> str:
        return self.process.fullname

    @property
    def label(self) -> str:
        return f"{self.host}/{self.fullname}"


@dataclass(frozen=True)
class HostState:
    """One host's supervisord, or why it could not be read."""

    host: Host
    error: str | None = None
    supervisord_pid: int = 0
    processes: tuple[ProcessInfo, ...] = ()
    slots: tuple[Slot, ...] = ()
    broker_processes: tuple[ProcessInfo, ...] = ()
    has_probe: bool = False
    keeper: ProcessInfo | None = None
    keeper_state: KeeperState | None = None
    """What the running scale keeper last said (None: no keeper, or it has said nothing)."""

    @property
    def name(self) -> str:
        return self.host.name

    def chosen(self, service: str) -> int | None:
        """The chosen number of workers of ``service`` here (None: not known).

        A service never scaled runs as configured: its autostart slots.
        """
        if self.keeper_state is None or not self.service_slots(service):
            return None
        default = sum(s.autostart for s in self.service_slots(service))
        return self.keeper_state.chosen.get(service, default)

    def service_slots(self, service: str) -> list[Slot]:
        return sorted((s for s in self.slots if s.service == service), key=lambda s: s.number)

    def services(self) -> list[str]:
        return sorted({s.service for s in self.slots})


def read_host(host: Host, timeout_s: float) -> HostState:
    """Read one supervisord's processes; an unreachable one gives a state with an error."""
    sup = Supervisor(host.supervisor, timeout_s)
    try:
        pid = sup.pid()
        configs = {c.fullname: c for c in sup.configs()}
        processes = tuple(sup.processes())
        state = build_host_state(host, pid, configs, processes)
        if state.keeper is not None and state.keeper.state == "RUNNING":
            said = last_state(sup.log_tail(KEEPER_NAME, 8192))
            if said is not None and said.pid == state.keeper.pid:
                state = replace(state, keeper_state=said)
    except CtlError as exc:
        return HostState(host, error=str(exc))
    return state


def build_host_state(
    host: Host, pid: int, configs: dict[str, ProcessConfig], processes: tuple[ProcessInfo, ...]
) -> HostState:
    slots: list[Slot] = []
    brokers: list[ProcessInfo] = []
    for proc in processes:
        config = configs.get(proc.fullname)
        if config is None:
            continue
        role = parse_command(config.command)
        if role.kind == "broker":
            brokers.append(proc)
        elif role.kind == "worker" and role.service:
            match = _SLOT_NUMBER.search(proc.name)
            number = int(match.group(1)) if match else 0
            slots.append(
                Slot(
                    host.name,
                    role.service,
                    number,
                    config.autostart,
                    config.startsecs,
                    config.stopwaitsecs,
                    proc,
                )
            )
    slots.sort(key=lambda s: (s.service, s.number, s.fullname))
    has_probe = any(p.name == VERSION_PROBE_PROGRAM for p in processes)
    keeper = next((p for p in processes if p.name == KEEPER_PROGRAM), None)
    return HostState(host, None, pid, processes, tuple(slots), tuple(brokers), has_probe, keeper)


def read_hosts(hosts: Sequence[Host], timeout_s: float) -> list[HostState]:
    if len(hosts) == 1:
        return [read_host(hosts[0], timeout_s)]
    with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
        return list(pool.map(lambda h: read_host(h, timeout_s), hosts))


@dataclass(frozen=True)
class Fleet:
    """A snapshot of hosts and brokers taken together."""

    hosts: tuple[HostState, ...]
    brokers: tuple[BrokerView, ...]

    def slots(self, service: str | None = None) -> list[Slot]:
        return [s for h in self.hosts for s in h.slots if service in (None, s.service)]

    def hostnames(self) -> dict[str, str]:
        """Each cluster host's own host name, as its workers report it to the brokers."""
        votes: dict[str, Counter[str]] = {}
        for state in self.hosts:
            pids = {s.process.pid for s in state.slots if s.process.pid}
            counter: Counter[str] = Counter()
            for view in self.brokers:
                if view.status is None:
                    continue
                for entry in view.status.services.values():
                    counter.update(w.host for w in entry.workers if w.pid in pids)
            if counter:
                votes[state.name] = counter
        return {name: counter.most_common(1)[0][0] for name, counter in votes.items()}

    def registrations(
        self, slot: Slot, hostnames: dict[str, str] | None = None
    ) -> dict[str, WorkerStatus | None]:
        """For each broker endpoint, its record of the worker in ``slot`` (None: none)."""
        names = self.hostnames() if hostnames is None else hostnames
        found: dict[str, WorkerStatus | None] = {}
        for view in self.brokers:
            entry = None
            if view.status is not None and slot.process.pid:
                entry = view.status.find(slot.service, slot.process.pid, names.get(slot.host))
            found[view.endpoint] = entry
        return found

    def unmatched(self) -> list[tuple[str, str, WorkerStatus]]:
        """(broker, service, worker) records that match no supervisord slot."""
        names = self.hostnames()
        known = {(names.get(s.host), s.service, s.process.pid) for s in self.slots()}
        known_any = {(s.service, s.process.pid) for s in self.slots()}
        result = []
        for view in self.brokers:
            if view.status is None:
                continue
            for service, entry in sorted(view.status.services.items()):
                for worker in entry.workers:
                    key = (worker.host, service, worker.pid)
                    if key not in known and (service, worker.pid) not in known_any:
                        result.append((view.endpoint, service, worker))
        return result


def snapshot(
    cluster: Cluster,
    hosts: Sequence[Host] | None = None,
    timeout_s: float = 2.0,
    with_brokers: bool = True,
) -> Fleet:
    """Read the chosen hosts (default all) and every broker, in parallel."""
    chosen = cluster.hosts if hosts is None else tuple(hosts)
    if not with_brokers:
        return Fleet(tuple(read_hosts(chosen, cluster.rpc_timeout_s)), ())
    with ThreadPoolExecutor(max_workers=2) as pool:
        host_future = pool.submit(read_hosts, chosen, cluster.rpc_timeout_s)
        broker_future = pool.submit(fetch_all, cluster.brokers, timeout_s, cluster.curve)
        return Fleet(tuple(host_future.result()), tuple(broker_future.result()))
