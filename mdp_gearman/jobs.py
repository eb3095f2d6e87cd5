"""The gateway's jobs, sans I/O: submissions, handles, coalescing, status.

Nothing here touches a socket or a clock; the server drives it. A *waiter* is whatever the
server uses for a client connection (anything hashable).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mdp import protocol as p
from mdp.errors import BadRequest
from mdp_gearman.packets import Packet, T

HIGH, NORMAL, LOW = 1, 0, -1

# packet type -> (priority, background)
SUBMISSIONS: dict[int, tuple[int, bool]] = {
    T.SUBMIT_JOB: (NORMAL, False),
    T.SUBMIT_JOB_HIGH: (HIGH, False),
    T.SUBMIT_JOB_LOW: (LOW, False),
    T.SUBMIT_JOB_BG: (NORMAL, True),
    T.SUBMIT_JOB_HIGH_BG: (HIGH, True),
    T.SUBMIT_JOB_LOW_BG: (LOW, True),
    T.SUBMIT_JOB_EPOCH: (NORMAL, True),
}
MAX_UNIQUE_BYTES = 64  # libgearman's GEARMAN_MAX_UNIQUE_SIZE
MAX_EPOCH_AHEAD_S = 366 * 24 * 3600
_FUNCTIONS: dict[bytes, str] = {}  # function names already checked (clients use a few, often)
MAX_KNOWN_FUNCTIONS = 1024


@dataclass(frozen=True, slots=True)
class Submission:
    service: str
    unique: bytes
    workload: bytes
    priority: int
    background: bool
    run_at: float = 0.0  # SUBMIT_JOB_EPOCH: not before this Unix time


def parse_submission(packet: Packet, now_epoch: float) -> Submission:
    """A SUBMIT_JOB* packet as a Submission; BadRequest naming what is wrong."""
    priority, background = SUBMISSIONS[packet.type]
    function, unique = packet.args[0], packet.args[1]
    run_at = 0.0
    if packet.type == T.SUBMIT_JOB_EPOCH:
        epoch = packet.args[2]
        if not epoch.isdigit() or len(epoch) > 12:
            raise BadRequest(f"SUBMIT_JOB_EPOCH: bad epoch {epoch[:20]!r}", field="epoch")
        run_at = float(int(epoch))
        if run_at > now_epoch + MAX_EPOCH_AHEAD_S:
            raise BadRequest("SUBMIT_JOB_EPOCH: more than a year ahead", field="epoch")
    service = _FUNCTIONS.get(function)
    if service is None:
        service = _service(function)
    if len(unique) > MAX_UNIQUE_BYTES:
        raise BadRequest(f"unique id of {len(unique)} bytes; at most {MAX_UNIQUE_BYTES}",
                         field="unique")
    workload = packet.args[-1]
    if unique == b"-":  # gearmand: "-" means "the workload is the unique id"
        unique = workload
    return Submission(service, unique, workload, priority, background, run_at)


def _service(function: bytes) -> str:
    """The DIPS service of a Gearman function name; BadRequest if it cannot be one."""
    if not p.valid_service(function) or function.startswith(p.MMI_PREFIX):
        raise BadRequest(f"function {function[:60]!r} is not a valid DIPS service name "
                         "(1-100 of A-Z a-z 0-9 . _ -, not mmi.*)", field="function")
    service = function.decode()
    if len(_FUNCTIONS) < MAX_KNOWN_FUNCTIONS:
        _FUNCTIONS[function] = service
    return service


def unique_key(unique: bytes) -> bytes | None:
    """The coalescing key a job's unique id gives its DIPS request, so that a Gearman
    worker behind any door sees the id (``$job->unique()``) and identical jobs with the same
    id in flight through two doors run once; None where the id cannot be a key (none given,
    or ``-`` made a workload longer than a key the id)."""
    return unique if 0 < len(unique) <= p.MAX_CK_BYTES else None


class Job:
    """One job in flight: its handle, what was submitted, who waits for it, how far it is.

    A plain slotted class (each job's path creates one): ``key`` is its (function, unique
    id) for coalescing, None without a unique id, worked out once."""

    __slots__ = ("handle", "submission", "waiters", "running", "numerator", "denominator",
                 "stored_id", "attempts", "key")

    def __init__(self, handle: bytes, submission: Submission,
                 stored_id: int | None = None) -> None:
        self.handle = handle
        self.submission = submission
        self.waiters: list[Any] = []  # foreground clients, in arrival order
        self.running = False  # a worker has it (it reported progress); not merely sent
        self.numerator = 0  # the latest WORK_STATUS
        self.denominator = 0
        self.stored_id = stored_id  # row in the outbox (background jobs)
        self.attempts = 0
        unique = submission.unique
        self.key: tuple[str, bytes] | None = (submission.service, unique) if unique else None

    def __repr__(self) -> str:
        return (f"Job({self.handle!r}, {self.submission!r}, waiters={len(self.waiters)}, "
                f"running={self.running})")


class JobTable:
    """Jobs in flight by handle and by (function, unique id).

    Handles have gearmand's shape, ``H:HOST:NUMBER``. A background job's number is twice its
    row in the outbox, so its handle outlives a restart; every other handle (foreground
    jobs, jobs assigned to Gearman workers) takes the next odd number.
    """

    def __init__(self, handle_prefix: bytes) -> None:
        self.prefix = handle_prefix
        self.by_handle: dict[bytes, Job] = {}
        self.by_unique: dict[tuple[str, bytes], Job] = {}
        self._numbers = itertools.count(1, 2)

    def new_handle(self) -> bytes:
        return self.prefix + b"%d" % next(self._numbers)

    def coalesce(self, submission: Submission) -> Job | None:
        """The job in flight this submission joins, if any (Gearman's unique id rule).

        A background submission joins only a background job: joining a foreground one
        would make it as mortal as the gateway process.
        """
        if not submission.unique:
            return None
        job = self.by_unique.get((submission.service, submission.unique))
        if job is None or (submission.background and not job.submission.background):
            return None
        return job

    def add(self, submission: Submission, stored_id: int | None = None) -> Job:
        if stored_id is None:
            handle = self.prefix + b"%d" % next(self._numbers)  # (new_handle, inline)
        else:
            handle = self.prefix + b"%d" % (2 * stored_id)
        job = Job(handle, submission, stored_id)
        self.by_handle[handle] = job
        key = job.key
        if key is not None and (key not in self.by_unique or submission.background):
            self.by_unique[key] = job
        return job

    def finish(self, job: Job) -> list[Any]:
        """Forget a finished job; its waiters, to be told."""
        self.by_handle.pop(job.handle, None)
        key = job.key
        if key is not None and self.by_unique.get(key) is job:
            del self.by_unique[key]
        waiters, job.waiters = job.waiters, []
        return waiters

    def drop_waiter(self, waiter: Any, jobs: Iterable[Job]) -> list[Job]:
        """A client left: remove it from ``jobs`` (those it waited for); the foreground
        jobs nobody waits for now."""
        orphans = []
        for job in list(jobs):
            if waiter in job.waiters:
                job.waiters = [w for w in job.waiters if w is not waiter]
                if not job.waiters and not job.submission.background:
                    orphans.append(job)
        return orphans

    def status_unique(self, unique: bytes) -> tuple[Job | None, int]:
        """GET_STATUS_UNIQUE: the job with this unique id (any function) and its waiters."""
        for (_, job_unique), job in self.by_unique.items():
            if job_unique == unique:
                return job, len(job.waiters)
        return None, 0
