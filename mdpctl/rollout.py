"""Rolling reload: new worker code, one process (or a small batch) at a time.

For each host the target code version is what its ``mdp-version`` probe computes: the
version a worker started now on that host would report.  Each step stops a worker
gracefully (SIGTERM: it finishes the request in hand and leaves every broker), starts it
again, and waits until the new process is registered with every broker and reports the
target version.  The first step that fails ends the rollout; the workers not yet
restarted go on serving the old code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mdpctl import probe
from mdpctl.cluster import Cluster
from mdpctl.errors import CtlError, ProcessFailed, RolloutStopped, Unreachable, WaitTimeout
from mdpctl.fleet import Fleet, HostState, Slot
from mdpctl.hostconf import VERSION_PROBE_PROGRAM
from mdpctl.readiness import SlotKey, find_slot, wait_serving, wait_stopped, wait_until
from mdpctl.rpc import Supervisor

log = logging.getLogger(__name__)

PROBE_NAME = f"{VERSION_PROBE_PROGRAM}:{VERSION_PROBE_PROGRAM}"
PROBE_TIMEOUT_S = 30.0


def probe_version(cluster: Cluster, host: HostState) -> str:
    """Run the host's version probe through its supervisord and return the version."""
    if not host.has_probe:
        raise CtlError(
            f"host {host.name} has no {VERSION_PROBE_PROGRAM} program in its supervisord "
            "configuration; render it with `mdpctl config`, or pass --version"
        )
    sup = Supervisor(host.host.supervisor, cluster.rpc_timeout_s)
    sup.clear_log(PROBE_NAME)
    sup.start(PROBE_NAME)
    output: list[str] = []

    def check() -> str | None:
        state = sup.process(PROBE_NAME).state
        if state in ("STARTING", "RUNNING"):
            return f"probe is {state}"
        output[:] = [sup.log_tail(PROBE_NAME, 4096)]
        return None if output[0] or state != "EXITED" else "probe output not written yet"

    wait_until(check, PROBE_TIMEOUT_S, f"the version probe on {host.name}")
    result = probe.parse(output[0])
    if result is None or not isinstance(result.get("version"), str):
        text = output[0].strip().splitlines()
        raise CtlError(
            f"the version probe on {host.name} failed: {text[-1] if text else 'no output'}"
        )
    return str(result["version"])


@dataclass
class Plan:
    """What a rollout will do."""

    targets: dict[str, str] = field(default_factory=dict)
    """host -> the code version its workers must end up reporting."""
    steps: list[Slot] = field(default_factory=list)
    current: dict[SlotKey, str] = field(default_factory=dict)
    """slot -> the version it reports now ("?" when no broker knows it)."""
    up_to_date: list[Slot] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    """service -> worker processes up on the chosen hosts when the plan was made."""


def make_plan(
    cluster: Cluster,
    fleet: Fleet,
    service: str | None,
    version: str | None = None,
    force: bool = False,
) -> Plan:
    """Choose the slots to restart: failed ones first, then running ones not at target."""
    plan = Plan()
    hostnames = fleet.hostnames()
    for host in fleet.hosts:
        slots = [s for s in host.slots if service in (None, s.service)]
        candidates = [s for s in slots if s.process.is_up or s.process.state == "FATAL"]
        if not candidates:
            continue
        plan.targets[host.name] = version or probe_version(cluster, host)
        failed = [s for s in candidates if s.process.state == "FATAL"]
        running = [s for s in candidates if s.process.state != "FATAL"]
        for slot in running:
            plan.running[slot.service] = plan.running.get(slot.service, 0) + 1
        for slot in failed + running:
            versions = {e.version for e in fleet.registrations(slot, hostnames).values() if e}
            now = versions.pop() if len(versions) == 1 else "?"
            plan.current[SlotKey.of(slot)] = now
            if not force and now == plan.targets[host.name] and slot.process.state == "RUNNING":
                plan.up_to_date.append(slot)
            else:
                plan.steps.append(slot)
    return plan


def check_preconditions(fleet: Fleet) -> None:
    """Refuse to start a rollout that could not be checked or would start blind."""
    for host in fleet.hosts:
        if host.error:
            raise Unreachable(f"{host.error}; nothing was restarted")
    for view in fleet.brokers:
        if view.status is None:
            raise Unreachable(
                f"broker {view.endpoint}: {view.error}; a new worker could not be seen "
                "registering with every broker, so nothing was restarted"
            )


def batches(steps: list[Slot], size: int, running: dict[str, int]) -> list[list[Slot]]:
    """Split the steps into batches of at most ``size`` on one host each.

    A batch never holds every running worker of a service (``running``: service -> count),
    so that each service keeps at least one worker serving while the batch restarts.
    """
    result: list[list[Slot]] = []
    for slot in steps:
        last = result[-1] if result else []
        cap = max(1, running.get(slot.service, 1) - 1)
        fits = (
            last
            and len(last) < size
            and last[0].host == slot.host
            and sum(s.service == slot.service for s in last) < cap
        )
        if fits:
            last.append(slot)
        else:
            result.append([slot])
    return result


def run(
    cluster: Cluster,
    plan: Plan,
    batch_size: int,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Carry out ``plan``; raise RolloutStopped at the first batch that fails."""
    total = len(plan.steps)
    done = 0
    for batch in batches(plan.steps, batch_size, plan.running):
        host = batch[0].host
        target = plan.targets[host]
        keys = [SlotKey.of(s) for s in batch]
        started = time.monotonic()
        try:
            fleet = restart_batch(cluster, batch, keys, target, timeout_s)
        except (ProcessFailed, WaitTimeout) as exc:
            left = total - done - len(batch)
            raise RolloutStopped(
                f"rollout stopped at {', '.join(map(str, keys))}: {exc} "
                f"({done} of {total} restarted; {left} not touched and still serving)"
            ) from exc
        done += len(batch)
        for key, slot in zip(keys, batch, strict=True):
            new = find_slot(fleet, key)
            new_pid = new.process.pid if new else 0
            progress(
                f"[{done}/{total}] {key}: pid {slot.process.pid or '-'} -> {new_pid}, "
                f"{plan.current.get(key, '?')} -> {target} "
                f"({time.monotonic() - started:.1f} s)"
            )


def restart_batch(
    cluster: Cluster, batch: list[Slot], keys: list[SlotKey], target: str, timeout_s: float
) -> Fleet:
    """Stop the batch gracefully, start it again, wait until it serves at ``target``."""
    sup = Supervisor(cluster.host(batch[0].host).supervisor, cluster.rpc_timeout_s)
    for slot in batch:
        sup.stop(slot.fullname)
    stop_timeout = max(s.stopwaitsecs for s in batch) + 5.0
    wait_stopped(cluster, keys, stop_timeout)
    for slot in batch:
        sup.start(slot.fullname)
    return wait_serving(cluster, keys, timeout_s, version=target)
