"""The broker's bookkeeping: workers, services, queued requests, tasks. No sockets here;
every method takes ``now`` (a ``time.monotonic()`` reading) so that it can be tested
without ZeroMQ and without waiting. Where a worker stands (what it holds, whether it is
alive) is worked out by :mod:`mdp.standing`; the scans that drop requests are :mod:`mdp.sweeps`.

A request given to a worker is a *task*, filed under a key of the broker's own (the frame
a worker echoes in its REPLY), so that several requests of one client, or a task and its
prefetched successor at one worker, are never confused. A worker is *idle* (no task of
ours, not busy elsewhere), *open* (runs one of our tasks and may hold ``prefetch`` more,
given only when no worker is idle), or neither.

A DIPS worker that holds a task and answers no probe for ``frozen_after_s`` is *silent*
(frozen, or stuck without its GIL): its tasks go to other workers and it gets no new one
until it speaks again; its late reply to a task taken back still answers that request if
nobody has yet (the copy elsewhere is then void: ``done``). A request is taken back for
silence once; after that it waits at its second worker.

A worker lost while it runs a task (the first it holds) costs that request one *loss*; a
request that has cost ``max_worker_losses`` workers is *poisoned*: given up and remembered
(:mod:`mdp.poison`) rather than given to yet another worker. A request that lost a worker
goes out again after a short random pause (``RETRY_S``), not at once: every broker learns
of a worker's death at about the same moment, and the poisoned request that killed it,
given out again at once by another broker, would often meet this one at the same idle
worker, where a request that never ran would be taken for poisoned too. Such a meeting is
still possible (two brokers may give one idle worker a task each at the same moment, and the
one that waits behind the other, unread or held, is charged too), so a *suspect* request
(one that has cost a worker) goes, to a worker that takes them, with an ASK before its task:
that worker CHECKs with us before it starts it, and waits for our GO
(:mod:`mdp.protocol.checks`); the task costs a loss only if that CHECK came. So a suspect
request that waited behind another's task at a worker that died is not blamed again, and
one that kills workers still is, every time. Requests of one service with
the same coalescing key (``ck``) are *shared*: the first one queued or running is worked,
and every caller attached to it is answered with its reply; a request whose client claims
it cost workers elsewhere shares only with requests that claim as many (:func:`shared_key`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from mdp.errors import Overloaded, RequestError, UnknownService, WorkerLost, a_worker_failed
from mdp.poison import PoisonMemory
from mdp.protocol import BIG_BODY, DEFAULT_LINK_FLOOR, sent_until
from mdp.records import Process, Request, Service, Worker, WorkerState
from mdp.standing import join_process, leave_process, place, take_back
from mdp.tally import BrokerTally

__all__ = ["Dispatcher", "Request", "Service", "Worker", "WorkerState"]

RETRY_S = (0.05, 0.25)  # a request that lost its worker goes out again this much later
MAX_GONE = 1000  # clients remembered as gone (:meth:`Dispatcher.client_gone`)


class Dispatcher:
    """Who is idle, what is queued, and which tasks each worker holds. (The timers' scans
    over every queue, :mod:`mdp.sweeps`, keep ``queued`` and ``next_expiry`` too.)"""

    def __init__(
        self,
        *,
        max_queue: int,
        max_services: int,
        unknown_grace_s: float,
        worker_expiry_s: float,
        max_total_queue: int = 100_000,
        max_queue_bytes: int = 1 << 30,
        max_workers: int = 10_000,
        max_prefetch: int = 1,
        max_worker_losses: int = 2,
        poison_memory_s: float = 60.0,
        link_floor: int = DEFAULT_LINK_FLOOR,
    ) -> None:
        self.max_queue = max_queue
        self.max_total_queue = max_total_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_workers = max_workers
        self.max_prefetch = max_prefetch
        self.max_worker_losses = max_worker_losses  # 0: never give a request up
        self.link_floor = link_floor  # bytes per second a big task may take to go
        self.queued = 0  # over all services (kept up to date by the queue operations)
        self.queued_bytes = 0  # of their bodies (each request's ``size``), likewise
        self.attached = 0  # callers of shared requests (held, bounded with the queue)
        self.next_expiry = math.inf  # no queued request expires before this
        self.max_services = max_services
        self.unknown_grace_s = unknown_grace_s
        self.worker_expiry_s = worker_expiry_s
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, Worker] = {}
        self.busy: dict[bytes, Worker] = {}  # workers that hold one of our tasks
        self.held: dict[tuple[bytes, int], Request] = {}  # DIPS requests by (client, id)
        self.shared: dict[tuple[bytes, bytes, int], Request] = {}  # by shared_key
        self.orphans: set[bytes] = set()  # services with requests and no worker
        # clients a send to failed (the latest MAX_GONE): their DIPS requests still queued
        # are dropped as they come up (see client_gone)
        self.gone_clients: dict[bytes, None] = {}
        self.offered: OrderedDict[bytes, None] = OrderedDict()  # services that had workers
        self.processes: dict[tuple[str, int], Process] = {}  # by (host, pid)
        self.poison = PoisonMemory(poison_memory_s)
        self.counters = BrokerTally()
        self._random = random.Random()
        self._key = self._random.getrandbits(63)
        # requests that lost their worker, by when they go out again (a heap)
        self.retries: list[tuple[float, int, Request]] = []
        self._retry_order = itertools.count()

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
        join_process(self.processes, worker, now)
        self.orphans.discard(service_name)
        offered = self.offered
        if service_name not in offered:
            offered[service_name] = None
            if len(offered) > 4 * self.max_services:
                offered.popitem(last=False)
        return worker

    def remove_worker(self, worker: Worker, now: float,
                      lost: Callable[[Request], bool] | None = None,
                      charged: list[Request] | None = None) -> list[Request]:
        """Forget a worker; the tasks it held go back to the head of their queue.

        ``lost``: it died or froze (rather than left), and ``lost(request)`` says whether
        a task had reached it: each such task costs its request one loss (the one it ran,
        and those held behind it: a worker that gathers replies may have finished the first
        and started the next when it died), and goes out again after a short pause (and
        into ``charged``, when given: its callers may be told its count); a request that
        has cost ``max_worker_losses`` workers is given up and returned
        (*poisoned*; its callers are to be answered ``worker_lost``). A task given with
        ASK (``worker.asked``) costs a loss only if the worker's CHECK said it started
        there; one that never started goes back to the head of its queue at once, free.
        """
        service = worker.service
        identity = worker.identity
        self.workers.pop(identity, None)
        self.busy.pop(identity, None)
        service.workers.pop(identity, None)
        service.idle.pop(identity, None)
        service.open.pop(identity, None)
        leave_process(self.processes, worker)
        # one worker lost costs a request one loss, though the worker may hold it twice
        # (given up while silent, then given it again under a new key when it spoke); a
        # suspect task given with ASK costs one only if its CHECK came (it started there)
        asked = worker.asked
        costs = [] if lost is None else [r for r in dict.fromkeys(
            r for key, r in (*worker.tasks.items(), *worker.given_up.items())
            if not asked or asked.get(key, True)) if not r.done and lost(r)]
        poisoned = []
        for request in costs:
            request.losses += 1
            if 0 < self.max_worker_losses <= request.losses:
                poisoned.append(request)
                self._give_up(service, request, now)  # void wherever a copy of it is
            elif charged is not None:
                charged.append(request)
        worker.given_up.clear()
        for request in reversed(list(worker.tasks.values())):
            take_back(self.busy, worker, request)
            if request.done:
                continue
            if request in costs:
                due = now + self._random.uniform(*RETRY_S)
                heapq.heappush(self.retries, (due, next(self._retry_order), request))
            else:
                self._requeue(service, request)
        if not service.workers:
            service.empty_since = now
            if service.queue:
                self.orphans.add(service.name)
            else:
                self.forget_if_unused(service)
        return poisoned

    @property
    def next_retry(self) -> float:
        """When a request that lost its worker is next due to go out again."""
        return self.retries[0][0] if self.retries else math.inf

    def due_retries(self, now: float) -> list[Service]:
        """Requests that lost their worker and have waited their pause go back to the head
        of their queue; their services, to dispatch."""
        services: list[Service] = []
        retries = self.retries
        while retries and retries[0][0] <= now:
            _, _, request = heapq.heappop(retries)
            if request.done:
                continue
            service = self._service(request.service, now)
            self._requeue(service, request)
            services.append(service)
        return services

    def _give_up(self, service: Service, request: Request, now: float) -> None:
        self.counters.poisoned += 1
        service.counters.poisoned += 1
        self.poison.remember(service.name, request.body,
                             [(c.client, c.rid) for c in request.answered_to()],
                             request.losses, now,
                             by_body=not getattr(request, "claimed", 0))
        self.release(request)

    def take_back_from_silent(self, worker: Worker) -> list[bytes]:
        """The worker went silent holding tasks: they go back to the head of the queue (a
        running task once only: taken back before, it stays), and it gets none until it
        speaks again. Its late replies still count (:meth:`complete_late`). The keys of
        the tasks taken back."""
        worker.silent = True
        service = worker.service
        tasks = list(worker.tasks.items())
        running = tasks[0][1]
        taken = []
        for key, request in reversed(tasks):
            if request is running and running.hedged:
                continue
            take_back(self.busy, worker, request)
            worker.given_up[key] = request
            self._requeue(service, request)
            taken.append(key)
        running.hedged = True
        place(worker)
        return taken

    # --- tasks -----------------------------------------------------------------------

    def complete(self, worker: Worker, key: bytes, now: float,
                 error: str | None = None) -> Request | None:
        """The worker replied to task ``key``; the request, or None if it holds no such."""
        request = worker.tasks.get(key)
        if request is None:
            return None
        take_back(self.busy, worker, request)
        worker.served += 1
        # the task's own time: from when the worker could start it (its previous reply, if
        # it was held behind one) to now; replies that come together count as quick ones
        service = worker.service
        sample = now - max(request.dispatched_at, worker.last_done_at)
        service.timed(sample)
        worker.last_done_at = now
        counters = service.counters
        counters.replies += 1
        counters.queue_time.observe(request.dispatched_at - request.received_at)
        counters.work_time.observe(now - request.dispatched_at)
        if error is not None:
            if a_worker_failed(error):
                worker.failures += 1
            counters.error(error)
        self.release(request)
        place(worker)
        return request

    def complete_late(self, worker: Worker, key: bytes, now: float,
                      error: str | None = None) -> Request | None:
        """A reply to a task taken back from the worker when it went silent: the request,
        if nobody has answered it yet (a copy of it elsewhere is then void)."""
        request = worker.given_up.pop(key, None)
        if request is None or request.done:
            return None
        worker.served += 1
        counters = worker.service.counters
        counters.replies += 1
        if error is not None:
            if a_worker_failed(error):
                worker.failures += 1
            counters.error(error)
        self.release(request)
        return request

    def discard(self, worker: Worker, key: bytes) -> None:
        """The worker answered (or handed back) a task whose request is already done."""
        request = worker.tasks.get(key)
        if request is not None:
            take_back(self.busy, worker, request)
            place(worker)

    def retry(self, request: Request) -> None:
        """Queue a completed request again (a shared one the worker found expired while
        callers attached later still wait)."""
        service = self.services.get(request.service)
        if service is None:
            service = self._service(request.service, request.received_at)
        request.done = False
        if request.callers is not None:
            self.attached += len(request.callers)  # held again, as _attach held them
        if request.rid is not None or request.callers is not None:
            for caller in request.answered_to():
                if caller.rid is not None:
                    self.held[(caller.client, caller.rid)] = caller
        if request.ck is not None:
            self.shared.setdefault(shared_key(request), request)
        self._requeue(service, request)

    def bounce(self, worker: Worker, key: bytes) -> bool:
        """The worker handed a task back unworked; False if it held no such task.

        A task handed back unasked means the worker is busy elsewhere (it sent BUSY first);
        a recalled one says nothing about the worker.
        """
        request = worker.tasks.get(key)
        if request is None:
            return False
        take_back(self.busy, worker, request)
        worker.service.counters.bounced += 1
        self.counters.bounced += 1
        if not request.recalled:
            worker.away = True
        if not request.done:
            self._requeue(worker.service, request)
        place(worker)
        return True

    def _requeue(self, service: Service, request: Request) -> None:
        self.counters.requeued += 1
        service.counters.requeued += 1
        request.recalled = False
        service.queue.appendleft(request)
        self.queued += 1
        request.size = size = body_size(request.body)  # (given out at once, it had none)
        self.queued_bytes += size
        if request.deadline is not None and request.deadline < self.next_expiry:
            self.next_expiry = request.deadline
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
        if self.poison.entries:
            losses = self.poison.recall(name, request.body, request.client, request.rid, now)
            if losses is not None:
                return WorkerLost(f"service {name.decode()!r}: {losses} workers were lost "
                                  "while running this request; it is refused for a while")
        sharing = None if request.ck is None else shared_key(request)
        if sharing is not None:
            shared = self.shared.get(sharing)
            if shared is not None:
                if not same_body(shared.body, request.body):
                    sharing = None  # a key is a hint, not a proof: another body is its own
                elif shared.callers is not None and len(shared.callers) >= self.max_queue:
                    return Overloaded(f"service {service.name.decode()!r}: "
                                      f"{len(shared.callers)} callers wait for one request")
                elif self.queued + self.attached >= self.max_total_queue:
                    return Overloaded(f"the broker holds {self.queued} requests queued and "
                                      f"{self.attached} callers of shared ones")
                else:
                    self._attach(shared, request, service)
                    return None
        if service.queue.length >= self.max_queue:
            return Overloaded(
                f"service {service.name.decode()!r} has {len(service.queue)} requests queued"
            )
        if self.queued + self.attached >= self.max_total_queue:
            return Overloaded(f"the broker has {self.queued} requests queued"
                              + (f" and {self.attached} callers of shared ones"
                                 if self.attached else ""))
        body = request.body
        request.size = size = len(body[0]) if len(body) == 1 else body_size(body)
        if self.queued_bytes + size > self.max_queue_bytes:
            return Overloaded(f"the broker holds {self.queued_bytes} bytes of queued requests; "
                              f"this one's {size} more would pass the limit of "
                              f"{self.max_queue_bytes} (--max-queue-bytes)")
        if request.rid is not None:
            self.held[(request.client, request.rid)] = request
        if sharing is not None:
            self.shared[sharing] = request
        if request.deadline is not None and request.deadline < self.next_expiry:
            self.next_expiry = request.deadline
        service.queue.append(request)
        self.queued += 1
        self.queued_bytes += size
        if not service.workers:
            self.orphans.add(name)
        return None

    def dispatch_now(self, service: Service, request: Request, now: float) -> Worker | None:
        """A request that came alone for a service with nothing queued and a worker idle:
        given to that worker at once, as :meth:`enqueue` then :meth:`assignments` would,
        without the queue; the worker. None, with nothing done, for anything else (a
        resend of a request held here, a coalescing key, a poisoned request remembered,
        no idle worker): then it takes the usual way."""
        idle = service.idle
        if not idle or service.queue.length or service.unrecalled or request.ck is not None \
                or self.poison.entries:
            return None
        rid = request.rid
        if rid is not None:
            held = (request.client, rid)
            if held in self.held:
                return None
            self.held[held] = request
        self.counters.requests += 1
        service.counters.requests += 1
        _, worker = idle.popitem(last=False)
        self.busy[worker.identity] = worker
        self._give(worker, request, now)
        if worker.prefetch and 1 <= service.hold_depth(worker):
            service.open[worker.identity] = worker
        return worker

    def _give(self, worker: Worker, request: Request, now: float) -> None:
        """The task goes to ``worker`` under a new key; a big one holds the probes that
        would wait behind its bytes (Worker.tasks_until)."""
        self._key += 1
        request.key = key = self._key.to_bytes(8, "big")
        request.dispatched_at = now
        worker.tasks[key] = request
        if (body := request.body) and len(body[-1]) >= BIG_BODY:
            worker.tasks_until = sent_until(worker.tasks_until, len(body[-1]), now,
                                            self.link_floor)
            worker.big_key = key

    def _attach(self, shared: Request, request: Request, service: Service) -> None:
        """One more caller for a shared request: its reply goes to each; it runs until the
        latest of their deadlines."""
        if shared.callers is None:
            first = Request(shared.client, shared.service, [], shared.received_at, shared.rid,
                            shared.deadline, shared.priority, user=shared.user)
            shared.callers = [first]
            self.attached += 1
            if shared.rid is not None:
                self.held[(shared.client, shared.rid)] = first
        request.body = []  # the shared request's own body is the same bytes: keep one copy
        shared.callers.append(request)
        self.attached += 1
        if request.rid is not None:
            self.held[(request.client, request.rid)] = request
        if shared.deadline is not None:
            shared.deadline = (None if request.deadline is None
                               else max(shared.deadline, request.deadline))
        self.counters.coalesced += 1
        service.counters.coalesced += 1

    def forget_caller(self, caller: Request) -> None:
        self.attached -= 1
        if caller.rid is not None:
            self.held.pop((caller.client, caller.rid), None)

    def client_gone(self, client: bytes) -> None:
        """A send to ``client`` failed: it is gone, and the DIPS requests (those with an
        id) it still has queued here are dropped as they come up, unworked (one shared
        with other callers still runs for them). A ROUTER names each connection afresh,
        so a DIPS client never comes back under the same identity unless it chose one,
        and then its HELLO on the new connection says so (the broker core forgets the
        mark); a standard 7/MDP client, which may choose one and says no HELLO, is never
        dropped. The latest MAX_GONE clients are remembered."""
        gone = self.gone_clients
        if client not in gone:
            if len(gone) >= MAX_GONE:
                del gone[next(iter(gone))]
            gone[client] = None

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
        while queue.length and (idle or open_):
            request = queue.popleft()
            self.queued -= 1
            self.queued_bytes -= request.size
            if request.done:  # answered meanwhile by the worker it was taken back from
                continue
            if request.rid is not None and request.callers is None and \
                    request.client in self.gone_clients:
                self.release(request)  # nobody is left to take its answer
                continue
            if request.expired(now):
                self.counters.expired += 1
                service.counters.expired += 1
                self.release(request)
                continue
            if idle:
                _, worker = idle.popitem(last=False)
                hold = False
                busy[worker.identity] = worker
            elif request.losses:  # it may be poisoned: it waits for a worker of its own,
                queue.appendleft(request)  # or a death would be blamed on another's task
                self.queued += 1
                self.queued_bytes += request.size
                break
            else:
                _, worker = open_.popitem(last=False)
                hold = True
                service.held += 1
            self._give(worker, request, now)
            if hold:
                service.unrecalled[request] = worker
            prefetch = worker.prefetch  # (service.hold_depth, inline: once per task)
            if prefetch and len(worker.tasks) <= (
                    prefetch if prefetch < service.hold_cap else service.hold_cap):
                open_[worker.identity] = worker
            yield worker, request, hold

    def unqueued(self, gone: list[Request]) -> None:
        """Requests a sweep took out of their queues (:mod:`mdp.sweeps`) no longer count."""
        self.queued -= len(gone)
        self.queued_bytes -= sum(request.size for request in gone)

    def forget_if_unused(self, service: Service) -> None:
        """Forget a service that has neither workers nor requests."""
        if not service.workers and not service.queue and \
                self.services.get(service.name) is service:
            del self.services[service.name]
            self.orphans.discard(service.name)

    def release(self, request: Request) -> None:
        """The request is answered or dropped: forget its ids and its coalescing key."""
        request.done = True
        if request.callers is not None:
            for caller in request.callers:
                self.forget_caller(caller)
        elif request.rid is not None:
            self.held.pop((request.client, request.rid), None)
        if request.ck is not None:
            key = shared_key(request)
            if self.shared.get(key) is request:
                del self.shared[key]

    def _service(self, name: bytes, now: float) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, now)
        return service


def shared_key(request: Request) -> tuple[bytes, bytes, int]:
    """Under what a request with a coalescing key is shared: its service, its key, and the
    losses its client said it cost elsewhere (0 for an ordinary request). Only requests
    that claim the same count share: a caller's word never raises another's count, and
    the callers of one shared request that all resend it after a broker's loss, each
    carrying the count that broker told them, still share it at the next."""
    return request.service, request.ck or b"", getattr(request, "claimed", 0)


def body_size(body: list[bytes]) -> int:
    """The bytes of a request's body frames (``bytes`` or ``zmq.Frame``)."""
    return sum(map(len, body))


def same_body(one: list[bytes], other: list[bytes]) -> bool:
    """Whether two request bodies are the same bytes (frames may be ``zmq.Frame``)."""
    return len(one) == len(other) and all(
        len(a) == len(b) and memoryview(a) == memoryview(b)
        for a, b in zip(one, other, strict=True))
