"""``mdp-gearman``: Gearman's client, worker and admin protocols in front of DIPS (asyncio).

Each connection is a :class:`~mdp_gearman.connection.Connection` (an ``asyncio.Protocol``
around the sans-I/O :class:`~mdp_gearman.packets.Decoder`) that hands its events to the
:class:`Gateway` here; the jobs live in a :class:`~mdp_gearman.jobs.JobTable`;
DIPS is reached through :class:`~mdp_gearman.dips.Dips`. A connection that sends worker
packets gets a :class:`~mdp_gearman.workers.GearmanWorker`, which makes it a DIPS worker of
its functions at every broker. docs/GEARMAN.md has the mapping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Sequence
from typing import Any

import zmq

from mdp import fdlimit
from mdp.errors import BadRequest, ConfigError, RequestError, Timeout, UnknownService
from mdp.eventloop import loop_factory
from mdp.keys import CurveConfig
from mdp.logs import LOG_FORMAT, RateLimitedLog, loop_errors
from mdp.status import BrokerStatus
from mdp.version import code_version
from mdp.workerstate import Timing
from mdp_gearman import admin, mapping
from mdp_gearman import packets as g
from mdp_gearman.background import BackgroundRunner, Outcome
from mdp_gearman.config import GatewayConfig, parse_args
from mdp_gearman.connection import Connection
from mdp_gearman.dips import Dips, DipsCall
from mdp_gearman.fleet import GEARMAN_WORKER_VERSION, Fleet
from mdp_gearman.inflight import InflightBudget
from mdp_gearman.jobs import (
    SUBMISSIONS,
    Job,
    JobTable,
    Submission,
    parse_submission,
    unique_key,
)
from mdp_gearman.linkdriver import LinkDriver
from mdp_gearman.outbox import Outbox, StoredJob
from mdp_gearman.packets import T
from mdp_gearman.proxycore import NO_TIME_LIMIT_S, ProxyCore
from mdp_gearman.slots import PrioritySlots
from mdp_gearman.workers import (
    FDS_PER_LINK,
    MAX_LINKS,
    GearmanWorker,
    LinkBudget,
    WorkerSettings,
)

log = logging.getLogger(__name__)

STATUS_CACHE_S = 0.5  # admin status: a fresher view of the brokers is fetched
FLEET_MAX_AGE_S = 1.0  # a job that needs to know who offers its service: the oldest view
FLEET_WAIT_S = 0.2  # ... and the longest it waits for a fresher one
FLEET_AHEAD_S = 0.25  # ... fetched again, with no job waiting, this long before that age
MIN_TRY_S = 0.05  # a foreground job with less time left is not tried again


class Gateway:
    """The jobs of every connection, and their way into DIPS."""

    def __init__(self, config: GatewayConfig, dips: Dips, outbox: Outbox | None, *,
                 max_links: int = MAX_LINKS) -> None:
        self.config = config
        self.dips = dips
        self.outbox = outbox
        self.connections: set[Connection] = set()
        host = socket.gethostname().encode("ascii", "replace")[:40]
        self.table = JobTable(b"H:" + host + b":")
        self.limits = mapping.WorkloadLimits(raw_field=config.raw_field)
        self._slots = PrioritySlots(config.concurrency)
        self._tasks: dict[Job, asyncio.Task[None]] = {}  # foreground jobs that wait
        self._calls: dict[Job, DipsCall] = {}  # ... and those that run with no task
        self._calls_over: asyncio.Future[None] | None = None  # close() waits: none left
        self._spawned: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self.fleet = Fleet(dips.broker_status)
        self._failures = RateLimitedLog(log)  # jobs that failed
        self._waits = RateLimitedLog(log)  # jobs for a service nobody offers
        # the gateway's own failures, with tracebacks
        self._bugs = RateLimitedLog(log, level=logging.ERROR)
        # a peer's bad input, each kind its own limit, so that a flood of one kind leaves
        # the first lines of the others in the log
        self._peer_logs: dict[str, RateLimitedLog] = {}
        self.inflight = InflightBudget(config.max_inflight_bytes)
        self.stopping = False  # SIGTERM: no new foreground job; those in flight finish
        # the loop it runs on, once known (asyncio.get_running_loop() costs a getpid()
        # system call on each job's path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.runner: BackgroundRunner | None = None
        self.zmq = zmq.Context()
        # a link is three sockets: its DEALER, and its monitor's pair of PAIR sockets
        self.zmq.set(zmq.MAX_SOCKETS, 3 * max_links + 64)
        self.worker_settings = WorkerSettings(
            tuple(config.brokers), config.worker_time_limit_s,
            Timing(config.heartbeat_interval_s, time_limit_s=NO_TIME_LIMIT_S, reply_gather_s=0,
                   link_floor=config.link_floor),
            prefetch=config.worker_prefetch, raw_field=config.raw_field,
            meta={"version": f"{GEARMAN_WORKER_VERSION} {code_version()}"},
            on_offered=self.fleet.offered, budget=LinkBudget(max_links),
            allowed=tuple(config.worker_functions), max_message_bytes=config.max_message_bytes)
        self._curve = (CurveConfig.from_files(config.curve_secret, config.broker_key)
                       if config.curve_secret and config.broker_key else None)
        # the Gearman workers' links are workers: under CURVE, a worker key of their own
        self._worker_curve = (CurveConfig.from_files(config.worker_secret, config.broker_key)
                              if config.worker_secret and config.broker_key else None)
        if outbox is not None:
            self.runner = BackgroundRunner(outbox, self._attempt, self._settle,
                                           config.background_concurrency, self.fleet)

    async def start(self) -> list[tuple[str, int]]:
        """Listen on every address; returns them with the ports actually bound."""
        loop = self._loop = asyncio.get_running_loop()
        bound = []
        for host, port in self.config.listen:
            server = await loop.create_server(lambda: Connection(self), host, port,
                                              reuse_address=True, backlog=512)
            self._servers.append(server)
            bound += [s.getsockname()[:2] for s in server.sockets]
        self.fleet.refresh()  # know who offers what before the first job needs it
        if self.runner is not None and self.outbox is not None:
            for stored in self.outbox.pending():
                sub = parse_submission_stored(stored)
                self.runner.schedule(self.table.add(sub, stored.id))
            self.spawn(self.runner.run_forever())
        return bound

    async def close(self) -> None:
        """Stop listening and take no new foreground job (``stopping``); let every
        foreground job in flight, the background jobs in DIPS and the jobs Gearman workers
        hold finish (up to --timeout), the workers' other tasks go back to the brokers;
        close."""
        self.stopping = True
        for server in self._servers:
            server.close()
        workers = [c.worker for c in self.connections if c.worker is not None]
        for worker in workers:
            worker.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        if self._tasks or self._calls:
            log.info("waiting for %d foreground job(s) to finish",
                     len(self._tasks) + len(self._calls))
        # (a job that joined one in flight is answered with it; none starts meanwhile; a
        # job without a task may go on in one: it waits for a worker)
        while (self._tasks or self._calls) and (left := deadline - loop.time()) > 0:
            waits: list[asyncio.Future[Any]] = list(self._tasks.values())
            if self._calls:
                self._calls_over = loop.create_future()
                waits.append(self._calls_over)
            await asyncio.wait(waits, timeout=left)
        if self.runner is not None:
            await self.runner.drain(deadline - loop.time())
        await self._workers_idle(workers, self.config.timeout_s)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()  # after what is buffered for it
            if connection.worker is not None:
                connection.worker.close()
        for job in list(self._calls):
            self._drop_call(job)
        for task in [*self._tasks.values(), *self._spawned]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *self._spawned, return_exceptions=True)
        if self.runner is not None:
            await self.runner.close()
        self.zmq.destroy(linger=0)

    async def _workers_idle(self, workers: list[GearmanWorker], timeout_s: float) -> None:
        """Wait (polling, bounded) until no Gearman worker holds a job."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(w.busy for w in workers) and loop.time() < deadline:
            await asyncio.sleep(0.05)  # a bounded wait for peers' replies, not a sync

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # --- events -----------------------------------------------------------------------

    def on_event(self, conn: Connection, event: g.Event) -> None:
        if type(event) is g.Packet and event.type in SUBMISSIONS:  # (first: every job's)
            self.submit(conn, event)
        elif isinstance(event, g.AdminLine):
            conn.admin_line(event.text)
        elif isinstance(event, g.BadPacket):
            self.warn_peer("bad_packet", "from %s: %s", conn.peer, event.reason)
            conn.send(g.error("bad_packet", event.reason))
        elif event.type in g.WORKER_REQUESTS:
            loop = self._loop or asyncio.get_running_loop()
            conn.worker_side().on_packet(event, loop.time())
        else:
            self.on_request(conn, event)

    def new_worker(self, conn: Connection) -> GearmanWorker:
        """The worker side of a connection (see mdp_gearman.workers)."""
        return GearmanWorker(self.worker_settings, conn.peer, conn.send, self.table.new_handle,
                             self._driver)

    def _driver(self, core: ProxyCore, owner: GearmanWorker) -> LinkDriver:
        return LinkDriver(core, self.zmq, owner, curve=self._worker_curve)

    def on_request(self, conn: Connection, packet: g.Packet) -> None:
        kind, args = packet.type, packet.args
        if kind == T.ECHO_REQ:
            conn.send(g.build(T.ECHO_RES, args[0]))
        elif kind == T.GET_STATUS:
            job = self.table.by_handle.get(args[0])
            held = self.worker_settings.held.get(args[0]) if job is None else None
            fields = (_status_fields(job) if held is None else  # a handle a worker here holds
                      (b"1", b"1", b"%d" % held.numerator, b"%d" % held.denominator))
            conn.send(g.build(T.STATUS_RES, args[0], *fields))
        elif kind == T.GET_STATUS_UNIQUE:
            job, waiting = self.table.status_unique(args[0])
            held = self.worker_settings.held_unique(args[0]) if job is None else None
            # (a job a worker here holds, submitted elsewhere: no client here waits for it)
            fields = (_status_fields(job) if held is None else
                      (b"1", b"1", b"%d" % held.numerator, b"%d" % held.denominator))
            conn.send(g.build(T.STATUS_RES_UNIQUE, args[0], *fields, b"%d" % waiting))
        elif kind == T.OPTION_REQ:
            if args[0] == b"exceptions":
                conn.exceptions = True
                conn.send(g.build(T.OPTION_RES, args[0]))
            else:
                conn.send(g.error("unknown_option", f"unknown option {args[0][:40]!r}; "
                                  "the gateway knows 'exceptions'"))
        elif kind == T.SET_CLIENT_ID:
            conn.client_id = admin.printable(args[0])
            if conn.worker is not None:
                conn.worker.client_id = conn.client_id
        else:
            conn.send(g.error("not_supported", f"{g.type_name(kind)} is not supported by the "
                              "DIPS gateway (use SUBMIT_JOB* or SUBMIT_JOB_EPOCH)"))

    def submit(self, conn: Connection, packet: g.Packet) -> None:
        try:
            sub = parse_submission(packet, time.time())
        except BadRequest as exc:
            conn.send(g.error("bad_request", exc.message))
            return
        if not sub.background and conn.jobs_full:  # (a worker's connection: still read)
            self.warn_peer("too_many_jobs", "refused a job of %s: %d jobs in flight "
                           "(--max-jobs-per-connection)", conn.peer, conn.jobs)
            conn.send(g.error("too_many_jobs", f"this connection waits for {conn.jobs} jobs "
                              "already (--max-jobs-per-connection); a connection that is "
                              "also a worker is read on, as its answers come in on it, "
                              "and its submissions past the limit are refused"))
            return
        job = self.table.coalesce(sub)
        new = False
        if self.stopping and not sub.background and (job is None or job.submission.background):
            # accepted now (new, or joining a background job, which may wait in the door),
            # it would be cut unanswered when the door closes
            conn.send(g.error("shutting_down", "this door is stopping; submit the job to "
                              "another door"))
            return
        if job is None and sub.background:
            job = self._store(conn, sub)
            if job is None:
                return
        elif job is None:
            job = self.table.add(sub)
            new = True
        if sub.background:
            conn.send(g.build(T.JOB_CREATED, job.handle))
            return
        job.waiters.append(conn)
        conn.waiting.add(job)
        conn.job_added()
        conn.send(g.job_created(job.handle))
        if new:  # after JOB_CREATED: its answer may come at once
            self._begin(job)

    def _store(self, conn: Connection, sub: Submission) -> Job | None:
        if self.outbox is None or self.runner is None:
            conn.send(g.error("no_state_dir", "background jobs need a durable outbox: start "
                              "mdp-gearman with --state-dir DIR"))
            return None
        if len(self.table.by_handle) >= self.config.max_background_jobs:
            conn.send(g.error("queue_full", "too many background jobs waiting"))
            return None
        stored_id = self.outbox.add(sub.service, sub.unique, sub.workload, sub.priority,
                                    sub.run_at)
        job = self.table.add(sub, stored_id)
        self.runner.schedule(job)
        return job

    # --- jobs -------------------------------------------------------------------------

    def _begin(self, job: Job) -> None:
        """Start a client's new job. The usual one runs with no task and no coroutine: its
        request goes to DIPS now and its answer is written from the client's callback
        (:meth:`_answered`). One that must wait first (for a fresher view of the fleet, or
        a free slot) runs in a task (:meth:`_foreground`); so does one whose service nobody
        offers, once DIPS says so. Whatever happens (a bug included), the job ends with an
        answer to its clients, and its unique id and slot are freed."""
        loop = self._loop or asyncio.get_running_loop()
        started = loop.time()
        sub = job.submission
        slot = False
        try:
            try:
                request, fmt = mapping.decode_workload(sub.workload, self.limits)
            except BadRequest as exc:
                self._settle(job, exc, True)
                return
            if fmt is not mapping.Format.RAW and self.fleet.must_wait(
                    started, FLEET_MAX_AGE_S, FLEET_AHEAD_S):
                self._tasks[job] = loop.create_task(self._foreground(job))
                return
            slot = self._slots.take()
            if not slot:
                self._tasks[job] = loop.create_task(self._foreground(job))
                return
            if fmt is not mapping.Format.RAW:
                request = self._for_workers(sub, request)
            call = self.dips.start(
                sub.service, request, functools.partial(self._answered, job, fmt, started),
                priority=sub.priority, key=unique_key(sub.unique),
                on_progress=functools.partial(self._progress, job))
            slot = False  # the call's now: _answered or _drop_call frees it
            if not call.over:  # (else answered already, as it was placed)
                self._calls[job] = call
        except RequestError as exc:  # (a request the client cannot encode)
            if slot:
                self._slots.release()
            self._settle(job, exc, True)
        except Exception as exc:  # a bug: the job still ends, as `internal`
            if slot:
                self._slots.release()
            self._settle(job, self._bug(job, exc, "on this job"), True)

    def _answered(self, job: Job, fmt: mapping.Format, started: float, outcome: Any) -> None:
        """DIPS answered a job started by :meth:`_begin` (``outcome``: the result or the
        error): tell its clients; or, for a service nobody offers, wait for a worker in a
        task, until the job's deadline."""
        self._slots.release()
        self._calls.pop(job, None)
        if not self._calls and self._calls_over is not None and not self._calls_over.done():
            self._calls_over.set_result(None)
        try:
            if isinstance(outcome, UnknownService):
                loop = self._loop or asyncio.get_running_loop()
                self._tasks[job] = loop.create_task(
                    self._foreground(job, outcome, started + self.config.timeout_s))
                return
            if type(outcome) is bytes:  # (a card, say: as it is, the usual case)
                pass
            elif not isinstance(outcome, BaseException):
                outcome = mapping.encode_result(outcome, fmt)
            elif not isinstance(outcome, (RequestError, Timeout)):
                outcome = self._bug(job, outcome, "on this job")
        except RequestError as exc:  # a result nested deeper than the formats carry
            outcome = exc
        except Exception as exc:  # a bug: the job still ends, as `internal`
            outcome = self._bug(job, exc, "on this job")
        self._settle(job, outcome, True)

    def _drop_call(self, job: Job) -> None:
        """Give up a job running with no task (every client of it left, or the door
        closes): it is forgotten now, and its slot freed."""
        call = self._calls.pop(job, None)
        if call is None:
            return
        self.table.finish(job)
        self._slots.release()
        if not self._calls and self._calls_over is not None and not self._calls_over.done():
            self._calls_over.set_result(None)
        call.cancel()  # last: what it might raise leaves no slot or job behind

    async def _foreground(self, job: Job, outcome: Outcome | None = None,
                          deadline: float | None = None) -> None:
        """Run a client's job that must wait (see :meth:`_begin`) until it ends; or, given
        its first ``outcome`` (an UnknownService) and its ``deadline``, go on with it.
        Whatever happens (a bug included) it ends with an answer to its clients, and its
        unique id and slot are freed."""
        try:
            loop = self._loop or asyncio.get_running_loop()
            if outcome is None or deadline is None:
                deadline = loop.time() + self.config.timeout_s
                outcome = await self._attempt(job)
            if isinstance(outcome, UnknownService):
                outcome = await self._until_served(job, outcome, deadline)
        except asyncio.CancelledError:  # every client of it left
            self.table.finish(job)
            raise
        except Exception as exc:  # a bug: the job still ends, as `internal`
            outcome = self._bug(job, exc, "running this job")
        finally:
            self._tasks.pop(job, None)
        self._settle(job, outcome, True)

    async def _until_served(self, job: Job, outcome: Outcome, deadline: float) -> Outcome:
        """Nobody offers the job's service (``outcome``): gearmand keeps a job until a
        worker comes, so this one waits for a worker until its ``deadline`` (a worker may
        be registering as its client submits), and is tried again when one comes."""
        loop = self._loop or asyncio.get_running_loop()
        while isinstance(outcome, UnknownService) and (
                left := deadline - loop.time()) > MIN_TRY_S:
            self._waits(loop.time(), "job %s (%s): no worker offers it; it waits %.1fs for "
                        "one", job.handle.decode(), job.submission.service, left)
            if not await self.fleet.until_offered(job.submission.service, left):
                break
            outcome = await self._attempt(job, max(MIN_TRY_S, deadline - loop.time()))
        return outcome

    async def _attempt(self, job: Job, timeout_s: float | None = None) -> Outcome:
        """One try in DIPS (within ``timeout_s``, else --timeout): the reply's bytes, or the
        error. Never raises but CancelledError: a bug fails the job (`internal`)."""
        sub = job.submission
        try:
            try:
                request, fmt = mapping.decode_workload(sub.workload, self.limits)
            except BadRequest as exc:
                return exc
            if fmt is not mapping.Format.RAW:
                loop = self._loop or asyncio.get_running_loop()
                if self.fleet.must_wait(loop.time(), FLEET_MAX_AGE_S, FLEET_AHEAD_S):
                    await self.fleet.fresh(FLEET_MAX_AGE_S, wait_s=FLEET_WAIT_S)
                request = self._for_workers(sub, request)
            if not self._slots.take():
                await self._slots.acquire(sub.priority)
            try:
                result = await self.dips.call(
                    sub.service, request, priority=sub.priority, timeout_s=timeout_s,
                    key=unique_key(sub.unique), on_progress=functools.partial(self._progress, job))
            except (RequestError, Timeout) as exc:
                return exc
            finally:
                self._slots.release()
            try:
                return mapping.encode_result(result, fmt)
            except RequestError as exc:  # a result nested deeper than the formats carry
                return exc
        except Exception as exc:  # a bug: the job fails clearly; it is never orphaned
            return self._bug(job, exc, "on this job")

    def _bug(self, job: Job, exc: BaseException, doing: str) -> BaseException:
        """A bug met while running or settling ``job``: logged, and the error the job ends
        with (code ``internal``)."""
        self.report_bug(exc, f"{doing} (job {job.handle.decode()}, {job.submission.service})")
        return mapping.internal_failure(exc, doing)

    def warn_peer(self, kind: str, msg: str, *args: object) -> None:
        """A warning about a peer's input (``kind``: bad_packet, framing, refused, ...), at
        most ten lines a second of each kind; the rest are counted."""
        limited = self._peer_logs.get(kind)
        if limited is None:
            limited = self._peer_logs[kind] = RateLimitedLog(log)
        limited(time.monotonic(), msg, *args)

    def report_bug(self, exc: BaseException, where: str) -> None:
        """The gateway's own failure, with its traceback, at most ten a second (a peer may
        find a way to repeat it)."""
        self._bugs(time.monotonic(), "the gateway failed %s:\n%s", where,
                   "".join(traceback.format_exception(exc)).rstrip())

    def _for_workers(self, sub: Submission, request: dict[str, Any]) -> dict[str, Any]:
        """The DIPS request for a decoded workload (docs/GEARMAN.md, Mapping): as decoded,
        or, when every worker of its service is a Gearman worker behind a door (the view of
        the fleet says so), the workload itself as the raw field, so that the worker reads
        exactly the bytes its client sent."""
        offer = self.fleet.offer(sub.service)
        if offer is not None and offer.gearman_only:
            return {self.limits.raw_field: sub.workload}
        return request

    def _progress(self, job: Job, kind: str, num: int | None, den: int | None,
                  data: bytes | None) -> None:
        """A worker's progress report: the job runs (GET_STATUS says so), and its clients
        get WORK_STATUS, WORK_DATA or WORK_WARNING as gearmand forwards them. A status of
        0/0 only says that a worker has the job (a Gearman worker behind a door sends it
        when it takes the job): it is not news for the clients."""
        job.running = True
        if kind == "status":
            if num is None or den is None or (num, den) == (0, 0):
                return
            job.numerator, job.denominator = num, den
            packet = g.build(T.WORK_STATUS, job.handle, b"%d" % num, b"%d" % den)
        else:
            packet = g.build(T.WORK_DATA if kind == "data" else T.WORK_WARNING, job.handle,
                             data or b"")
        for conn in job.waiters:
            conn.send(packet)

    def _settle(self, job: Job, outcome: Outcome, final: bool) -> None:
        """Tell the job's waiting clients how it ended (``final``: it is done for good, and
        forgotten). Never raises: a client the gateway fails to tell still hears that the
        job failed, and its slot is freed."""
        if final:
            waiters = self.table.finish(job)
        else:
            waiters, job.waiters = job.waiters, []
        if not isinstance(outcome, bytes) and (final or not job.submission.background):
            self._failures(time.monotonic(), "job %s (%s) failed: %s", job.handle.decode(),
                           job.submission.service, mapping.exception_bytes(outcome)
                           .decode("utf-8", "replace"))
        for conn in waiters:
            try:
                conn.send(g.work_complete(job.handle, outcome)
                          if isinstance(outcome, bytes)
                          else mapping.failure_packets(job.handle, outcome, conn.exceptions))
            except Exception as exc:  # a bug: the client still hears the job ended
                self._bug(job, exc, "telling a client how this job ended")
                conn.send(g.build(T.WORK_FAIL, job.handle))
            finally:
                conn.job_done(job)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for job in self.table.drop_waiter(conn, conn.waiting):
            if job in self._calls:
                self._drop_call(job)
                continue
            task = self._tasks.get(job)
            if task is not None:
                # forgotten now, not when the task runs its cancellation: a submission of
                # its unique id read meanwhile would join it and never be answered
                self.table.finish(job)
                task.cancel()

    # --- admin ------------------------------------------------------------------------

    async def admin_answer(self, line: str) -> bytes:
        statuses: list[BrokerStatus | None] = []
        if admin.command_of(line) in admin.NEEDS_BROKERS:
            statuses = await self.broker_status()
        clients = [admin.ClientInfo(c.fd, c.peer.rpartition(":")[0], c.client_id,
                                    tuple(c.worker.functions) if c.worker else (), c.peer)
                   for c in self.connections]
        held = self.runner.held if self.runner is not None else {}
        return admin.answer(line, statuses, clients, held, os.getpid())

    async def broker_status(self) -> list[BrokerStatus | None]:
        """Every broker's status, at most STATUS_CACHE_S old (None: it did not answer)."""
        loop = asyncio.get_running_loop()
        if loop.time() - self.fleet.fetched_at > STATUS_CACHE_S:
            await self.fleet.refresh()
        return self.fleet.statuses


