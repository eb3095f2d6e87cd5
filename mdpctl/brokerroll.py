"""Rolling broker upgrade: new broker code, one broker at a time, while the others serve.

Each broker of the cluster is found among the supervisord processes of the cluster's
hosts by the pid it reports in ``mmi.status``.  One step stops it (SIGTERM), starts it
again and waits until the new process

1. answers ``mmi.status`` from a new pid, with the target code version when one is known
   (the host's ``mdp-version`` probe, or ``--version``);
2. has every running worker of the fleet registered with it, ready to serve; and
3. serves clients: through that broker alone, ``mmi.service`` answers 200 for every
   service that has running workers, and an ``echo`` request comes back unchanged.

Only then is the next broker touched.  A broker that exits at start (BACKOFF, EXITED,
FATAL) or does not get there in time stops the upgrade with RolloutStopped; the brokers
not yet restarted were never touched and go on serving.  Clients with every broker in
their list fail over to the others while one restarts (``mdp.client``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mdp.errors import MDPError
from mdp.status import BrokerStatus, BrokerView
from mdpctl.brokers import fetch_status
from mdpctl.cluster import Cluster
from mdpctl.errors import CtlError, ProcessFailed, RolloutStopped, Unreachable, WaitTimeout
from mdpctl.fleet import Fleet, snapshot
from mdpctl.readiness import process_failure, wait_until
from mdpctl.rollout import probe_version
from mdpctl.rpc import ProcessInfo, Supervisor

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"BACKOFF", "EXITED", "FATAL", "STOPPED", "UNKNOWN"})
PROBE_SERVICE = "echo"


@dataclass(frozen=True)
class BrokerSlot:
    """One broker of the cluster and the supervisord process that runs it."""

    endpoint: str
    host: str
    process: ProcessInfo
    version: str

    @property
    def label(self) -> str:
        return f"{self.host}/{self.process.fullname} ({self.endpoint})"


@dataclass
class BrokerPlan:
    targets: dict[str, str | None] = field(default_factory=dict)
    """host -> the version its brokers must report (None: not known in advance)."""
    steps: list[BrokerSlot] = field(default_factory=list)
    up_to_date: list[BrokerSlot] = field(default_factory=list)


def check_preconditions(fleet: Fleet) -> None:
    """Refuse to start while a host cannot be read or any broker is down."""
    for host in fleet.hosts:
        if host.error:
            raise Unreachable(f"{host.error}; no broker was restarted")
    down = [v for v in fleet.brokers if v.status is None]
    if down:
        names = "; ".join(f"{v.endpoint}: {v.error}" for v in down)
        raise Unreachable(
            f"broker {names}; a rolling upgrade needs every broker up before it restarts "
            "one (clients would have nowhere to go), so no broker was restarted"
        )


def locate(fleet: Fleet) -> list[BrokerSlot]:
    """Each broker (in cluster order) with the supervisord process whose pid it reports."""
    found: list[BrokerSlot] = []
    for view in fleet.brokers:
        status = view.status
        if status is None:
            raise Unreachable(f"broker {view.endpoint} does not answer: {view.error}")
        matches = [
            (host.name, proc)
            for host in fleet.hosts
            for proc in host.broker_processes
            if proc.pid == status.broker.pid
        ]
        if len(matches) > 1:  # the same pid on two hosts: the host name the broker reports
            matches = [m for m in matches if m[0] == status.broker.host] or matches
        if len(matches) != 1:
            raise CtlError(
                f"broker {view.endpoint} (pid {status.broker.pid} on {status.broker.host}) is not "
                "run by one of the cluster's supervisords, so mdpctl cannot restart it; list its "
                "host in the cluster file"
            )
        host, proc = matches[0]
        found.append(BrokerSlot(view.endpoint, host, proc, status.broker.version))
    return found


def make_plan(
    cluster: Cluster, fleet: Fleet, version: str | None, force: bool
) -> BrokerPlan:
    plan = BrokerPlan()
    for slot in locate(fleet):
        if slot.host not in plan.targets:
            host = next(h for h in fleet.hosts if h.name == slot.host)
            plan.targets[slot.host] = version or (
                probe_version(cluster, host) if host.has_probe else None
            )
        target = plan.targets[slot.host]
        if not force and target is not None and slot.version == target:
            plan.up_to_date.append(slot)
        else:
            plan.steps.append(slot)
    return plan


def failure_reason(sup: Supervisor, slot: BrokerSlot, proc: ProcessInfo) -> str:
    return process_failure("the new process", proc, sup)


def serving_gaps(cluster: Cluster, fleet: Fleet, view: BrokerView) -> str | None:
    """Running workers of the fleet that are not (yet) ready to serve at ``view``'s broker."""
    one = Fleet(fleet.hosts, (view,))
    names = fleet.hostnames() or one.hostnames()
    missing = []
    for slot in fleet.slots():
        if slot.process.state != "RUNNING":
            continue
        entry = one.registrations(slot, names).get(view.endpoint)
        if entry is None or not entry.serving:
            missing.append(slot.label)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"workers not registered with {view.endpoint} yet: {', '.join(missing[:3])}{more}"
    return None


