"""Background jobs: run from the durable outbox, retried through DIPS faults, service by service.

Every stored job is run until DIPS answers it for good: a result, or an error that another
try would not change (bad_request, worker_error, worker_timeout, ...). A background job's
result goes nowhere (Gearman gives the caller of a background job nothing); its failure is
logged.

One dead service must not stall the others, so each service has its own queue and its own
``per_service`` slots (jobs in DIPS at once), and a service that no worker offers is
*parked*: its jobs wait here and hold no slot. The door's view of the fleet
(:class:`~mdp_gearman.fleet.Fleet`) decides, and no job starts before the first view: a
service is parked when the brokers list no worker for it (before its first job is sent, or
after a try came back ``unknown_service``, ``expired`` or ``timeout`` and the brokers
confirm it has no worker), and let go when a worker appears (the view is fetched again
every ``PARKED_POLL_S`` while a service is parked). A job for a healthy service starts at
once, whatever else is queued. A try that failed for another passing reason
(``overloaded``; ``timeout`` with workers there, a broker fault) is tried again with
backoff (0.5 s doubling to 30 s), as long as it takes, as gearmand keeps a background job
until a worker takes it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mdp.errors import Expired, Overloaded, Timeout, UnknownService
from mdp.logs import RateLimitedLog
from mdp_gearman.fleet import Fleet
from mdp_gearman.jobs import Job
from mdp_gearman.outbox import Outbox

Outcome = bytes | BaseException

log = logging.getLogger(__name__)

TRANSIENT = (Timeout, Overloaded, Expired, UnknownService)
NO_WORKER = (UnknownService, Expired, Timeout)  # what a service with no worker answers
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
PARKED_POLL_S = 0.25  # how often the fleet is asked again while a service is parked
FLEET_MAX_AGE_S = 1.0  # an older view is fetched again before a new service's first job


def backoff_s(attempts: int) -> float:
    """Seconds before try number ``attempts + 1`` of a job that met a transient error."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))


@dataclass
class ServiceQueue:
    """One service's due jobs (by priority, then age), its jobs in DIPS, and whether no
    worker offers it."""

    due: list[tuple[int, int, Job]] = field(default_factory=list)
    running: int = 0
    parked: bool = False


