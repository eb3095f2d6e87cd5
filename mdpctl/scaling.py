"""Scaling a service on a host by starting and stopping individual worker slots.

supervisord restarts a whole group when its ``numprocs`` changes, so the configuration
declares a fixed set of slots per service (see :mod:`mdpctl.hostconf`) and scaling only
starts stopped slots (lowest number first) or stops running ones (highest number first,
gracefully).  The other workers are never touched.  Each choice is first recorded with
the host's scale keeper (:mod:`mdpctl.keeper`), which applies it again whenever that
supervisord starts; a host without a keeper keeps the change until supervisord restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mdpctl.cluster import Cluster
from mdpctl.errors import CtlError, ProcessFailed, Unreachable, UsageError
from mdpctl.fleet import Fleet, HostState, Slot, read_host
from mdpctl.readiness import SlotKey, wait_serving, wait_stopped, wait_until
from mdpctl.rpc import Supervisor
from mdpctl.scalestate import KEEPER_NAME, KEEPER_PROGRAM, choice_line

log = logging.getLogger(__name__)


@dataclass
class HostChange:
    host: str
    before: int
    start: list[Slot] = field(default_factory=list)
    stop: list[Slot] = field(default_factory=list)

    @property
    def after(self) -> int:
        return self.before + len(self.start) - len(self.stop)


GROW_HOST = "add spare slots to its configuration (mdpctl config ... --spare N)"


def plan_scale(fleet: Fleet, service: str, count: int, grow: str = GROW_HOST) -> list[HostChange]:
    """What to start and stop on each host so that ``count`` workers of ``service`` run
    (``grow``: how to get more slots, for the refusal of more than a host has)."""
    if count < 0:
        raise UsageError("the number of workers cannot be negative")
    for host in fleet.hosts:
        if host.error:
            raise Unreachable(f"{host.error}; nothing was changed")
    hosts = [h for h in fleet.hosts if h.service_slots(service)]
    if not hosts:
        known = sorted({s for h in fleet.hosts for s in h.services()})
        raise UsageError(
            f"no host has worker slots for service {service!r} "
            f"(services: {', '.join(known) or 'none'})"
        )
    changes = []
    for host in hosts:
        slots = host.service_slots(service)
        if count > len(slots):
            raise UsageError(
                f"{host.name} has {len(slots)} slots for {service}, fewer than {count}; {grow}"
            )
        up = [s for s in slots if s.process.is_up]
        down = [s for s in slots if not s.process.is_up]
        change = HostChange(host.name, len(up))
        if count > len(up):
            change.start = down[: count - len(up)]
        elif count < len(up):
            change.stop = list(reversed(up))[: len(up) - count]
        changes.append(change)
    return changes


def apply_scale(
    cluster: Cluster,
    changes: list[HostChange],
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Start new workers and wait for them to serve, then stop the surplus gracefully."""
    starting = [s for c in changes for s in c.start]
    stopping = [s for c in changes for s in c.stop]
    for slot in starting:
        Supervisor(cluster.host(slot.host).supervisor, cluster.rpc_timeout_s).start(slot.fullname)
    if starting:
        try:
            wait_serving(cluster, [SlotKey.of(s) for s in starting], timeout_s)
        except ProcessFailed as exc:
            raise CtlError(f"scaling up failed: {exc}") from exc
    for slot in stopping:
        Supervisor(cluster.host(slot.host).supervisor, cluster.rpc_timeout_s).stop(slot.fullname)
    if stopping:
        stop_timeout = max(s.stopwaitsecs for s in stopping) + 5.0
        wait_stopped(cluster, [SlotKey.of(s) for s in stopping], stop_timeout)
    for change in changes:
        names = ", ".join(s.process.name for s in change.start or change.stop)
        verb = "started" if change.start else "stopped" if change.stop else "unchanged"
        detail = f" ({verb} {names})" if names else " (unchanged)"
        progress(f"{change.host}: {change.before} -> {change.after} workers{detail}")


def record_choice(
    cluster: Cluster, host: HostState, service: str, count: int, timeout_s: float = 10.0
) -> str | None:
    """Record ``service`` = ``count`` with the host's keeper; a warning if it has none.

    Returns once the keeper has written the choice to its state file.
    """
    if host.keeper is None:
        return (
            f"{host.name} has no {KEEPER_PROGRAM} program, so this scale lasts only until its "
            "supervisord restarts (render its configuration again with `mdpctl config`)"
        )
    if host.keeper.state != "RUNNING":
        raise CtlError(
            f"{host.name}: {KEEPER_PROGRAM} is {host.keeper.state}, so the choice could not be "
            "recorded; nothing was changed"
        )
    before = host.keeper_state.seq if host.keeper_state else 0
    sup = Supervisor(host.host.supervisor, cluster.rpc_timeout_s)
    sup.send_stdin(KEEPER_NAME, choice_line(service, count))

    def recorded() -> str | None:
        said = read_host(host.host, cluster.rpc_timeout_s).keeper_state
        if said is None or said.seq <= before:
            return f"{KEEPER_PROGRAM} on {host.name} has not answered"
        if said.chosen.get(service) != count:
            raise CtlError(f"{host.name}: {KEEPER_PROGRAM} did not record the choice: "
                           f"{said.error or 'no reason given'}; nothing was changed")
        return None

    wait_until(recorded, timeout_s, f"{KEEPER_PROGRAM} on {host.name} to record the choice")
    return None
