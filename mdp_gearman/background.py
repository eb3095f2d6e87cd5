"""Background jobs: run from the durable outbox, retried through DIPS faults.

Every stored job is run until DIPS answers it for good: a result, or an error that another
try would not change (bad_request, worker_error, worker_timeout, ...). A ``timeout``,
``overloaded``, ``expired`` or ``unknown_service`` answer (no broker reachable, a full
queue, no worker yet) is tried again with backoff, for as long as it takes, as gearmand keeps
a background job until a worker takes it. A background job's result goes nowhere (Gearman
gives the caller of a background job nothing); its failure is logged.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

from mdp.errors import Expired, Overloaded, Timeout, UnknownService
from mdp_gearman.jobs import Job
from mdp_gearman.outbox import Outbox

Outcome = bytes | BaseException

log = logging.getLogger(__name__)

TRANSIENT = (Timeout, Overloaded, Expired, UnknownService)
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


def backoff_s(attempts: int) -> float:
    """Seconds before try number ``attempts + 1`` of a job that met a transient error."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1))


class BackgroundRunner:
    """Keeps up to ``concurrency`` background jobs in DIPS, highest priority first."""

    def __init__(self, outbox: Outbox, run: Callable[[Job], Awaitable[Outcome]],
                 settle: Callable[[Job, Outcome, bool], None], concurrency: int) -> None:
        self.outbox = outbox
        self._run = run  # one try: the result's bytes or the error
        self._settle = settle  # tell the waiters; the flag says the job is done for good
        self._slots = asyncio.Semaphore(concurrency)
        self._later: list[tuple[float, int, Job]] = []  # heap by time
        self._due: list[tuple[int, int, Job]] = []  # heap by priority, then age
        self._seq = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.held: dict[str, int] = {}  # jobs waiting here per service (admin status)
        self.completed = 0

    def schedule(self, job: Job, not_before: float = 0.0) -> None:
        sub = job.submission
        self._seq += 1
        heapq.heappush(self._later, (max(not_before, sub.run_at), self._seq, job))
        self.held[sub.service] = self.held.get(sub.service, 0) + 1
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            self._promote(time.time())
            if not self._due:
                delay = self._later[0][0] - time.time() if self._later else None
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            await self._slots.acquire()
            self._promote(time.time())  # a higher priority may have come in meanwhile
            job = heapq.heappop(self._due)[2]
            self.held[job.submission.service] -= 1
            task = asyncio.create_task(self._one(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _promote(self, now: float) -> None:
        while self._later and self._later[0][0] <= now:
            _, seq, job = heapq.heappop(self._later)
            heapq.heappush(self._due, (-job.submission.priority, seq, job))

    async def _one(self, job: Job) -> None:
        try:
            job.attempts += 1
            outcome = await self._run(job)
            if isinstance(outcome, TRANSIENT):
                job.running = False  # back in the queue
                delay = backoff_s(job.attempts)
                log.info("background job %s (%s): %s; trying again in %.1fs",
                         job.handle.decode(), job.submission.service, outcome, delay)
                self._settle(job, outcome, False)
                self.schedule(job, time.time() + delay)
                return
            if isinstance(outcome, BaseException):
                log.warning("background job %s (%s) failed: %s", job.handle.decode(),
                            job.submission.service, outcome)
            if job.stored_id is not None:
                self.outbox.remove(job.stored_id)
            self.completed += 1
            self._settle(job, outcome, True)
        finally:
            self._slots.release()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
