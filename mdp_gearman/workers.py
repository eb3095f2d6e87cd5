"""The worker side of Gearman: a Gearman worker on a door is a DIPS worker of its functions.

:class:`GearmanWorker` is one connection's worker state, without sockets: Gearman packets
in (``on_packet``), Gearman packets out (through ``send``), and a
:class:`~mdp_gearman.proxycore.ProxyCore` that speaks 7/MDP for the worker at every broker
(its actions are carried out by a driver the caller supplies, normally a
:class:`~mdp_gearman.linkdriver.LinkDriver`).

Gearman's cycle, as the door plays the job server:

* ``CAN_DO`` / ``CAN_DO_TIMEOUT`` / ``CANT_DO`` / ``RESET_ABILITIES`` change the worker's
  functions; the door registers them at the brokers when the worker next asks for work
  (``GRAB_JOB*`` or ``PRE_SLEEP``), so a burst of CAN_DOs costs one registration.
* ``GRAB_JOB``, ``GRAB_JOB_UNIQ``, ``GRAB_JOB_ALL``: the next task the brokers gave this
  worker, as ``JOB_ASSIGN`` (or ``JOB_ASSIGN_UNIQ``, as gearmand answers the other two),
  else ``NO_JOB``.
* ``PRE_SLEEP``: the worker sleeps until ``NOOP``. The door sends NOOP the moment a task
  arrives for it (or at once, if one is already waiting), so a lone job costs one
  round trip to the worker, never a poll interval.
* ``WORK_STATUS`` / ``WORK_DATA`` / ``WORK_WARNING`` become DIPS progress;
  ``WORK_COMPLETE`` the reply (its bytes are the result); ``WORK_FAIL`` and
  ``WORK_EXCEPTION`` errors (codes ``gearman_fail`` and ``gearman_exception``, the
  exception's bytes as the message).

A job runs at most its function's CAN_DO_TIMEOUT (or ``--worker-time-limit``); past that the
door answers the caller ``worker_timeout`` and keeps the worker marked busy (it sends BUSY
everywhere) until it reports on that job or asks for another. A worker that has not asked
for a task waiting for it within ``GRAB_GRACE_S`` (woken, or awake between two asks) is
busy out of the door's sight, with another door's job: its waiting tasks go back to the
brokers for an idle worker, and it is BUSY there until it asks again.
When the connection of a worker that holds a job drops, the driver closes its broker
connections at once: the brokers count a lost worker and give its task to another. A worker
that held no job leaves cleanly (DISCONNECT), costing no request a loss.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq

from mdp import protocol as p
from mdp.body import BodyLimits, decode_request
from mdp.errors import BadRequest, WorkerError, WorkerTimeout
from mdp.logs import BurstLog, RateLimitedLog
from mdp.workerstate import LinkMode, Task, Timing
from mdp_gearman import admin, mapping
from mdp_gearman import packets as g
from mdp_gearman.packets import Packet, T
from mdp_gearman.proxycore import NO_TIME_LIMIT_S, ProxyCore

log = logging.getLogger(__name__)

GRAB_GRACE_S = 0.025  # offered a task and silent this long: busy with another door's job
MAX_FUNCTIONS = 64  # per connection
MAX_LINKS = 4096  # broker links of all the door's Gearman workers (each a socket, a monitor)
# a link's file descriptors: its socket's TCP connection and signalling, and its monitor's pair
# (measured: 100 links, 450 descriptors with their 50 Gearman connections)
FDS_PER_LINK = 4
FAIL_CODE = mapping.GEARMAN_FAIL  # WORK_FAIL
EXCEPTION_CODE = mapping.GEARMAN_EXCEPTION  # WORK_EXCEPTION; the message is its bytes
MAX_EXCEPTION_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the brokers' default
ENVELOPE_BYTES = 64 * 1024  # room kept for a reply's frames and meta beside its body

MAX_TIMEOUT_S = 2**32 - 1  # CAN_DO_TIMEOUT: libgearman sends an unsigned 32-bit number
JOB_NOT_FOUND = "JOB_NOT_FOUND"  # gearmand's code for an answer to a job it does not know

GRABS: dict[int, int] = {T.GRAB_JOB: T.JOB_ASSIGN, T.GRAB_JOB_UNIQ: T.JOB_ASSIGN_UNIQ,
         T.GRAB_JOB_ALL: T.JOB_ASSIGN_UNIQ}


class Driver(Protocol):
    """What carries out a core's actions (see :class:`~mdp_gearman.linkdriver.LinkDriver`)."""

    def start(self) -> None: ...

    def pump(self) -> None: ...

    def drain(self) -> None: ...

    def close(self, abrupt: bool) -> None: ...