def probe_clients(cluster: Cluster, endpoint: str, services: list[str]) -> str | None:
    """Serve a client through ``endpoint`` alone: MMI for every service, and an echo."""
    from mdp.client import MDPClient

    try:
        with MDPClient([endpoint], timeout=2.0, retries=0, curve=cluster.curve) as client:
            for service in services:
                answer = client.mmi_service(service)
                if answer != "200":
                    return f"{endpoint} answers mmi.service {service!r} with {answer}"
            if PROBE_SERVICE in services:
                probe = {"mdpctl": "broker upgrade probe", "t": time.time()}
                if client.send(PROBE_SERVICE, probe) != probe:
                    return f"{endpoint} returned a wrong echo"
    except MDPError as exc:
        return f"a client probe through {endpoint} failed: {exc}"
    return None


def restart_one(
    cluster: Cluster, slot: BrokerSlot, target: str | None, timeout_s: float
) -> BrokerStatus:
    """Restart one broker and wait until it serves every worker and a client."""
    sup = Supervisor(cluster.host(slot.host).supervisor, cluster.rpc_timeout_s)
    name = slot.process.fullname
    sup.stop(name)

    def stopped() -> str | None:
        state = sup.process(name).state
        return None if state in ("STOPPED", "EXITED", "FATAL") else f"{name} is {state}"

    wait_until(stopped, 30.0, f"{slot.label} to stop")
    sup.start(name)
    latest: list[BrokerStatus] = []

    def ready() -> str | None:
        proc = sup.process(name)
        if proc.state in FAILED_STATES:
            raise ProcessFailed(failure_reason(sup, slot, proc))
        if proc.state != "RUNNING":
            return f"{name} is {proc.state}"
        view = fetch_status(slot.endpoint, 1.0, cluster.curve)
        if view.status is None:
            return f"{slot.endpoint}: {view.error}"
        if view.status.broker.pid == slot.process.pid:
            return f"{slot.endpoint} still answers from the old pid {slot.process.pid}"
        if target is not None and view.status.broker.version != target:
            raise ProcessFailed(
                f"{slot.label} came up with code version {view.status.broker.version}, not "
                f"{target}: the code on {slot.host} changed during the upgrade"
            )
        fleet = snapshot(cluster, with_brokers=False)
        gaps = serving_gaps(cluster, fleet, view)
        if gaps:
            return gaps
        services = sorted({s.service for s in fleet.slots() if s.process.state == "RUNNING"})
        problem = probe_clients(cluster, slot.endpoint, services)
        if problem:
            return problem
        latest[:] = [view.status]
        return None

    wait_until(ready, timeout_s, f"{slot.label} to serve again", interval_s=0.2)
    return latest[0]


def run(
    cluster: Cluster,
    plan: BrokerPlan,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Carry out ``plan``; raise RolloutStopped at the first broker that does not serve."""
    total = len(plan.steps)
    for done, slot in enumerate(plan.steps):
        started = time.monotonic()
        target = plan.targets[slot.host]
        try:
            status = restart_one(cluster, slot, target, timeout_s)
        except (ProcessFailed, WaitTimeout) as exc:
            untouched = [s.endpoint for s in plan.steps[done + 1 :]] + [
                s.endpoint for s in plan.up_to_date
            ]
            left = ", ".join(untouched) or "none"
            stopped = "; it was stopped, not left to restart in a loop" if _stop_if_crashing(
                cluster, slot) else ""
            raise RolloutStopped(
                f"broker upgrade stopped at {slot.label}: {exc}{stopped} ({done} of {total} "
                f"restarted; brokers not touched and still serving: {left})"
            ) from exc
        progress(
            f"[{done + 1}/{total}] {slot.label}: pid {slot.process.pid} -> {status.broker.pid}, "
            f"{slot.version} -> {status.broker.version} ({time.monotonic() - started:.1f} s)"
        )


def _stop_if_crashing(cluster: Cluster, slot: BrokerSlot) -> bool:
    """A broker that keeps exiting is stopped, so supervisord does not restart it in a loop."""
    sup = Supervisor(cluster.host(slot.host).supervisor, cluster.rpc_timeout_s)
    try:
        if sup.process(slot.process.fullname).state in ("BACKOFF", "STARTING"):
            sup.stop(slot.process.fullname)
            return True
    except CtlError as exc:
        log.warning("could not stop %s: %s", slot.label, exc)
    return False