def _status_fields(job: Job | None) -> tuple[bytes, bytes, bytes, bytes]:
    """STATUS_RES's known, running, numerator and denominator for a job (None: unknown)."""
    if job is None:
        return b"0", b"0", b"0", b"0"
    return (b"1", b"%d" % job.running, b"%d" % job.numerator, b"%d" % job.denominator)


def parse_submission_stored(stored: StoredJob) -> Submission:
    """A stored row back into a Submission (it was checked when it was accepted)."""
    return Submission(stored.service, stored.unique, stored.workload, stored.priority, True,
                      stored.run_at)


def fit_descriptors(config: GatewayConfig) -> tuple[GatewayConfig, int]:
    """The connection limit and the Gearman workers' broker links, cut to what the process's
    descriptor limit holds (raised towards its hard limit first): peers taking every
    descriptor would leave the door unable to accept a connection or open a socket."""
    wanted = config.max_connections + FDS_PER_LINK * MAX_LINKS
    fitted = fdlimit.fit(wanted)
    # connections first (a job or a worker needs one; a link serves only a worker), but at
    # least half of what there is
    available = fitted.available
    connections = min(config.max_connections,
                      max(available // 2, available - FDS_PER_LINK * MAX_LINKS))
    links = min(MAX_LINKS, (available - connections) // FDS_PER_LINK)
    shortfall = fitted.shortfall(f"{config.max_connections} connections (--max-connections) "
                                 f"and {MAX_LINKS} Gearman workers' broker links")
    if shortfall and connections < min(fdlimit.MIN_CONNECTIONS, config.max_connections):
        raise ConfigError(f"{shortfall}: fewer than {fdlimit.MIN_CONNECTIONS} connections "
                          "would fit")
    if shortfall:
        log.warning("%s: at most %d connections and %d links", shortfall, connections, links)
    return dataclasses.replace(config, max_connections=connections), links


async def serve(config: GatewayConfig, stop: asyncio.Event | None = None) -> int:
    """Run the gateway until ``stop`` is set (or SIGTERM/SIGINT)."""
    config, max_links = fit_descriptors(config)
    curve = (CurveConfig.from_files(config.curve_secret, config.broker_key)
             if config.curve_secret and config.broker_key else None)
    outbox = Outbox(config.state_dir, sync=config.sync) if config.state_dir else None
    dips = Dips(config.brokers, timeout_s=config.timeout_s, curve=curve,
                link_floor=config.link_floor)
    gateway = Gateway(config, dips, outbox, max_links=max_links)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(loop_errors())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        bound = await gateway.start()
        for host, port in bound:
            log.info("mdp-gearman listening on %s:%d", host, port)
        log.info("brokers %s, timeout %gs, DIPS through %s, background jobs %s",
                 " ".join(config.brokers), config.timeout_s, dips.kind,
                 f"in {outbox.path} ({outbox.count()} pending)" if outbox else "off")
        await stop.wait()
        log.info("stopping")
    finally:
        await gateway.close()
        await dips.close()
        if outbox is not None:
            outbox.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    config, level = parse_args(argv)
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if level != "DEBUG":  # the Gearman workers' cores say "draining" and "stopped" at
        # each registration, which a peer repeats at will; the door logs joins itself
        logging.getLogger("mdp.workercore").setLevel(logging.WARNING)
    try:
        factory, loop_name = loop_factory(config.event_loop, "dips[gearman]")
        log.info("event loop: %s", loop_name)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(serve(config))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1



if __name__ == "__main__":
    raise SystemExit(main())