class LinkBudget:
    """How many broker links the door's Gearman workers may hold in all: each is a ZeroMQ
    socket and its monitor, so a flood of connections registering functions cannot exhaust
    the door's descriptors."""

    def __init__(self, limit: int = MAX_LINKS) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int) -> bool:
        if self.used + count > self.limit:
            return False
        self.used += count
        return True

    def give(self, count: int) -> None:
        self.used = max(0, self.used - count)


@dataclass(frozen=True)
class WorkerSettings:
    """What every Gearman worker of one door shares."""

    brokers: tuple[str, ...]
    time_limit_s: float = 30.0  # a job's limit when its function has no CAN_DO_TIMEOUT
    timing: Timing = field(default_factory=lambda: Timing(
        time_limit_s=NO_TIME_LIMIT_S, reply_gather_s=0.0))
    prefetch: int = 1
    raw_field: str = mapping.DEFAULT_RAW_FIELD
    limits: BodyLimits = BodyLimits()
    meta: dict[str, Any] = field(default_factory=dict)  # host, version for READY
    budget: LinkBudget = field(default_factory=LinkBudget)
    # functions Gearman workers may offer (fnmatch patterns, --worker-functions); none: no
    # Gearman worker is taken, since one serves, and reads, the requests of its functions
    allowed: tuple[str, ...] = ()
    # the brokers' --max-message-bytes: a result, or a job's progress data, past it is
    # answered as the Gearman worker's error rather than sent (a broker would drop the link)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # told each function once a broker has registered a worker of it here (its WELCOME)
    on_offered: Callable[[str], None] | None = None
    # what the workers do wrong, at most ten lines a second (a peer may repeat it at will)
    warn: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))
    # workers registering: a line each in an ordinary fleet, bounded when one churns
    joins: BurstLog = field(default_factory=lambda: BurstLog(log))
    # the jobs the door's Gearman workers hold, by the handle JOB_ASSIGN gave them: a
    # GET_STATUS on that handle is answered from here
    held: dict[bytes, Assignment] = field(default_factory=dict)
    # what the door's Gearman workers did, counted: "late_answers", the answers they sent
    # for jobs the door had given up on (past a time limit), taken without a word to them
    counts: Counter[str] = field(default_factory=Counter)

    def held_unique(self, unique: bytes) -> Assignment | None:
        """The job a Gearman worker here holds whose request carries the unique id
        ``unique`` (its coalescing key: a Gearman client's unique id), if any (GET_STATUS_UNIQUE
        for a job submitted elsewhere: through another door, or by a DIPS client)."""
        for job in self.held.values():
            if job.task.ck == unique:
                return job
        return None
    # answers for jobs a worker does not hold, apart: a flood of them leaves the other lines
    strays: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))


@dataclass
class Assignment:
    """The job a Gearman worker holds."""

    handle: bytes
    task: Task
    function: str
    started_at: float
    limit_s: float
    progress_bytes: int = 0  # WORK_DATA and WORK_WARNING sent on so far
    numerator: int = 0  # its latest WORK_STATUS (GET_STATUS on its handle)
    denominator: int = 0


