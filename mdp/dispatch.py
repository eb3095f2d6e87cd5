"""The broker's bookkeeping: workers, services, queued requests, tasks. No sockets here.

Every method takes ``now`` (a ``time.monotonic()`` reading) so that it can be tested
without ZeroMQ and without waiting.

A request given to a worker is a *task*, filed under a key of the broker's own (the frame
a worker echoes in its REPLY), so that several requests of one client, or a task and its
prefetched successor at one worker, are never confused. A worker is *idle* (no task of
ours, not busy elsewhere), *open* (runs one of our tasks and may hold ``prefetch`` more,
given only when no worker is idle), or neither.

A worker lost while it runs a task (the first it holds) costs that request one *loss*; a
request that has cost ``max_worker_losses`` workers is *poisoned*: given up and remembered
(:mod:`mdp.poison`) rather than given to yet another worker. Requests of one service with
the same coalescing key (``ck``) are *shared*: the first one queued or running is worked,
and every caller attached to it is answered with its reply.
"""

from __future__ import annotations

import enum
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from mdp.errors import Overloaded, RequestError, UnknownService, WorkerLost
from mdp.poison import PoisonMemory
from mdp.queues import ServiceQueue
from mdp.tally import BrokerTally, ServiceTally


class WorkerState(enum.Enum):
    IDLE = "idle"  # may be given a request
    BUSY = "busy"  # holds one or more of this broker's requests
    AWAY = "away"  # busy with another broker's request (it told us so)
    DRAINING = "draining"  # leaving; takes no new request


HOLD_BUDGET_S = 0.005  # a worker holds at most about this much work behind its current task
WORK_EWMA = 0.2  # weight of each new sample in a service's moving average of work time


@dataclass(eq=False, slots=True)
class Request:
    """A client request as the broker holds it."""

    client: bytes
    service: bytes
    body: list[bytes]
    received_at: float
    rid: int | None = None  # set for DIPS clients
    deadline: float | None = None  # monotonic; set for DIPS clients
    priority: int = 0
    key: bytes = b""  # set while a worker holds it
    dispatched_at: float = 0.0
    recalled: bool = False
    user: str = ""  # the client's CURVE key (z85) when CURVE is on
    ck: bytes | None = None  # coalescing key: identical requests are worked once
    losses: int = 0  # workers lost while running it
    sent_mark: int = 0  # when its task was given to the shell (BrokerCore's count)
    # a shared request's callers (each with its own client, id and deadline; the first is
    # the one that came first); None while it has only its own caller
    callers: list[Request] | None = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def answered_to(self) -> list[Request] | tuple[Request]:
        """Who gets this request's reply: its callers, or the request itself."""
        return self.callers if self.callers is not None else (self,)

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
    prefetch: int = 0  # tasks it may hold beyond the one it runs
    last_done_at: float = 0.0  # when it last answered one of our tasks
    batch: bool = False  # takes TASKS (several tasks in one message)
    tasks: dict[bytes, Request] = field(default_factory=dict)  # oldest first
    away: bool = False
    draining: bool = False
    served: int = 0
    failures: int = 0
    user: str = ""  # the worker's CURVE key (z85) when CURVE is on

    @property
    def running(self) -> Request | None:
        """The task it runs (the first of ours it holds), if any."""
        return next(iter(self.tasks.values()), None)

    @property
    def state(self) -> WorkerState:
        if self.draining:
            return WorkerState.DRAINING
        if self.tasks:
            return WorkerState.BUSY
        return WorkerState.AWAY if self.away else WorkerState.IDLE


@dataclass(eq=False, slots=True)
class Service:
    """Requests queued for one service and the workers that offer it."""

    name: bytes
    empty_since: float  # when it last had no worker (or was first asked for)
    queue: ServiceQueue[Request] = field(default_factory=ServiceQueue)
    idle: OrderedDict[bytes, Worker] = field(default_factory=OrderedDict)  # LRU first
    open: OrderedDict[bytes, Worker] = field(default_factory=OrderedDict)  # may prefetch
    workers: dict[bytes, Worker] = field(default_factory=dict)
    held: int = 0  # tasks waiting at a worker behind another of its tasks
    recalled: int = 0  # of those, the ones asked back (RECALL sent, no answer yet)
    holders: dict[bytes, Worker] = field(default_factory=dict)  # workers with held tasks
    work_s: float = 0.0  # moving average of a task's time at a worker; 0: none seen yet
    counters: ServiceTally = field(default_factory=ServiceTally)

    def hold_depth(self, worker: Worker) -> int:
        """How many tasks ``worker`` may hold beyond the one it runs: its ``prefetch``, but
        no more than about HOLD_BUDGET_S of this service's work, and 1 until a task has
        been timed (a held task waits behind the ones before it at that worker)."""
        if not worker.prefetch:
            return 0
        if self.work_s <= 0.0:
            return 1
        return max(1, min(worker.prefetch, int(HOLD_BUDGET_S / self.work_s)))


