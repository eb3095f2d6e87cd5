"""What the dashboard shows, computed from two successive polls of the brokers (no I/O).

:func:`fleet_state` takes the previous and the current :class:`BrokerView` of each broker
and returns a JSON-ready map: brokers, services with rates and latency quantiles over the
interval between the polls, workers merged across brokers and grouped by host, and the
code versions in the fleet (more than one means a rollout is under way).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mdp.errors import Blame, blame_of
from mdp.status import (
    BrokerInfo,
    BrokerView,
    Histogram,
    ServiceCounters,
    ServiceStatus,
    WorkerStatus,
)


def _same_process(a: BrokerView, b: BrokerView) -> bool:
    if a.status is None or b.status is None:
        return False
    return (a.status.broker.pid, a.status.broker.instance) == (b.status.broker.pid,
                                                                b.status.broker.instance)


def _delta(now: int | None, before: int | None) -> int | None:
    if now is None:
        return None
    if before is None or before > now:  # new, or the broker restarted
        return now
    return now - before


def _served(service: ServiceStatus) -> dict[str, int]:
    return {w.identity: w.served for w in service.workers}


class _ServiceWindow:
    """One service's sums over brokers, for the interval between two polls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: int | None = None
        self.replies: int | None = None
        self.served = 0
        self.errors: int | None = None  # the fleet's faults (a worker, a deadline)
        self.refused = 0  # the callers' mistakes and what is missing: not the fleet's fault
        self.errors_total: Counter[str] = Counter()
        self.queue = 0
        self.work: Histogram | None = None
        self.wait: Histogram | None = None

    def add(self, now: ServiceStatus, before: ServiceStatus | None) -> None:
        self.queue += now.queue
        previous = _served(before) if before else {}
        self.served += sum(_delta(w.served, previous.get(w.identity)) or 0 for w in now.workers)
        if now.counters is not None:
            self._count(now.counters, before.counters if before else None)
        for attr, key in (("work", "work_seconds"), ("wait", "queue_seconds")):
            hist = getattr(now, key)
            if hist is None:
                continue
            window = hist.minus(getattr(before, key) if before else None)
            mine = getattr(self, attr)
            setattr(self, attr, window if mine is None else mine.plus(window))

    def _count(self, now: ServiceCounters, before: ServiceCounters | None) -> None:
        self.errors_total.update(now.errors)
        for attr in ("requests", "replies"):
            d = _delta(getattr(now, attr), getattr(before, attr) if before else None)
            setattr(self, attr, (getattr(self, attr) or 0) + (d or 0))
        errors_before = _faults(before) if before else None
        self.errors = (self.errors or 0) + (_delta(_faults(now), errors_before) or 0)
        refused_before = _refusals(before) if before else None
        self.refused += _delta(_refusals(now), refused_before) or 0

    def to_json(self, dt: float, states: Counter[str]) -> dict[str, Any]:
        completed = self.replies if self.replies is not None else self.served
        work, wait = self.work, self.wait
        return {
            "name": self.name,
            "rate": round(completed / dt, 2) if dt > 0 else 0.0,
            "requests_rate": round(self.requests / dt, 2) if dt > 0 and self.requests else 0.0,
            "error_rate": round(self.errors / dt, 2) if dt > 0 and self.errors else 0.0,
            "refused_rate": round(self.refused / dt, 2) if dt > 0 and self.refused else 0.0,
            "errors": dict(self.errors_total),
            "queue": self.queue,
            "workers": dict(states),
            "p50": _q(work, 0.5),
            "p99": _q(work, 0.99),
            "queue_p99": _q(wait, 0.99),
            "latency_known": work is not None,
        }


FAULTS = (Blame.FLEET, Blame.DEADLINE, Blame.CAPACITY)  # the fleet failed a request


def _faults(counters: ServiceCounters) -> int:
    """Error replies that were the fleet's fault (mdp.errors.CODES's blame), and expiries: a
    caller's bad request is no worker failure."""
    return counters.expired + sum(n for code, n in counters.errors.items()
                                  if blame_of(code) in FAULTS)


def _refusals(counters: ServiceCounters) -> int:
    return sum(n for code, n in counters.errors.items() if blame_of(code) not in FAULTS)


def _q(hist: Histogram | None, q: float) -> float | None:
    value = hist.quantile(q) if hist is not None else None
    return None if value is None else round(value, 6)


def _worker_key(broker: BrokerView, service: str, worker: WorkerStatus
                ) -> tuple[str, str, str]:
    if worker.pid:
        return (worker.host, str(worker.pid), service)
    return (worker.host, f"{broker.endpoint}/{worker.identity}", service)