class BackgroundRunner:
    """Keeps each service's background jobs in DIPS; see the module docstring."""

    def __init__(self, outbox: Outbox, run: Callable[[Job], Awaitable[Outcome]],
                 settle: Callable[[Job, Outcome, bool], None], per_service: int,
                 fleet: Fleet) -> None:
        self.outbox = outbox
        self._run = run  # one try: the result's bytes or the error
        self._settle = settle  # tell the waiters; the flag says the job is done for good
        self.per_service = per_service
        self.fleet = fleet
        self._later: list[tuple[float, int, Job]] = []  # heap by time
        self._queues: dict[str, ServiceQueue] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False  # the door stops: no job starts
        self.held: dict[str, int] = {}  # jobs waiting here per service (admin status)
        self.completed = 0
        self._failures = RateLimitedLog(log)
        self._bugs = RateLimitedLog(log, level=logging.ERROR)
        self._retries = RateLimitedLog(log)  # (a flood of jobs must not flood the log)
        fleet.listeners.append(self._wake.set)

    def schedule(self, job: Job, not_before: float = 0.0) -> None:
        sub = job.submission
        self._seq += 1
        heapq.heappush(self._later, (max(not_before, sub.run_at), self._seq, job))
        self.held[sub.service] = self.held.get(sub.service, 0) + 1
        self._wake.set()

    def parked(self) -> list[str]:
        return sorted(name for name, q in self._queues.items() if q.parked and q.due)

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            self._promote(time.time())
            if self._needs_view():
                self.fleet.refresh()  # not awaited: its answer wakes this loop
            self._start_what_may()
            await self._sleep()

    def _needs_view(self) -> bool:
        """A parked service, or one about to get a first job, wants a fresh view (never
        waited for: a broker that does not answer must not hold up the other services)."""
        age = self.fleet.age_s()
        if age >= PARKED_POLL_S and any(q.parked and q.due for q in self._queues.values()):
            return True
        return age >= FLEET_MAX_AGE_S and any(q.due and not q.running
                                             for q in self._queues.values())

    def _promote(self, now: float) -> None:
        while self._later and self._later[0][0] <= now:
            _, seq, job = heapq.heappop(self._later)
            queue = self._queues.setdefault(job.submission.service, ServiceQueue())
            heapq.heappush(queue.due, (-job.submission.priority, seq, job))

    def _start_what_may(self) -> None:
        if self._draining:
            return
        for service, queue in self._queues.items():
            while queue.due and queue.running < self.per_service:
                offer = self.fleet.offer(service)
                if offer is None:  # no broker has answered yet: wait for the first view
                    return
                queue.parked = not offer.any
                if queue.parked:
                    break
                job = heapq.heappop(queue.due)[2]
                queue.running += 1
                self.held[service] -= 1
                task = asyncio.create_task(self._one(job, queue))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _sleep(self) -> None:
        delay = self._later[0][0] - time.time() if self._later else None
        if self.parked():
            delay = PARKED_POLL_S if delay is None else min(delay, PARKED_POLL_S)
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    async def _one(self, job: Job, queue: ServiceQueue) -> None:
        try:
            job.attempts += 1
            outcome = await self._run(job)
            if isinstance(outcome, TRANSIENT):
                await self._again(job, queue, outcome)
                return
            self._done(job, outcome)
        except Exception as exc:  # a bug: the job ends (failed) rather than hang in the table
            self._bugs(time.monotonic(), "background job %s (%s): the gateway failed: %s",
                       job.handle.decode(), job.submission.service,
                       "".join(traceback.format_exception(exc)).rstrip())
            self._settle(job, exc, True)
        finally:
            queue.running -= 1
            self._wake.set()

    def _done(self, job: Job, outcome: Outcome) -> None:
        """A job DIPS answered for good: out of the outbox, its waiters told."""
        if isinstance(outcome, BaseException):
            self._failures(time.monotonic(), "background job %s (%s) failed: %s",
                           job.handle.decode(), job.submission.service, outcome)
        if job.stored_id is not None:
            self.outbox.remove(job.stored_id)
        self.completed += 1
        self._settle(job, outcome, True)

    async def _again(self, job: Job, queue: ServiceQueue, outcome: BaseException) -> None:
        """A try that another may change: park the service if no worker offers it (the
        job waits, holding nothing), else try again after a backoff."""
        job.running = False  # back in the queue
        self._settle(job, outcome, False)
        if isinstance(outcome, NO_WORKER):
            await self.fleet.fresh(0.0, wait_s=2.0)
            offer = self.fleet.offer(job.submission.service)
            if offer is not None and not offer.any:
                self._retries(time.monotonic(), "background job %s (%s): %s; no worker "
                              "offers it, so its jobs wait", job.handle.decode(),
                              job.submission.service, outcome)
                queue.parked = True
                self.schedule(job)
                return
        delay = backoff_s(job.attempts)
        self._retries(time.monotonic(), "background job %s (%s): %s; trying again in %.1fs",
                      job.handle.decode(), job.submission.service, outcome, delay)
        self.schedule(job, time.time() + delay)

    async def drain(self, timeout_s: float) -> None:
        """The door stops: start no job, and let those in DIPS end (up to ``timeout_s``).
        A job cut while DIPS runs it stays in the outbox and runs again after the restart:
        every graceful restart ran each job then in DIPS twice (16 of 40, measured)."""
        self._draining = True
        if self._tasks and timeout_s > 0:
            log.info("waiting for %d background job(s) in DIPS to finish", len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