class Dispatcher:
    """Who is idle, what is queued, and which tasks each worker holds."""

    def __init__(
        self,
        *,
        max_queue: int,
        max_services: int,
        unknown_grace_s: float,
        worker_expiry_s: float,
        max_total_queue: int = 100_000,
        max_workers: int = 10_000,
        max_prefetch: int = 1,
        max_worker_losses: int = 2,
        poison_memory_s: float = 60.0,
    ) -> None:
        self.max_queue = max_queue
        self.max_total_queue = max_total_queue
        self.max_workers = max_workers
        self.max_prefetch = max_prefetch
        self.max_worker_losses = max_worker_losses  # 0: never give a request up
        self.queued = 0  # over all services (kept up to date by the queue operations)
        self._next_expiry = math.inf  # no queued request expires before this
        self.max_services = max_services
        self.unknown_grace_s = unknown_grace_s
        self.worker_expiry_s = worker_expiry_s
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.busy: dict[bytes, Worker] = {}  # workers that hold one of our tasks
        self.held: dict[tuple[bytes, int], Request] = {}  # DIPS requests by (client, id)
        self.shared: dict[tuple[bytes, bytes], Request] = {}  # by (service, ck)
        self.orphans: set[bytes] = set()  # services with requests and no worker
        self.offered: OrderedDict[bytes, None] = OrderedDict()  # services that had workers
        self.poison = PoisonMemory(poison_memory_s)
        self.counters = BrokerTally()
        self._key = random.getrandbits(63)

    # --- workers ---------------------------------------------------------------------

    def add_worker(self, identity: bytes, service_name: bytes, dips: bool,
                   meta: dict[str, Any], now: float, prefetch: int = 0,
                   batch: bool = False) -> Worker:
        service = self._service(service_name, now)
        prefetch = max(0, min(prefetch, self.max_prefetch)) if dips else 0
        worker = Worker(identity, service, dips, meta, now, now + self.worker_expiry_s,
                        prefetch=prefetch, batch=dips and batch)
        self.workers[identity] = worker
        service.workers[identity] = worker
        service.idle[identity] = worker
        self.orphans.discard(service_name)
        offered = self.offered
        if service_name not in offered:
            offered[service_name] = None
            if len(offered) > 4 * self.max_services:
                offered.popitem(last=False)
        return worker

    def remove_worker(self, worker: Worker, now: float, lost: bool = False) -> Request | None:
        """Forget a worker; the tasks it held go back to the head of their queue.

        ``lost``: it died or froze (rather than left): the task it ran costs its request
        one loss, and a request that has cost ``max_worker_losses`` workers is given up
        and returned (*poisoned*; its callers are to be answered ``worker_lost``).
        """
        service = worker.service
        identity = worker.identity
        self.workers.pop(identity, None)
        self.busy.pop(identity, None)
        service.workers.pop(identity, None)
        service.idle.pop(identity, None)
        service.open.pop(identity, None)
        service.holders.pop(identity, None)
        tasks = list(worker.tasks.values())
        poisoned = None
        for request in reversed(tasks):
            self._take_back(worker, request)
            if lost and request is tasks[0]:
                request.losses += 1
                if 0 < self.max_worker_losses <= request.losses:
                    poisoned = request
                    self._give_up(service, request, now)
                    continue
            self._requeue(service, request)
        if not service.workers:
            service.empty_since = now
            if service.queue:
                self.orphans.add(service.name)
            else:
                self.forget_if_unused(service)
        return poisoned

    def _give_up(self, service: Service, request: Request, now: float) -> None:
        self.counters.poisoned += 1
        service.counters.poisoned += 1
        self.poison.remember(service.name, request.body,
                             [(c.client, c.rid) for c in request.answered_to()],
                             request.losses, now)
        self._release(request)

    def heard_from(self, worker: Worker, now: float) -> None:
        worker.expires_at = now + self.worker_expiry_s

    def expired_workers(self, now: float) -> list[Worker]:
        """Workers silent too long. A DIPS worker that holds a task of ours is exempt: its
        connection is kept alive by ZMTP heartbeats while its handler runs, and a dead or
        frozen one is found when a send to it fails."""
        return [w for w in self.workers.values()
                if now >= w.expires_at and not (w.dips and w.tasks)]

    def set_away(self, worker: Worker, away: bool) -> None:
        """BUSY (away=True) or FREE from a worker."""
        worker.away = away
        self._place(worker)

    def set_draining(self, worker: Worker) -> None:
        worker.draining = True
        self._place(worker)

    def _place(self, worker: Worker) -> None:
        """File the worker as idle, open or neither, from its state: the one place where
        a worker's standing with the dispatcher changes."""
        identity, service = worker.identity, worker.service
        service.idle.pop(identity, None)
        service.open.pop(identity, None)
        if worker.draining or worker.away:
            return
        if not worker.tasks:
            service.idle[identity] = worker
        elif len(worker.tasks) <= service.hold_depth(worker):
            service.open[identity] = worker

    # --- tasks -----------------------------------------------------------------------

    def complete(self, worker: Worker, key: bytes, now: float,
                 error: str | None = None) -> Request | None:
        """The worker replied to task ``key``; the request, or None if it holds no such."""
        request = worker.tasks.get(key)
        if request is None:
            return None
        self._take_back(worker, request)
        worker.served += 1
        # the task's own time: from when the worker could start it (its previous reply, if
        # it was held behind one) to now; replies that come together count as quick ones
        service = worker.service
        sample = now - max(request.dispatched_at, worker.last_done_at)
        service.work_s = sample if service.work_s <= 0.0 else (
            service.work_s + WORK_EWMA * (sample - service.work_s))
        worker.last_done_at = now
        counters = service.counters
        counters.replies += 1
        counters.queue_time.observe(request.dispatched_at - request.received_at)
        counters.work_time.observe(now - request.dispatched_at)
        if error is not None:
            worker.failures += 1
            counters.error(error)
        self._release(request)
        self._place(worker)
        return request

    def retry(self, request: Request) -> None:
        """Queue a completed request again (a shared one the worker found expired while
        callers attached later still wait)."""
        service = self.services.get(request.service)
        if service is None:
            service = self._service(request.service, request.received_at)
        if request.rid is not None or request.callers is not None:
            for caller in request.answered_to():
                if caller.rid is not None:
                    self.held[(caller.client, caller.rid)] = caller
        if request.ck is not None:
            self.shared.setdefault((request.service, request.ck), request)
        self._requeue(service, request)

    def bounce(self, worker: Worker, key: bytes) -> bool:
        """The worker handed a task back unworked; False if it held no such task.

        A task handed back unasked means the worker is busy elsewhere (it sent BUSY first);
        a recalled one says nothing about the worker.
        """
        request = worker.tasks.get(key)
        if request is None:
            return False
        self._take_back(worker, request)
        worker.service.counters.bounced += 1
        self.counters.bounced += 1
        if not request.recalled:
            worker.away = True
        self._requeue(worker.service, request)
        self._place(worker)
        return True

    def _take_back(self, worker: Worker, request: Request) -> None:
        """Remove a task from its worker (the request itself is not released)."""
        service = worker.service
        tasks = worker.tasks
        first = next(iter(tasks), None)
        del tasks[request.key]
        if request.key != first:
            service.held -= 1
            if request.recalled:
                service.recalled -= 1
        elif tasks:  # the next task is now the one it runs: no longer held
            service.held -= 1
            if next(iter(tasks.values())).recalled:  # no longer counted as held (its
                service.recalled -= 1  # flag stays: a BOUNCE of it was asked for)
        if len(tasks) < 2:
            service.holders.pop(worker.identity, None)
            if not tasks:
                self.busy.pop(worker.identity, None)
        request.key = b""

    def _requeue(self, service: Service, request: Request) -> None:
        self.counters.requeued += 1
        service.counters.requeued += 1
        request.recalled = False
        service.queue.appendleft(request)
        self.queued += 1
        if request.deadline is not None and request.deadline < self._next_expiry:
            self._next_expiry = request.deadline
        if not service.workers:
            self.orphans.add(service.name)

    # --- requests --------------------------------------------------------------------

    def enqueue(self, request: Request, now: float) -> RequestError | None:
        """Queue a request (or attach it to a shared one); an error to answer at once when
        it cannot be queued."""
        self.counters.requests += 1
        if request.rid is not None:
            key = (request.client, request.rid)
            if key in self.held:
                return None  # a resend of a request we already hold: keep the one copy
        name = request.service
        service = self.services.get(name)
        if service is None:
            if len(self.services) >= self.max_services:
                return UnknownService(f"no such service {name!r:.110}")
            service = self._service(name, now)
        service.counters.requests += 1
        if len(self.poison):
            losses = self.poison.recall(name, request.body, request.client, request.rid, now)
            if losses is not None:
                return WorkerLost(f"service {name.decode()!r}: {losses} workers were lost "
                                  "while running this request; it is refused for a while")
        if request.ck is not None:
            shared = self.shared.get((name, request.ck))
            if shared is not None:
                self._attach(shared, request, service)
                return None
        if len(service.queue) >= self.max_queue:
            return Overloaded(
                f"service {service.name.decode()!r} has {len(service.queue)} requests queued"
            )
        if self.queued >= self.max_total_queue:
            return Overloaded(f"the broker has {self.queued} requests queued")
        if request.rid is not None:
            self.held[(request.client, request.rid)] = request
        if request.ck is not None:
            self.shared[(name, request.ck)] = request
        if request.deadline is not None and request.deadline < self._next_expiry:
            self._next_expiry = request.deadline
        service.queue.append(request)
        self.queued += 1
        if not service.workers:
            self.orphans.add(name)
        return None

    def _attach(self, shared: Request, request: Request, service: Service) -> None:
        """One more caller for a shared request: its reply goes to each; it runs until the
        latest of their deadlines."""
        if shared.callers is None:
            first = Request(shared.client, shared.service, [], shared.received_at, shared.rid,
                            shared.deadline, shared.priority, user=shared.user)
            shared.callers = [first]
            if shared.rid is not None:
                self.held[(shared.client, shared.rid)] = first
        shared.callers.append(request)
        if request.rid is not None:
            self.held[(request.client, request.rid)] = request
        if shared.deadline is not None:
            shared.deadline = (None if request.deadline is None
                               else max(shared.deadline, request.deadline))
        self.counters.coalesced += 1
        service.counters.coalesced += 1

    def detach_expired(self, now: float) -> list[Request]:
        """Callers of shared requests whose own deadline has passed: no longer answered
        with the reply (the caller is to be told ``expired``); the task goes on for the
        others."""
        gone: list[Request] = []
        for request in self.shared.values():
            callers = request.callers
            if callers is None or not any(c.expired(now) for c in callers):
                continue
            keep = []
            for caller in callers:
                if caller.expired(now):
                    gone.append(caller)
                    self._forget_caller(caller)
                else:
                    keep.append(caller)
            request.callers = keep
        return gone

    def _forget_caller(self, caller: Request) -> None:
        if caller.rid is not None:
            self.held.pop((caller.client, caller.rid), None)

    def holds(self, client: bytes, rid: int) -> bool:
        return (client, rid) in self.held

    def assignments(self, service: Service,
                    now: float) -> Iterator[tuple[Worker, Request, bool]]:
        """Pair queued requests with workers: (worker, request, hold).

        Idle workers first, least recently used first; only when none is idle, a worker
        that runs one of our tasks and may prefetch gets the next (``hold`` is True). The
        caller sends each task; if sending fails it calls ``remove_worker``, which puts the
        tasks back at the head of the queue, and iteration goes on.
        """
        queue, idle, open_ = service.queue, service.idle, service.open
        busy = self.busy
        while queue and (idle or open_):
            request = queue.popleft()
            self.queued -= 1
            if request.expired(now):
                self.counters.expired += 1
                service.counters.expired += 1
                self._release(request)
                continue
            if idle:
                _, worker = idle.popitem(last=False)
                hold = False
                busy[worker.identity] = worker
            else:
                _, worker = open_.popitem(last=False)
                hold = True
                service.held += 1
            self._key += 1
            request.key = key = self._key.to_bytes(8, "big")
            request.dispatched_at = now
            worker.tasks[key] = request
            if hold:
                service.holders[worker.identity] = worker
            if worker.prefetch and len(worker.tasks) <= service.hold_depth(worker):
                open_[worker.identity] = worker
            yield worker, request, hold

    def recalls(self, service: Service) -> list[tuple[Worker, Request]]:
        """Tasks to take back: one for each idle worker, while nothing else is queued.

        A task held at a busy worker behind another task would wait while a worker is
        idle; it is asked back (RECALL) and, when the worker returns it, dispatched again.
        """
        if service.held <= service.recalled or service.queue or not service.idle:
            return []  # nothing held that is not already asked back: O(1), not O(workers)
        wanted = len(service.idle)
        found: list[tuple[Worker, Request]] = []
        for worker in list(service.holders.values()):
            for request in list(worker.tasks.values())[1:]:
                if not request.recalled:
                    request.recalled = True
                    service.recalled += 1
                    found.append((worker, request))
                    if len(found) == wanted:
                        return found
        return found

    def drop_expired(self, now: float) -> int:
        """Drop queued requests whose deadline passed.

        A scan is O(queued), so it runs only once the earliest deadline seen has come.
        """
        if now < self._next_expiry:
            return 0
        dropped = 0
        next_expiry = math.inf
        for service in self.services.values():
            gone = service.queue.remove_if(lambda r: r.expired(now))
            for request in gone:
                self._release(request)
            service.counters.expired += len(gone)
            dropped += len(gone)
            for request in service.queue:
                if request.deadline is not None and request.deadline < next_expiry:
                    next_expiry = request.deadline
        self._next_expiry = next_expiry
        self.counters.expired += dropped
        self.queued -= dropped
        return dropped

    def drop_requests_of(self, drop: Callable[[Request], bool]) -> int:
        """Drop every queued request for which ``drop`` is true (revoked clients); a shared
        one loses those callers, and is dropped when none is left."""

        def revoked(request: Request) -> bool:
            if request.callers is None:
                return drop(request)
            keep = []
            for caller in request.callers:
                if drop(caller):
                    self._forget_caller(caller)
                else:
                    keep.append(caller)
            request.callers = keep
            return not keep

        dropped = 0
        for service in self.services.values():
            gone = service.queue.remove_if(revoked)
            for request in gone:
                self._release(request)
            dropped += len(gone)
        self.queued -= dropped
        return dropped

    def busy_longer_than(self, age_s: float, now: float) -> list[Worker]:
        """Workers whose oldest task of ours was given them more than ``age_s`` ago."""
        found = []
        for worker in self.busy.values():
            oldest = next(iter(worker.tasks.values()))
            if now - oldest.dispatched_at > age_s:
                found.append(worker)
        return found

    def unknown_requests(self, now: float) -> list[Request]:
        """Requests for services that have had no worker for the grace period.

        Forgets services that have neither workers nor requests.
        """
        unknown: list[Request] = []
        grace = self.unknown_grace_s
        for name in list(self.orphans):
            service = self.services.get(name)
            if service is None or service.workers:
                self.orphans.discard(name)
                continue
            queue = service.queue
            cutoff = now - grace  # requests that arrived (or lost their workers) before it
            if service.empty_since <= cutoff and any(
                    r.received_at <= cutoff for r in queue.head_arrivals()):
                gone = queue.remove_if(partial(_arrived_by, cutoff))
                self.queued -= len(gone)
                for request in gone:
                    self._release(request)
                unknown.extend(gone)
            if not queue:
                self.orphans.discard(name)
                del self.services[name]
        return unknown

    def forget_if_unused(self, service: Service) -> None:
        """Forget a service that has neither workers nor requests."""
        if not service.workers and not service.queue and \
                self.services.get(service.name) is service:
            del self.services[service.name]
            self.orphans.discard(service.name)

    def _release(self, request: Request) -> None:
        """The request is answered or dropped: forget its ids and its coalescing key."""
        if request.callers is not None:
            for caller in request.callers:
                self._forget_caller(caller)
        elif request.rid is not None:
            self.held.pop((request.client, request.rid), None)
        if request.ck is not None:
            key = (request.service, request.ck)
            if self.shared.get(key) is request:
                del self.shared[key]

    def _service(self, name: bytes, now: float) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, now)
        return service


def _arrived_by(cutoff: float, request: Request) -> bool:
    return request.received_at <= cutoff