def _workers(views: Sequence[BrokerView]) -> list[dict[str, Any]]:
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for view in views:
        for service in view.status.services.values() if view.status else ():
            for worker in service.workers:
                key = _worker_key(view, service.name, worker)
                entry = merged.setdefault(key, {
                    "host": worker.host or "?", "pid": worker.pid, "service": service.name,
                    "version": worker.version, "served": 0, "failures": 0,
                    "uptime_s": worker.uptime_s, "brokers": {}, "busy_for": []})
                entry["served"] += worker.served
                entry["failures"] += worker.failures
                entry["brokers"][view.endpoint] = worker.state
                entry["uptime_s"] = max(entry["uptime_s"], worker.uptime_s)
                if worker.state == "busy":
                    entry["busy_for"].append(view.endpoint)
    for entry in merged.values():
        states = set(entry["brokers"].values())
        entry["state"] = ("busy" if entry["busy_for"] else "draining" if "draining" in states
                          else "idle" if "idle" in states else sorted(states)[0])
    return sorted(merged.values(), key=lambda w: (w["host"], w["service"], w["pid"]))


def _hosts(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    hosts: dict[str, list[dict[str, Any]]] = {}
    for worker in workers:
        hosts.setdefault(worker["host"], []).append(worker)
    return [{"host": host, "workers": items} for host, items in sorted(hosts.items())]


def _rollout(workers: list[dict[str, Any]]) -> dict[str, Any]:
    versions = Counter(w["version"] or "unknown" for w in workers)
    by_service: dict[str, Counter[str]] = {}
    for worker in workers:
        by_service.setdefault(worker["service"], Counter())[worker["version"] or "unknown"] += 1
    mixed = {name: dict(c) for name, c in sorted(by_service.items()) if len(c) > 1}
    return {"in_progress": len(versions) > 1, "versions": dict(versions.most_common()),
            "services": mixed}


def _broker(view: BrokerView) -> dict[str, Any]:
    info = view.status.broker if view.status else BrokerInfo("", 0, "", "", 0.0)
    return {"endpoint": view.endpoint, "up": view.up, "error": view.error,
            "version": info.version, "host": info.host, "pid": info.pid,
            "uptime_s": info.uptime_s,
            "counters": view.status.counters.to_wire() if view.status else {}}


def fleet_state(previous: Sequence[BrokerView], current: Sequence[BrokerView],
                wall_time: float) -> dict[str, Any]:
    """The dashboard's map for ``current``, with rates over the time since ``previous``."""
    before: Mapping[str, BrokerView] = {v.endpoint: v for v in previous}
    windows: dict[str, _ServiceWindow] = {}
    dt = 0.0
    for view in current:
        if view.status is None:
            continue
        old = before.get(view.endpoint)
        if old is not None and old.status is not None and _same_process(old, view):
            dt = max(dt, view.taken_at - old.taken_at)
            earlier = old.status.services
        else:
            earlier = {}
        for name, service in view.status.services.items():
            window = windows.setdefault(name, _ServiceWindow(name))
            window.add(service, earlier.get(name))
    if dt <= 0:  # no usable earlier poll: counts since start are not a rate
        dt = 0.0
    workers = _workers(current)
    states: dict[str, Counter[str]] = {}
    for worker in workers:
        states.setdefault(worker["service"], Counter())[worker["state"]] += 1
    services = []
    for name in sorted(windows):
        entry = windows[name].to_json(dt or 1.0, states.get(name, Counter()))
        if not dt:  # counts since the start are no rate
            entry.update(rate=0.0, requests_rate=0.0, error_rate=0.0, refused_rate=0.0,
                         p50=None, p99=None, queue_p99=None)
        services.append(entry)
    return {
        "time": wall_time,
        "interval_s": round(dt, 3),
        "brokers": [_broker(v) for v in current],
        "services": services,
        "hosts": _hosts(workers),
        "rollout": _rollout(workers),
        "totals": {
            "rate": round(sum(s["rate"] for s in services), 2),
            "error_rate": round(sum(s["error_rate"] for s in services), 2),
            "refused_rate": round(sum(s["refused_rate"] for s in services), 2),
            "coalesced": sum(v.status.counters.coalesced for v in current if v.status),
            "poisoned": sum(v.status.counters.poisoned for v in current if v.status),
            "queue": sum(s["queue"] for s in services),
            "workers": len(workers),
            "busy": sum(1 for w in workers if w["state"] == "busy"),
            "brokers_up": sum(1 for v in current if v.up),
        },
    }
