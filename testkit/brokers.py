"""What a broker says of itself (``mmi.status``, as :mod:`mdp.status` reads it), for tests
and benchmarks that wait for workers or count what a broker did."""

from __future__ import annotations

from collections.abc import Iterable

from mdp.keys import CurveConfig
from mdp.status import BrokerStatus
from mdp.statusfetch import fetch, try_fetch


def broker_status(endpoint: str, timeout_s: float = 1.0,
                  curve: CurveConfig | None = None) -> BrokerStatus | None:
    """The broker's status, or None when it does not answer within ``timeout_s``."""
    return try_fetch(endpoint, timeout_s=timeout_s, curve=curve)


def status_of(endpoint: str, timeout_s: float = 2.0) -> BrokerStatus:
    """The broker's status; raises (failing a test) when it does not answer."""
    return fetch(endpoint, timeout_s=timeout_s)


def broker_counter(endpoint: str, name: str) -> int:
    """One of the broker's totals (a ``Counters`` field); 0 when it does not answer."""
    status = broker_status(endpoint)
    return int(getattr(status.counters, name)) if status is not None else 0


def worker_pids(endpoint: str, service: str | None = None,
                curve: CurveConfig | None = None) -> list[int]:
    """Pids of the workers the broker lists (of ``service``, or all); [] when it is down."""
    status = broker_status(endpoint, curve=curve)
    if status is None:
        return []
    workers = status.all_workers() if service is None else status.workers(service)
    return [w.pid for w in workers]


def count_workers(endpoint: str, service: str, state: str | None = None,
                  timeout_s: float = 1.0) -> int:
    """Workers of ``service`` the broker lists (in ``state``); -1 when it does not answer."""
    status = broker_status(endpoint, timeout_s)
    if status is None:
        return -1
    return sum(1 for w in status.workers(service) if state is None or w.state == state)


def serving_workers(endpoint: str, service: str) -> int:
    """Workers of ``service`` the broker can hand requests to; -1 when it does not answer."""
    status = broker_status(endpoint)
    if status is None:
        return -1
    return sum(1 for w in status.workers(service) if w.serving)


def busy_worker(endpoints: Iterable[str], service: str = "echo") -> int | None:
    """The pid of a worker of ``service`` that holds a request at one of the brokers now."""
    for endpoint in endpoints:
        status = broker_status(endpoint)
        for worker in status.workers(service) if status else ():
            if worker.state == "busy" and worker.pid:
                return worker.pid
    return None


def queue_depth(endpoint: str, service: str, timeout_s: float = 1.0) -> int:
    """Requests of ``service`` waiting at the broker; -1 when it does not answer."""
    status = broker_status(endpoint, timeout_s)
    if status is None:
        return -1
    entry = status.services.get(service)
    return entry.queue if entry else 0


def has_worker(endpoint: str, pid: int) -> bool:
    """Whether the broker lists the worker process ``pid`` (for any service)."""
    return pid in worker_pids(endpoint)
