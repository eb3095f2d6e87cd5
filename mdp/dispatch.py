"""The broker's bookkeeping: workers, services, queued requests. No sockets here.

Every method takes ``now`` (a ``time.monotonic()`` reading) so that it can be tested
without ZeroMQ and without waiting.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mdp.errors import Overloaded, RequestError, UnknownService


class WorkerState(enum.Enum):
    IDLE = "idle"  # may be given a request
    BUSY = "busy"  # holds one of this broker's requests
    AWAY = "away"  # busy with another broker's request (it told us so)
    DRAINING = "draining"  # leaving; takes no new request


@dataclass(eq=False, slots=True)
class Request:
    """A client request as the broker holds it."""

    client: bytes
    service: bytes
    body: list[bytes]
    received_at: float
    rid: int | None = None  # set for DIPS clients
    deadline: float | None = None  # monotonic; set for DIPS clients

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def ttl_ms(self, now: float) -> int | None:
        if self.deadline is None:
            return None
        return max(0, int((self.deadline - now) * 1000))


@dataclass(eq=False, slots=True)
class Worker:
    """A worker attached to this broker."""

    identity: bytes
    service: Service
    dips: bool  # speaks the DIPS extensions
    meta: dict[str, Any]
    registered_at: float
    expires_at: float
    state: WorkerState = WorkerState.IDLE
    current: Request | None = None
    dispatched_at: float = 0.0  # when it was given ``current``
    served: int = 0


@dataclass(eq=False, slots=True)
class Service:
    """Requests queued for one service and the workers that offer it."""

    name: bytes
    empty_since: float  # when it last had no worker (or was first asked for)
    queue: deque[Request] = field(default_factory=deque)
    idle: OrderedDict[bytes, Worker] = field(default_factory=OrderedDict)  # LRU first
    workers: dict[bytes, Worker] = field(default_factory=dict)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    replies: int = 0
    errors: int = 0
    expired: int = 0
    requeued: int = 0
    bounced: int = 0
    dropped: int = 0  # malformed or unexpected input
    undeliverable: int = 0  # replies to clients that had gone
    refused: int = 0  # messages a CURVE key's role does not allow


class Dispatcher:
    """Who is idle, what is queued, and which request each worker holds."""

    def __init__(
        self,
        *,
        max_queue: int,
        max_services: int,
        unknown_grace_s: float,
        worker_expiry_s: float,
        max_total_queue: int = 100_000,
        max_workers: int = 10_000,
    ) -> None:
        self.max_queue = max_queue
        self.max_total_queue = max_total_queue
        self.max_workers = max_workers
        self.queued = 0  # over all services (kept up to date by the queue operations)
        self._next_expiry = math.inf  # no queued request expires before this
        self.max_services = max_services
        self.unknown_grace_s = unknown_grace_s
        self.worker_expiry_s = worker_expiry_s
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.held: dict[tuple[bytes, int], Request] = {}  # DIPS requests by (client, id)
        self.counters = Counters()

    # --- workers ---------------------------------------------------------------------

    def add_worker(
        self, identity: bytes, service_name: bytes, dips: bool, meta: dict[str, Any], now: float
    ) -> Worker:
        service = self._service(service_name, now)
        worker = Worker(identity, service, dips, meta, now, now + self.worker_expiry_s)
        self.workers[identity] = worker
        service.workers[identity] = worker
        service.idle[identity] = worker
        return worker

    def remove_worker(self, worker: Worker, now: float) -> None:
        """Forget a worker; the request it held goes back to the head of its queue."""
        service = worker.service
        self.workers.pop(worker.identity, None)
        service.workers.pop(worker.identity, None)
        service.idle.pop(worker.identity, None)
        if not service.workers:
            service.empty_since = now
        self._requeue(worker)

    def heard_from(self, worker: Worker, now: float) -> None:
        worker.expires_at = now + self.worker_expiry_s

    def expired_workers(self, now: float) -> list[Worker]:
        return [w for w in self.workers.values() if now >= w.expires_at]

    def set_idle(self, worker: Worker) -> None:
        worker.state = WorkerState.IDLE
        worker.service.idle[worker.identity] = worker

    def set_unavailable(self, worker: Worker, state: WorkerState) -> None:
        """AWAY or DRAINING: keep the worker but give it nothing."""
        worker.state = state
        worker.service.idle.pop(worker.identity, None)

    def bounce(self, worker: Worker) -> bool:
        """The worker returned its request unworked; False if it held none."""
        if worker.current is None:
            return False
        self.counters.bounced += 1
        self._requeue(worker)
        self.set_unavailable(worker, WorkerState.AWAY)
        return True

    def complete(self, worker: Worker, client: bytes) -> Request | None:
        """The worker replied; return the request it answered, None if it held no such."""
        request = worker.current
        if request is None or request.client != client:
            return None
        worker.current = None
        worker.served += 1
        self._release(request)
        if worker.state is not WorkerState.DRAINING:
            self.set_idle(worker)
        return request

    def _requeue(self, worker: Worker) -> None:
        request = worker.current
        worker.current = None
        if request is not None:
            self.counters.requeued += 1
            worker.service.queue.appendleft(request)
            self.queued += 1
            if request.deadline is not None and request.deadline < self._next_expiry:
                self._next_expiry = request.deadline

    # --- requests --------------------------------------------------------------------

    def enqueue(self, request: Request, now: float) -> RequestError | None:
        """Queue a request; an error to answer at once when it cannot be queued."""
        self.counters.requests += 1
        if request.rid is not None:
            key = (request.client, request.rid)
            if key in self.held:
                return None  # a resend of a request we already hold: keep the one copy
        service = self.services.get(request.service)
        if service is None:
            if len(self.services) >= self.max_services:
                return UnknownService(f"no such service {request.service!r:.110}")
            service = self._service(request.service, now)
        if len(service.queue) >= self.max_queue:
            return Overloaded(
                f"service {service.name.decode()!r} has {len(service.queue)} requests queued"
            )
        if self.queued >= self.max_total_queue:
            return Overloaded(f"the broker has {self.queued} requests queued")
        if request.rid is not None:
            self.held[(request.client, request.rid)] = request
        if request.deadline is not None and request.deadline < self._next_expiry:
            self._next_expiry = request.deadline
        service.queue.append(request)
        self.queued += 1
        return None

    def holds(self, client: bytes, rid: int) -> bool:
        return (client, rid) in self.held

    def assignments(self, service: Service, now: float) -> Iterator[tuple[Worker, Request]]:
        """Pair queued requests with idle workers, least recently used first.

        The caller sends each pair; if sending fails it calls ``remove_worker``, which puts
        the request back at the head of the queue, and iteration goes on.
        """
        queue, idle = service.queue, service.idle
        while queue and idle:
            request = queue.popleft()
            self.queued -= 1
            if request.expired(now):
                self.counters.expired += 1
                self._release(request)
                continue
            _, worker = idle.popitem(last=False)
            worker.state = WorkerState.BUSY
            worker.current = request
            worker.dispatched_at = now
            yield worker, request

    def drop_expired(self, now: float) -> int:
        """Drop queued requests whose deadline passed.

        A scan is O(queued), so it runs only once the earliest deadline seen has come.
        """
        if now < self._next_expiry:
            return 0
        dropped = 0
        next_expiry = math.inf
        for service in self.services.values():
            keep: deque[Request] = deque()
            for request in service.queue:
                if request.expired(now):
                    self._release(request)
                    dropped += 1
                else:
                    keep.append(request)
                    if request.deadline is not None and request.deadline < next_expiry:
                        next_expiry = request.deadline
            if dropped:
                service.queue = keep
        self._next_expiry = next_expiry
        self.counters.expired += dropped
        self.queued -= dropped
        return dropped

    def busy_longer_than(self, age_s: float, now: float) -> list[Worker]:
        """Workers that have held one of our requests for more than ``age_s``."""
        return [w for w in self.workers.values()
                if w.current is not None and now - w.dispatched_at > age_s]

    def unknown_requests(self, now: float) -> list[Request]:
        """Requests for services that have had no worker for the grace period.

        Forgets services that have neither workers nor requests.
        """
        unknown: list[Request] = []
        grace = self.unknown_grace_s
        for name, service in list(self.services.items()):
            if service.workers:
                continue
            queue = service.queue
            while queue and max(service.empty_since, queue[0].received_at) + grace <= now:
                request = queue.popleft()
                self.queued -= 1
                self._release(request)
                unknown.append(request)
            if not queue:
                del self.services[name]
        return unknown

    def _release(self, request: Request) -> None:
        if request.rid is not None:
            self.held.pop((request.client, request.rid), None)

    def _service(self, name: bytes, now: float) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, now)
        return service

    # --- status ----------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for name, service in self.services.items():
            services[name.decode("ascii", "replace")] = {
                "queue": len(service.queue),
                "workers": [_worker_status(w, now) for w in service.workers.values()],
            }
        return services


def _worker_status(worker: Worker, now: float) -> dict[str, Any]:
    meta = worker.meta
    return {
        "identity": worker.identity.hex(),
        "state": worker.state.value,
        "host": meta.get("host", ""),
        "pid": meta.get("pid", 0),
        "version": meta.get("version", ""),
        "served": worker.served,
        "uptime_s": round(now - worker.registered_at, 3),
    }