class GearmanWorker:
    """One connection's worker side; see the module docstring."""

    def __init__(self, settings: WorkerSettings, peer: str, send: Callable[[bytes], None],
                 new_handle: Callable[[], bytes],
                 make_driver: Callable[[ProxyCore, GearmanWorker], Driver]) -> None:
        self.settings = settings
        self.peer = peer
        self.send = send
        self.new_handle = new_handle
        self.make_driver = make_driver
        self.abilities: dict[str, float] = {}  # function -> time limit (0: the door's)
        self.client_id = ""
        self.core: ProxyCore | None = None
        self.driver: Driver | None = None
        self.sleeping = False
        self.offered_at: float | None = None  # since when a task waits for it to ask
        self.assigned: Assignment | None = None
        self.given_up: bytes | None = None  # a job past its limit the worker still runs
        self._announced: set[str] = set()  # functions some broker registered (on_offered)
        self._told_refused: set[int] = set()  # links whose refusal the door logged
        self._told_useless = False  # ERROR registration_refused sent: every link refused
        self.served = 0
        self.late_answers = 0  # answers to jobs the door had given up on (_late)
        self._dirty = False  # its functions may differ from those registered (_sync)

    # --- Gearman packets ---------------------------------------------------------------

    def on_packet(self, packet: Packet, now: float) -> None:
        kind, args = packet.type, packet.args
        if kind in GRABS:
            self._grab(GRABS[kind], now)
        elif kind == T.PRE_SLEEP:
            self._sleep(now)
        elif kind in (T.CAN_DO, T.CAN_DO_TIMEOUT):
            self._can_do(args, now)
            self._dirty = True
        elif kind == T.CANT_DO:
            self.abilities.pop(args[0].decode("utf-8", "replace"), None)
            self._dirty = True
        elif kind == T.RESET_ABILITIES:
            self.abilities.clear()
            self._dirty = True
        elif kind in (T.WORK_STATUS, T.WORK_DATA, T.WORK_WARNING):
            self._progress(kind, args, now)
        elif kind in (T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION):
            self._finish(kind, args, now)
        # ALL_YOURS: nothing to do (gearmand ignores it too)
        self._offer(now)
        self._pump()

    def _can_do(self, args: tuple[bytes, ...], now: float) -> None:
        function = args[0]
        if not p.valid_service(function) or function.startswith(p.MMI_PREFIX):
            self.send(g.error("bad_function", f"function {function[:60]!r} is not a valid "
                              "DIPS service name (1-100 of A-Z a-z 0-9 . _ -, not mmi.*)"))
            return
        if not any(fnmatch.fnmatchcase(function.decode(), allowed)
                   for allowed in self.settings.allowed):
            self.settings.warn(time.monotonic(), "Gearman worker %s refused for %r: %s",
                               self.peer, function.decode(), "this door takes no Gearman "
                               "workers" if not self.settings.allowed else
                               "not in --worker-functions")
            self.send(g.error("function_not_allowed", f"this door takes no Gearman worker "
                              f"for {function.decode()!r} (its --worker-functions: "
                              f"{' '.join(self.settings.allowed) or 'none'})"))
            return
        limit = 0.0
        if len(args) > 1:
            timeout = _timeout(args[1])
            if timeout is None:
                self._bad_timeout(function.decode(), args[1])
                return
            limit = float(timeout)
        name = function.decode()
        if name not in self.abilities and len(self.abilities) >= MAX_FUNCTIONS:
            self.send(g.error("too_many_functions", f"at most {MAX_FUNCTIONS} functions"))
            return
        self.abilities[name] = limit

    def _assign(self, job: Assignment | None) -> None:
        """The one place the job in hand changes; the door's index of the jobs its workers
        hold (GET_STATUS on a worker's handle) follows it."""
        held = self.settings.held
        if self.assigned is not None:
            held.pop(self.assigned.handle, None)
        self.assigned = job
        if job is not None:
            held[job.handle] = job

    def _bad_timeout(self, function: str, text: bytes) -> None:
        """CAN_DO_TIMEOUT with a timeout that is no whole number of seconds from 0 to
        MAX_TIMEOUT_S: ERROR ``bad_timeout`` naming it, and the function is not taken (nor
        changed, if it was): before, it silently became the door's limit. gearmand takes
        such a timeout without a word (``atoi``: "abc" is 0, none) and dies of a
        20-digit one (checked with gearmand 1.1.20)."""
        shown = admin.printable(text, 24)
        self.settings.warn(time.monotonic(), "Gearman worker %s: CAN_DO_TIMEOUT for %r with "
                           "timeout %s refused", self.peer, function, shown)
        self.send(g.error("bad_timeout", f"CAN_DO_TIMEOUT for {function!r}: the timeout "
                          f"{shown!r} is not a whole number of seconds from 0 to "
                          f"{MAX_TIMEOUT_S} (0: the door's limit); the function is not "
                          "taken"))

    def _grab(self, reply: int, now: float) -> None:
        self._sync(now)
        self.sleeping = False
        self.offered_at = None
        self.given_up = None  # it asks for work: it has let the old job go
        if self.assigned is not None:  # one job at a time
            self.send(g.build(T.NO_JOB))
            return
        while self.core is not None and (task := self.core.begin(now)) is not None:
            function = self.core.function_of(task)
            try:
                workload = self._workload(task)
            except BadRequest as exc:
                self.core.task_done(p.error_body(exc), now)
                continue
            handle = self.new_handle()
            limit = self.abilities.get(function) or self.settings.time_limit_s
            self._assign(Assignment(handle, task, function, now, limit))
            if reply == T.JOB_ASSIGN:
                self.send(g.build(T.JOB_ASSIGN, handle, function.encode(), workload))
            else:
                # the Gearman client's unique id where the job came through a door; else
                # (a DIPS client that gave no coalescing key) one of the door's own
                unique = task.ck or str(uuid.uuid4()).encode()
                if b"\0" in unique:  # NUL ends a field: it would split the workload
                    unique = hashlib.sha256(unique).hexdigest().encode()
                self.send(g.build(T.JOB_ASSIGN_UNIQ, handle, function.encode(), unique,
                                  workload))
            self.core.progress(task, "status", 0, 0, None, now)  # says: a worker has it
            return
        self.send(g.build(T.NO_JOB))

    def _sleep(self, now: float) -> None:
        """PRE_SLEEP: the worker runs nothing and waits for NOOP. If no task waits for it,
        every broker told BUSY hears FREE now: a worker that last asked for work at another
        door (that door died under it, say) asks here only after a NOOP, and a broker that
        thinks it busy would never send the task that brings the NOOP."""
        self._sync(now)
        self.sleeping = True
        if self.assigned is None:
            self.given_up = None
            if self.core is not None and not self.core.waiting:
                self.core.begin(now)  # nothing to start: it only says FREE where it owes it

    def _workload(self, task: Task) -> bytes:
        request = decode_request(task.body, self.settings.limits)
        return mapping.gearman_workload(request, self.settings.raw_field)

    def _progress(self, kind: int, args: tuple[bytes, ...], now: float) -> None:
        job = self.assigned
        if job is None or args[0] != job.handle or self.core is None:
            if args[0] != self.given_up:  # (the job given up on still runs: it may report)
                self._stray(kind, args[0])
            return
        if kind == T.WORK_STATUS:
            num, den = _count(args[1]), _count(args[2])
            if num is not None and den is not None:
                job.numerator, job.denominator = num, den
                self.core.progress(job.task, "status", num, den, None, now)
        else:
            job.progress_bytes += len(args[1])
            if job.progress_bytes > self.settings.max_message_bytes - ENVELOPE_BYTES:
                self._give_up(job, now, WorkerError(
                    f"the Gearman worker sent more than {job.progress_bytes} bytes of "
                    "WORK_DATA and WORK_WARNING for one job; the door passes on at most "
                    f"{self.settings.max_message_bytes - ENVELOPE_BYTES} (the brokers' "
                    "--max-message-bytes)", code="bad_reply"))
                return
            self.core.progress(job.task, "data" if kind == T.WORK_DATA else "warning", None,
                               None, args[1], now)

    def _finish(self, kind: int, args: tuple[bytes, ...], now: float) -> None:
        job = self.assigned
        if job is None or args[0] != job.handle or self.core is None:
            if args[0] == self.given_up:
                self._late(kind, args[0])  # it will GRAB next
            else:
                self._stray(kind, args[0])
            return
        if kind == T.WORK_COMPLETE and len(args[1]) > (
                self.settings.max_message_bytes - ENVELOPE_BYTES):
            self.settings.warn(time.monotonic(), "Gearman worker %s: a %d-byte result for %s "
                               "is over the brokers' limit", self.peer, len(args[1]),
                               job.function)
            body = p.error_body(WorkerError(
                f"the Gearman worker's result is {len(args[1])} bytes; the door passes on at "
                f"most {self.settings.max_message_bytes - ENVELOPE_BYTES} (the brokers' "
                "--max-message-bytes)", code="bad_reply"))
        elif kind == T.WORK_COMPLETE:
            body = p.result_body(args[1])
        elif kind == T.WORK_FAIL:
            body = p.error_body(WorkerError("the Gearman worker failed the job (WORK_FAIL)",
                                            code=FAIL_CODE))
        else:
            message = args[1][:MAX_EXCEPTION_BYTES].decode("utf-8", "replace")
            body = p.error_body(WorkerError(message, code=EXCEPTION_CODE))
        self._assign(None)
        self.served += 1
        self.core.task_done(body, now)

    def _late(self, kind: int, handle: bytes) -> None:
        """The answer to the job the door gave up on (its caller had a worker_timeout, say):
        taken without a word to the worker (see :meth:`_stray`), counted, and logged once
        (a worker gives at most one such answer per job given up on)."""
        self.given_up = None
        self.late_answers += 1
        self.settings.counts["late_answers"] += 1
        log.info("Gearman worker %s sent %s for job %s after the door gave up on it; "
                 "dropped (its caller was answered already)", self.peer, g.type_name(kind),
                 admin.printable(handle))

    def _stray(self, kind: int, handle: bytes) -> None:
        """An answer for a job this worker does not hold (never given it, another worker's,
        or answered already): ERROR ``JOB_NOT_FOUND``, as gearmand answers it, naming the
        handle; the job in hand, if any, and every other job go on untouched. (The job
        the door gave up on past its time limit is not a stray: the worker still runs it,
        and its late answer is taken in silence, so that a PHP worker, whose ``work()``
        ends at an unexpected ERROR, serves on.)"""
        shown = admin.printable(handle)
        self.settings.strays(time.monotonic(), "Gearman worker %s sent %s for job %s, which it "
                             "does not hold; answered JOB_NOT_FOUND", self.peer,
                             g.type_name(kind), shown)
        self.send(g.error(JOB_NOT_FOUND, f"{g.type_name(kind)}: job {shown} not found (this "
                          "worker does not hold it)"))

    # --- registration ------------------------------------------------------------------

    def _sync(self, now: float) -> None:
        """Register the worker's current functions, if they changed (looked at only after
        a CAN_DO, CANT_DO or RESET_ABILITIES, or a registration that could not be made:
        not at each of its asks for work)."""
        if not self._dirty:
            return
        functions = tuple(sorted(self.abilities))
        if self.core is not None and self.core.functions == functions:
            self._dirty = False
            return
        if self.assigned is not None:
            return  # after the job in hand
        self._dirty = False
        self._retire()
        self._announced = set()
        self._told_refused = set()
        self._told_useless = False
        if functions and not self.settings.budget.take(len(functions) * len(
                self.settings.brokers)):
            self.settings.warn(time.monotonic(), "Gearman worker %s not registered: the door "
                               "holds %d broker links already", self.peer,
                               self.settings.budget.used)
            self.send(g.error("too_many_workers", "the door has too many Gearman workers"))
            self._dirty = True  # asked again, it tries again
        elif functions:
            meta = {**self.settings.meta, "host": self.peer}
            self.core = ProxyCore(functions, self.settings.brokers, meta, self.settings.timing,
                                  self.settings.prefetch)
            try:
                self.driver = self.make_driver(self.core, self)
                self.driver.start()
            except (zmq.ZMQError, OSError) as exc:  # out of sockets or descriptors
                self.settings.warn(time.monotonic(), "Gearman worker %s not registered: "
                                   "cannot open its broker links: %s", self.peer, exc)
                self._retire(abrupt=True)
                self.abilities.clear()  # asked again, it registers afresh
                self.send(g.error("too_many_workers", "the door cannot open broker links "
                                  f"for this worker now: {exc}"))
                return
            self.settings.joins(time.monotonic(), "registered", "Gearman worker %s%s "
                                "registered for %s", self.peer, f" ({self.client_id})"
                                if self.client_id else "", " ".join(functions))

    def _retire(self, abrupt: bool = False) -> None:
        if self.driver is not None:
            self.driver.close(abrupt)
        if self.core is not None:
            self.settings.budget.give(len(self.core.links))
        self.core = self.driver = None

    def drain(self) -> None:
        """The door stops: take no new task, hand back what waits; the job in hand may
        still finish."""
        if self.driver is not None:
            self.driver.drain()

    @property
    def busy(self) -> bool:
        return self.assigned is not None

    def close(self) -> None:
        """The connection dropped. A worker that held a job is a lost worker: its broker
        links go at once, and the brokers give its task to another worker and count the
        loss. One that held none leaves: the tasks that only waited here go back and every
        broker is told DISCONNECT, so a worker attached to two doors, which is two
        registrations, costs a request one loss when it dies, not two."""
        job = self.assigned
        self._assign(None)
        if job is not None:
            self.settings.warn(time.monotonic(), "Gearman worker %s left while running %s (%s); "
                               "the brokers give it to another worker", self.peer,
                               job.handle.decode(), job.function)
        self._retire(abrupt=job is not None)

    # --- the driver's callbacks ----------------------------------------------------------

    def on_input(self, now: float) -> None:
        """The core took in messages or ran its timers: offer the worker what waits, check
        the limits."""
        self._announce()
        if self.core is not None and (self.core.refused or self._told_refused):
            self._tell_refusals(self.core)
        job = self.assigned
        if job is not None and now >= job.started_at + job.limit_s:
            self._give_up(job, now)
        if self.offered_at is not None and now >= self.offered_at + GRAB_GRACE_S:
            self.offered_at = None
            if self.assigned is None and self.core is not None and self.core.waiting:
                log.debug("Gearman worker %s did not ask for its task in %gs; busy elsewhere",
                          self.peer, GRAB_GRACE_S)
                self.core.busy_elsewhere(now)
        self._offer(now)

    def next_deadline(self, now: float) -> float:
        deadline = now + 3600.0
        if self.assigned is not None:
            deadline = min(deadline, self.assigned.started_at + self.assigned.limit_s)
        if self.offered_at is not None:
            deadline = min(deadline, self.offered_at + GRAB_GRACE_S)
        return deadline

    def _announce(self) -> None:
        """Tell the door of each function a broker has registered here (so its background
        jobs, waiting for a worker, go at once rather than at the next look at the fleet)."""
        core, notify = self.core, self.settings.on_offered
        if core is None or notify is None or len(self._announced) == len(core.functions):
            return
        for link, function in zip(core.links, core.link_functions, strict=True):
            if function not in self._announced and link.mode is LinkMode.DIPS:
                self._announced.add(function)
                notify(function)

    def _tell_refusals(self, core: ProxyCore) -> None:
        """Log each function a broker refused to register (its ``--max-services`` or
        ``--max-workers`` is reached: that broker gives it no jobs), once until that broker
        takes it. The worker itself is told (ERROR ``registration_refused``) only when every
        broker refused every function it offers, so that it would get no job at all through
        this door: a Gearman worker's ``work()`` ends at any ERROR (PHP's, libgearman's), which
        must not stop the functions that other brokers serve."""
        refused = core.refused
        self._told_refused &= refused.keys()
        for i, reason in refused.items():
            if i in self._told_refused:
                continue
            self._told_refused.add(i)
            function, endpoint = core.link_functions[i], core.links[i].endpoint
            self.settings.warn(time.monotonic(), "Gearman worker %s: broker %s refused to "
                               "register it for %r: %s", self.peer, endpoint, function, reason)
        useless = bool(refused) and len(refused) == len(core.links)
        if useless and not self._told_useless:
            reasons = sorted({f"{core.link_functions[i]!r} at {core.links[i].endpoint}: "
                              f"{reason}" for i, reason in refused.items()})
            self.send(g.error("registration_refused", "every broker refused to register this "
                              f"worker ({'; '.join(reasons)}); the door tries again, every "
                              f"{core.timing.reconnect_max_s:g} s at most"))
        self._told_useless = useless

    def _offer(self, now: float) -> None:
        """A task waits for a worker that holds none: wake it if it sleeps, and start the
        clock on its asking (it may be busy with another door's job, asleep or not)."""
        if self.assigned is not None or self.core is None or not self.core.waiting:
            self.offered_at = None
            return
        if self.offered_at is None:
            self.offered_at = now
        if self.sleeping:
            self.sleeping = False
            self.send(g.build(T.NOOP))

    def _give_up(self, job: Assignment, now: float, why: WorkerError | None = None) -> None:
        """Answer the job's caller (``why``, else worker_timeout) while the Gearman worker
        still runs it, and give it no work until it reports on that job."""
        error = why or WorkerTimeout(f"the Gearman worker ran {job.function!r} past its "
                                     f"{job.limit_s:g}s time limit")
        self.settings.warn(time.monotonic(), "Gearman worker %s: %s (%s); answering %s and "
                           "giving it no work until it reports on it", self.peer, error,
                           job.handle.decode(), error.code)
        self._assign(None)
        self.given_up = job.handle
        if self.core is not None:
            self.core.task_done(p.error_body(error), now)
            self.core.busy_elsewhere(now)

    def _pump(self) -> None:
        if self.driver is not None:
            self.driver.pump()

    @property
    def functions(self) -> list[str]:
        return sorted(self.abilities)


def _timeout(text: bytes) -> int | None:
    """CAN_DO_TIMEOUT's seconds: decimal digits (spaces or a NUL around them are let
    pass), at most MAX_TIMEOUT_S; else None."""
    text = text.strip(b"\0 ")
    if not text.isdigit() or len(text) > 10 or int(text) > MAX_TIMEOUT_S:
        return None
    return int(text)


def _count(text: bytes) -> int | None:
    """A WORK_STATUS number: a non-negative decimal below 2**63, else None."""
    text = text.strip(b"\0 ")
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)
