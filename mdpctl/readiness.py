"""Waiting for the fleet to reach a state: poll a check against a deadline, never sleep blind.

A check returns ``None`` when the wait is over, or a short text saying what is still
missing (it ends up in the timeout message); it raises to end the wait early.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mdpctl.cluster import Cluster
from mdpctl.errors import CtlError, ProcessFailed, WaitTimeout
from mdpctl.fleet import Fleet, Slot, snapshot
from mdpctl.rpc import ProcessInfo, Supervisor

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1


def wait_until(
    check: Callable[[], str | None],
    timeout_s: float,
    what: str,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Call ``check`` until it returns None; raise WaitTimeout after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = check()
        if missing is None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"gave up after {timeout_s:g} s waiting for {what}: {missing}")
        log.debug("waiting for %s: %s", what, missing)
        time.sleep(min(interval_s, remaining))


@dataclass(frozen=True)
class SlotKey:
    """A slot named independently of its current pid."""

    host: str
    fullname: str

    @classmethod
    def of(cls, slot: Slot) -> SlotKey:
        return cls(slot.host, slot.fullname)

    def __str__(self) -> str:
        return f"{self.host}/{self.fullname}"


def find_slot(fleet: Fleet, key: SlotKey) -> Slot | None:
    for slot in fleet.slots():
        if slot.host == key.host and slot.fullname == key.fullname:
            return slot
    return None


def failure_reason(cluster: Cluster, slot: Slot) -> str:
    """Why a slot's process failed, with the tail of its log."""
    sup = Supervisor(cluster.host(slot.host).supervisor, cluster.rpc_timeout_s)
    return process_failure(slot.label, slot.process, sup)


def process_failure(label: str, proc: ProcessInfo, sup: Supervisor, extra: str = "") -> str:
    """One line: ``label`` is in which state, why (spawn error or exit status), ``extra``,
    and the last distinct lines of its log (one read, none if supervisord cannot give it)."""
    reason = f"{label} is {proc.state}"
    if proc.spawnerr:
        reason += f" ({proc.spawnerr})"
    elif proc.state in ("FATAL", "EXITED", "BACKOFF"):
        reason += f" (last exit status {proc.exitstatus})"
    reason += extra
    try:
        tail = sup.log_tail(proc.fullname, LOG_TAIL_BYTES)
    except CtlError:
        tail = ""
    last = last_distinct_lines(tail, LOG_TAIL_LINES)
    if last:
        reason += "; its log ends: " + " | ".join(last)
    return reason


LOG_TAIL_BYTES = 2048
LOG_TAIL_LINES = 3
_LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.,]+\s+")


def last_distinct_lines(text: str, count: int) -> list[str]:
    """The last ``count`` log lines, each once (a crash loop repeats itself)."""
    seen: set[str] = set()
    picked: list[str] = []
    for line in reversed(text.splitlines()):
        body = _LOG_STAMP.sub("", line.strip())
        if body and body not in seen:
            seen.add(body)
            picked.append(body)
        if len(picked) == count:
            break
    return picked[::-1]


def slot_gaps(
    cluster: Cluster,
    fleet: Fleet,
    keys: Sequence[SlotKey],
    version: str | None = None,
) -> str | None:
    """What keeps these slots from serving at every broker (with ``version``), or None.

    Raises ProcessFailed when a slot's process has failed for good (FATAL, or stopped by
    someone else), or registered with another code version than ``version``.
    """
    gaps: list[str] = []
    hostnames = fleet.hostnames()
    for key in keys:
        slot = find_slot(fleet, key)
        if slot is None:
            host_error = next((h.error for h in fleet.hosts if h.name == key.host), None)
            gaps.append(host_error or f"{key} is not in supervisord's configuration")
            continue
        state = slot.process.state
        if state in ("FATAL", "STOPPED", "UNKNOWN"):
            raise ProcessFailed(failure_reason(cluster, slot))
        if state != "RUNNING":
            gaps.append(f"{key} is {state}")
            continue
        for endpoint, entry in fleet.registrations(slot, hostnames).items():
            view = next(v for v in fleet.brokers if v.endpoint == endpoint)
            if view.status is None:
                gaps.append(f"broker {endpoint}: {view.error}")
            elif entry is None:
                gaps.append(f"{key} (pid {slot.process.pid}) is not registered with {endpoint}")
            elif not entry.serving:
                gaps.append(f"{key} is {entry.state} at {endpoint}")
            elif version is not None and entry.version != version:
                raise ProcessFailed(
                    f"{key} (pid {slot.process.pid}) runs code version {entry.version}, "
                    f"not {version}: the code on {key.host} changed during the rollout"
                )
    return "; ".join(dict.fromkeys(gaps)) if gaps else None


def wait_serving(
    cluster: Cluster,
    keys: Sequence[SlotKey],
    timeout_s: float,
    version: str | None = None,
) -> Fleet:
    """Wait until every slot in ``keys`` is RUNNING and registered with every broker."""
    latest: list[Fleet] = []
    hosts = tuple(cluster.host(name) for name in dict.fromkeys(k.host for k in keys))

    def check() -> str | None:
        fleet = snapshot(cluster, hosts)
        latest[:] = [fleet]
        return slot_gaps(cluster, fleet, keys, version)

    what = f"{len(keys)} worker(s) to register with {len(cluster.brokers)} broker(s)"
    wait_until(check, timeout_s, what, interval_s=0.2)
    return latest[0]


def wait_stopped(cluster: Cluster, keys: Sequence[SlotKey], timeout_s: float) -> None:
    """Wait until the processes of these slots have exited."""
    hosts = tuple(cluster.host(name) for name in dict.fromkeys(k.host for k in keys))

    def check() -> str | None:
        fleet = snapshot(cluster, hosts, with_brokers=False)
        running = []
        for key in keys:
            slot = find_slot(fleet, key)
            if slot is None or slot.process.state not in ("STOPPED", "EXITED", "FATAL"):
                running.append(f"{key} is {slot.process.state if slot else 'unknown'}")
        return "; ".join(running) or None

    wait_until(check, timeout_s, f"{len(keys)} worker(s) to stop", interval_s=0.1)
