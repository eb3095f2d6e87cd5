"""The Majordomo worker: ``python -m mdp.worker --broker tcp://A --broker tcp://B --service S``.

This module is the I/O shell around :class:`mdp.workercore.WorkerCore`, which takes every
decision. One process serves one request at a time, from every broker given.

The handler runs inline on the main thread: no thread hand-off per request. Between tasks
the main thread reads every pending message on every link, then starts the next task at
once if one is waiting. A link (``mdp.workerlinks``, ``--transport``) is a pyzmq DEALER,
whose libzmq I/O thread answers the broker's ZMTP heartbeats even while the handler runs,
or ZMTP on a plain socket, read by whoever holds the worker (no I/O thread, no hand-off
per message); either way they go silent when the process is frozen.

While a handler runs, the worker's lock is free. One *sentinel* thread per process (shared
by every Worker in it, ``mdp.sentinel``) takes the lock, and with it the worker's links,
only when the handler has run past ``busy_after``: it then feeds the core (BUSY goes out,
crossed tasks bounce, RECALLs are answered, heartbeats flow, and on a plain link the
broker's ZMTP PINGs are answered as they are read) and enforces the time limit. When the
handler returns, the main thread wakes the sentinel (only if it had taken over) and takes
its lock back.

SIGTERM drains: the request in hand is finished and answered, every broker is told
DISCONNECT, and the process exits 0.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import zmq

from mdp import handlers, sockio
from mdp import protocol as p
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.clock import poll_timeout_ms
from mdp.config import WorkerConfig, parse_worker_args
from mdp.errors import ConfigError, ProtocolError, RequestError, WorkerError
from mdp.keys import CurveConfig
from mdp.logs import LOG_FORMAT
from mdp.rates import format_rate
from mdp.sentinel import SENTINEL
from mdp.version import code_version
from mdp.workercore import EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_STUCK, WorkerCore
from mdp.workerlinks import (
    PlainWorkerLink,
    WorkerLink,
    ZmqWorkerLink,
    auto_choice,
    describe_transport,
    open_worker_link,
    uses_plain,
)
from mdp.workerstate import Phase, Task, Timing
from mdp.zmtplinks import Complaints

log = logging.getLogger(__name__)

__all__ = ["EXIT_OK", "EXIT_OUT_OF_MEMORY", "EXIT_STUCK", "Worker", "WorkerConfig", "main"]

STUCK_LINGER_S = 0.2  # after the time limit: how long queued messages get to go out
RECV_WAIT_MS = 50  # with one broker: the longest wait in the socket's own receive
READ_EVERY_S = 0.001  # between short tasks run back to back: how often to read the sockets

Handle = Callable[[dict[str, Any]], Any]
_POLLIN = int(zmq.POLLIN)
_ZPOLLOUT = int(zmq.POLLOUT)
_SELECT_IN = select.POLLIN
_SELECT_OUT = select.POLLOUT
# the reply when even an error reply cannot be encoded: built now, so that it cannot fail then
_UNENCODABLE = p.error_body(WorkerError("the handler's reply could not be encoded",
                                        code="internal"))
_zmq_poll = zmq.zmq_poll




class Worker:
    """Serve one service from every broker given, one request at a time."""

    def __init__(
        self,
        config: WorkerConfig,
        handler: handlers.Handler | Handle,
        *,
        context: zmq.Context | None = None,
    ) -> None:
        config.validate()
        self.config = config
        if not isinstance(handler, handlers.Handler):
            handler = handlers.plain(config.service, handler)
        self.handler = handler
        self.context = context or zmq.Context.instance()
        extra = () if handler.package in (None, "mdp") else (handler.package,)
        self.meta: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(),
                                     "version": code_version(*extra)}
        if handler.info is not None:
            self.meta["info"] = handler.info  # what the service is, for doors and mdpctl
        if handler.output is not None:
            self.meta["output"] = handler.output  # what its results depend on (caches)
        self.core = WorkerCore(
            config.brokers, config.service.encode(), self.meta,
            Timing(config.heartbeat_interval_s, config.heartbeat_liveness,
                   config.reconnect_initial_s, config.reconnect_max_s, config.time_limit_s,
                   config.busy_after_s, config.drain_linger_ms, config.reply_gather_s,
                   config.link_floor),
            config.max_requests, config.prefetch, config.max_message_bytes)
        # one link per broker (mdp.workerlinks): a pyzmq DEALER, or ZMTP on a plain socket.
        # With several brokers, a DEALER has a socket monitor that tells at once that the
        # connection dropped (the broker died or restarted), so the worker registers anew
        # without waiting for a heartbeat to go unanswered; a plain link sees it at once.
        self.links: list[WorkerLink | None] = [None] * len(config.brokers)
        # what --transport auto means here: plain only for a handler that declares it never
        # holds the GIL for long (mdp.handlers.YIELDS_GIL), for a short enough --busy-after
        self.auto = auto_choice(handler.yields_gil, config.busy_after_s)
        # some link is plain (a refused connection of its own waits for retry_at)
        self._plain = any(uses_plain(config.transport, address, config.curve, self.auto.plain)
                          for address in config.brokers)
        self._complaints = Complaints(len(config.brokers))
        self.lock = threading.Lock()  # free only while the handler runs
        self.busy_after_s = config.busy_after_s
        self._stop_requested = False
        self._stop_code = EXIT_OK
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._wake_send.setblocking(False)
        self._poller: list[tuple[Any, int]] | None = None  # zmq_poll items
        self._poll_links: dict[int, int] = {}  # id(socket) -> link
        self._monitor_fds: dict[int, int] = {}  # a monitor's descriptor -> link
        # every link plain: select.poll over their descriptors and the wake-up socket's
        self._fd_poll: Any = None
        self._fd_key: tuple[tuple[int, int], ...] = ()  # (descriptor, flags) registered
        self._fd_links: dict[int, int] = {}  # a plain link's descriptor -> link (zmq_poll)
        self._plain_fds: dict[int, int] = {}  # the same, in _fd_poll
        self._received: list[tuple[int, list[bytes]]] = []  # read by _wait, fed first
        self._read_at = 0.0  # when read_all last read every link
        self._call = self._raw_call if handler.raw else self._map_call
        # progress reports of the running task, from the handler's thread: sent at once
        # when the lock is free, else by whoever holds it (the sentinel, or this thread
        # when the handler returns), always before the task's reply
        self._reports: deque[tuple[Task, str, int | None, int | None, bytes | None]] = deque()

    @property
    def served(self) -> int:
        return self.core.served

    def stop(self, exit_code: int = EXIT_OK) -> None:
        """Drain and leave (safe from a signal handler or another thread)."""
        self._stop_requested = True
        self._stop_code = exit_code or self._stop_code
        try:
            self._wake_send.send(b"\0")  # the main thread's poll
        except OSError:
            pass
        SENTINEL.nudge()  # in case the sentinel has this worker's sockets now

    # --- actions ---------------------------------------------------------------------

    def flush(self) -> None:
        """Carry out what the core asked for (the caller holds ``lock``)."""
        core = self.core
        while core.actions:
            for action in core.take_actions():
                if type(action) is Send:  # (the usual action: no match on its fields)
                    i = action.link
                    link = self.links[i]
                    if link is not None:
                        try:
                            link.send(action.frames)
                        except (ConnectionError, ProtocolError) as exc:
                            self._broken(i, link, exc)
                    continue
                match action:
                    case Close(i, linger_ms):
                        link = self.links[i]
                        if link is not None:
                            self.links[i] = None
                            self._poller = None
                            link.close(linger_ms)
                    case Open(i):
                        self._connect(i)

    def _connect(self, i: int) -> None:
        """A new link to broker ``i``; the core hears it is open at once (a connection that
        is not up yet keeps what is sent for it, as a DEALER does)."""
        config = self.config
        endpoint = config.brokers[i]
        self.links[i] = open_worker_link(self.context, endpoint, config.max_message_bytes,
                                         config.curve, config.transport, len(self.links) > 1,
                                         self.auto.plain)
        self._poller = None
        self.core.handle(Opened(i), time.monotonic())
        log.debug("connected to %s (%s)", endpoint, type(self.links[i]).__name__)

    def _broken(self, i: int, link: WorkerLink, exc: Exception) -> None:
        """Link ``i`` failed: the whole messages it read before go to the core first, then
        the core hears it is lost (it registers anew). The caller flushes."""
        messages = link.taken() if isinstance(link, PlainWorkerLink) else []
        if self.links[i] is link:
            self.links[i] = None
            self._poller = None
        link.close(0)
        now = time.monotonic()
        self._complaints.note(i, self.config.brokers[i], exc, now)
        core = self.core
        for frames in messages:
            try:
                core.handle(Received(i, frames), now)
            except Exception:  # the barrier: no input stops the worker
                log.exception("error handling a message from %s", self.config.brokers[i])
        core.handle(Lost(i), now)

    def _on_monitor(self, i: int) -> None:
        """The monitor of link ``i`` reported: a dropped connection means a new one."""
        link = self.links[i]
        if isinstance(link, ZmqWorkerLink):
            try:
                link.on_monitor()
            except ConnectionError as exc:
                self._broken(i, link, exc)
                self.flush()

    def read_all(self, now: float, links: list[int] | None = None) -> None:
        """Feed the core the messages ``_wait`` received, if any, then every message waiting
        on ``links`` (default: every link). The caller holds ``lock``."""
        if self._received:
            received, self._received = self._received, []
            for i, frames in received:
                self._feed(i, frames, now)
        if links is None:
            self._read_at = now
            links = list(range(len(self.links)))
        for i in links:
            link = self.links[i]
            if link is None:
                continue
            try:
                messages = link.take()
            except (ConnectionError, ProtocolError) as exc:
                self._broken(i, link, exc)
                self.flush()
                continue
            for frames in messages:
                if self.links[i] is not link:  # the core closed it meanwhile
                    break
                self._feed(i, frames, now)

    def _feed(self, link: int, frames: list[bytes], now: float) -> None:
        core = self.core
        try:
            core.handle(Received(link, frames), now)
        except Exception:  # the barrier: no input stops the worker
            log.exception("error handling a message from %s", self.config.brokers[link])
        if core.actions:
            self.flush()

    def check_stop(self, now: float) -> None:
        if self._stop_requested and self.core.phase is Phase.SERVING:
            self.core.stop(now, self._stop_code)
            self.flush()

    # --- loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until drained; return the process exit code."""
        self.lock.acquire()
        core = self.core
        try:
            core.start(time.monotonic())
            self.flush()
            ready: list[int] | None = None  # links to read; None: every link
            while core.phase is not Phase.DONE:
                now = time.monotonic()
                retry_at = self.retry_at()
                # before draining, take in every task already here: it is served
                # (every link when a plain link is due to be opened again: reading it
                # opens it, else the wait below would return at once, again and again)
                self.read_all(now, None if self._stop_requested or now >= retry_at
                              else ready)
                if self._stop_requested:
                    self.check_stop(now)
                deadline = core.next_deadline(now)
                if now >= deadline:
                    core.handle(Tick(), now)
                    deadline = core.next_deadline(now)
                task = core.begin(now)
                if core.actions:
                    self.flush()
                # (what begin did since can only make the deadline later: an early
                # wake-up at worst)
                if retry_at < deadline:
                    deadline = retry_at
                if task is not None:
                    ready = self._run_backlog(task, deadline)
                elif core.phase is not Phase.DONE:
                    ready = self._wait(deadline)
        finally:
            self._leave()
            self.lock.release()
        return core.exit_code

    def _run_backlog(self, task: Task, deadline: float) -> list[int] | None:
        """Run ``task``, then the tasks waiting behind it back to back, each as the loop's
        turn would start it, without that turn's reads and timers, while each is short,
        the sockets were read less than READ_EVERY_S ago (a receive that finds nothing
        costs ~4 us), nothing is due by ``deadline`` (the loop's, good until a task is
        started or something is read) and no stop is asked. The links the loop reads
        next: none after a short task (the next poll finds what came meanwhile), every
        one after a long task or READ_EVERY_S of short ones (before choosing again)."""
        core = self.core
        while self._run_task(task):
            if not core.waiting or self._stop_requested:
                return []
            now = time.monotonic()
            if now - self._read_at >= READ_EVERY_S:
                return None
            if now >= deadline:
                return []
            following = core.begin(now)
            if core.actions:
                self.flush()
            if following is None:
                return []
            task = following
        return None

    def retry_at(self) -> float:
        """When a refused plain connection is next tried (math.inf: none waits)."""
        if not self._plain:
            return math.inf  # (a DEALER tries again on its own)
        return min([link.retry_at for link in self.links if link is not None],
                   default=math.inf)

    def next_deadline(self, now: float) -> float:
        """When this worker next needs a turn with nothing to read (the sentinel asks)."""
        return min(self.core.next_deadline(now), self.retry_at())

    def poll_items(self) -> list[tuple[Any, int]]:
        """zmq_poll items for every open link (the sentinel polls them)."""
        items = []
        for link in self.links:
            if link is not None and (target := link.poll_target()) is not None:
                items.append((target, link.poll_flags()))
        return items

    def _wait(self, deadline: float) -> list[int] | None:
        """Wait for input or the deadline; the links to read (None: every link)."""
        poller = self._poller
        if poller is None or self._fd_links:  # (a plain link's flags may change)
            poller = self._build_poller()
        if self._fd_poll is not None:
            return self._wait_plain(deadline)
        if len(poller) == 2 and not self._stop_requested and self._poll_links:
            # one link under load: block in its own receive, one system call where a poll
            # costs several; briefly, so that stop() is seen soon without a wake-up socket
            [i] = self._poll_links.values()
            link = self.links[i]
            assert isinstance(link, ZmqWorkerLink)  # noqa: S101 (_build_poller saw to it)
            sock = link.sock
            while True:
                timeout_ms = poll_timeout_ms(deadline, time.monotonic())
                frames, _ = sockio.recv_wait(sock, min(timeout_ms, RECV_WAIT_MS))
                if frames is None:
                    if timeout_ms <= RECV_WAIT_MS:
                        return []
                    break  # (a long wait: in a poll that stop() can end)
                lone = self._lone(i, frames)
                if lone is None:
                    # that message alone: what follows it is read once the loop comes back
                    # here (asking the socket again would cost more than the wait finds)
                    self._received.append((i, frames))
                    return []
                if not lone or self._stop_requested or self.links[i] is not link:
                    return []
        events: list[tuple[Any, int]] = _zmq_poll(poller, poll_timeout_ms(deadline,
                                                                          time.monotonic()))
        if len(events) == 1 and type(item := events[0][0]) is not int \
                and not self._stop_requested:
            # one link has input (the usual case): a task that came alone runs at once
            i = self._poll_links[id(item)]
            frames = sockio.recv(item)
            if frames is not None:
                lone = self._lone(i, frames)
                if lone is None:
                    self._received.append((i, frames))  # fed first, then the rest of the link
                    return [i]
                return []  # what came meanwhile: the next poll finds it
        ready = []
        for item, _ in events:
            if type(item) is not int:
                ready.append(self._poll_links[id(item)])
            elif item in self._monitor_fds:
                self._on_monitor(self._monitor_fds[item])
            elif item in self._fd_links:
                ready.append(self._fd_links[item])
            else:
                self._drain_wake()
        return ready

    def _build_poller(self) -> list[tuple[Any, int]]:
        """The zmq_poll items of every open link, its monitor and the wake-up socket; and
        when every link is plain, a ``select.poll`` instead (see :meth:`_wait_plain`)."""
        poller: list[tuple[Any, int]] = []
        self._poller = poller
        self._poll_links, self._monitor_fds, self._fd_links = {}, {}, {}
        plain = all(isinstance(link, PlainWorkerLink) for link in self.links)
        self._fd_poll = None
        self._fd_key = ()
        self._plain_fds = {}
        if plain:
            self._fd_poll = select.poll()
            self._fd_poll.register(self._wake_recv.fileno(), _SELECT_IN)
            return poller
        for i, link in enumerate(self.links):
            if link is None:
                continue
            target = link.poll_target()
            if isinstance(link, ZmqWorkerLink):
                poller.append((target, _POLLIN))
                self._poll_links[id(target)] = i
                fd = link.monitor_fd()
                # a monitor is polled by its descriptor alone: as a socket, zmq_poll would
                # ask it for events (system calls) on every wait, for an event that is rare
                if fd is not None:
                    poller.append((fd, _POLLIN))
                    self._monitor_fds[fd] = i
            elif target is not None:
                poller.append((target, link.poll_flags()))
                self._fd_links[target] = i
        poller.append((self._wake_recv.fileno(), _POLLIN))
        return poller

    def _wait_plain(self, deadline: float) -> list[int] | None:
        """Every link plain: wait in one ``poll`` over their descriptors and the wake-up
        socket, read what came (a PING is answered as it is read), and run a task that
        came alone at once. The links to read (None: every link, when the wait ran out:
        a refused connection may be due to be tried again)."""
        fd_poll, fd_links = self._fd_poll, self._plain_fds
        links = self.links
        while True:
            key = tuple((link.poll_target(), link.poll_flags()) for link in links
                        if link is not None and link.poll_target() is not None)
            if key != self._fd_key:
                for fd in fd_links:
                    fd_poll.unregister(fd)
                fd_links.clear()
                for i, link in enumerate(links):
                    if link is not None and (fd := link.poll_target()) is not None:
                        fd_poll.register(fd, _SELECT_IN | (
                            _SELECT_OUT if link.poll_flags() & _ZPOLLOUT else 0))
                        fd_links[fd] = i
                self._fd_key = key
            events = fd_poll.poll(poll_timeout_ms(deadline, time.monotonic()))
            if not events:
                return None
            got: list[tuple[int, list[bytes]]] = []
            for fd, _ in events:
                i = fd_links.get(fd, -1)
                link = links[i] if i >= 0 else None
                if link is None:
                    self._drain_wake()
                    continue
                try:
                    got += [(i, frames) for frames in link.take()]
                except (ConnectionError, ProtocolError) as exc:
                    self._broken(i, link, exc)
                    self.flush()
            if len(got) != 1 or self._stop_requested:
                self._received += got
                return []
            [(i, frames)] = got
            link = links[i]
            lone = self._lone(i, frames)
            if lone is None:
                self._received.append((i, frames))
                return []
            if not lone or self._stop_requested or links[i] is not link:
                return []

    def _lone(self, link: int, frames: list[bytes]) -> bool | None:
        """A task that came alone to an idle worker: started, run and answered now, without
        the core's parse-queue-begin round (``WorkerCore.lone_task``); then True, or False
        when what the task left behind (it ran long, the worker drains) needs the main
        loop. None when ``frames`` is anything else: the caller feeds them to the core."""
        if len(frames) != 7 or frames[2] != p.TASK or frames[1] != p.WORKER or frames[0] \
                or frames[4]:
            return None
        core = self.core
        try:
            task = core.lone_task(link, frames[3], frames[5], frames[6:], time.monotonic())
        except Exception:  # (a bug): the core reads the message again, behind _feed's barrier
            log.exception("error taking a task from %s", self.config.brokers[link])
            return None
        if task is None:
            return None
        return self._run_task(task) and core.phase is Phase.SERVING and not core.waiting

    def _drain_wake(self) -> None:
        try:
            self._wake_recv.recv(4096)
        except BlockingIOError:
            pass

    def _run_task(self, task: Task) -> bool:
        """Run the handler inline; True when it was short (under busy_after)."""
        if self.handler.instant:  # done in microseconds: no watch, nothing to report
            body = self._call(task)
        else:
            handlers.reporting(partial(self.report, task))
            self.lock.release()
            SENTINEL.enter(self, task.started_at)
            try:
                body = self._call(task)
            finally:
                SENTINEL.leave(self)
                self.lock.acquire()
                handlers.reporting(None)
        now = time.monotonic()
        if self._reports:
            self.send_reports()  # before the reply: nothing of a task goes after it
        self.core.task_done(body, now)
        if self.core.actions:
            self.flush()
        return now - task.started_at < self.busy_after_s

    def report(self, task: Task, kind: str, num: int | None, den: int | None,
               data: bytes | None) -> None:
        """A progress report from ``task``'s handler (on the handler's thread)."""
        self._reports.append((task, kind, num, den, data))
        if self.lock.acquire(blocking=False):  # the handler runs and nobody else sends
            try:
                self.send_reports()
            finally:
                self.lock.release()
        else:  # the sentinel holds the sockets (or this thread, for an instant handler)
            SENTINEL.nudge()

    def send_reports(self) -> None:
        """Give the core every report queued so far (the caller holds ``lock``)."""
        core, reports = self.core, self._reports
        now = time.monotonic()
        while reports:
            core.progress(*reports.popleft(), now)
        if core.actions:
            self.flush()

    def _raw_call(self, task: Task) -> bytes:
        try:
            p.decode_request(task.body, self.config.limits)  # a valid request map, or else
            return p.raw_result_body(self.handler.call(task.body[0]))
        except Exception as exc:
            return self._failure(exc)

    def _map_call(self, task: Task) -> bytes:
        try:
            return p.result_body(self.handler.call(p.decode_request(task.body,
                                                                    self.config.limits)))
        except Exception as exc:
            return self._failure(exc)

    def _failure(self, exc: Exception) -> bytes:
        """Every handler failure becomes an error reply; the worker lives on."""
        try:
            return self._error_reply(exc)
        except Exception:  # the barrier of the task path, which runs outside _feed's
            log.exception("handler for %s: its error reply could not be encoded",
                          self.config.service)
            return _UNENCODABLE

    def _error_reply(self, exc: Exception) -> bytes:
        if isinstance(exc, RequestError):
            return p.error_body(exc)
        if isinstance(exc, MemoryError):
            log.error("handler for %s ran out of memory (--max-memory-mb %d); recycling",
                      self.config.service, self.config.max_memory_mb)
            self.stop(EXIT_OUT_OF_MEMORY)
            return p.error_body(WorkerError("the request needed more memory than the worker "
                                            "may use", code="out_of_memory"))
        log.exception("handler for %s failed", self.config.service)
        return p.error_body(WorkerError(f"{type(exc).__name__}: {exc}", code="internal"))

    def _leave(self) -> None:
        for i, link in enumerate(self.links):
            if link is not None:
                self.links[i] = None
                link.close(self.config.drain_linger_ms)
        self._wake_recv.close()
        self._wake_send.close()

    # --- under the sentinel ----------------------------------------------------------

    def sentinel_turn(self, now: float, took_over: bool) -> None:
        """One turn of the sentinel for this worker (it holds ``lock``)."""
        core = self.core
        if took_over:
            core.task_long(now)
        if self._reports:
            self.send_reports()
        self.read_all(now)
        self.check_stop(now)
        if now >= self.next_deadline(now):
            core.handle(Tick(), now)
        if core.actions:
            self.flush()
        if core.phase is Phase.DONE and core.exit_code == EXIT_STUCK:
            logging.shutdown()
            time.sleep(STUCK_LINGER_S)  # the linger: let the reply and DISCONNECTs go out
            os._exit(EXIT_STUCK)


# --- command line -------------------------------------------------------------------------


def prepare(argv: Sequence[str] | None) -> WorkerConfig:
    """Parse the command line, set up logging, load keys and apply the memory limit."""
    config, args, level = parse_worker_args(argv)
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    if args.curve_secret:
        config.curve = CurveConfig.from_flags(args.curve_secret, args.broker_key)
    if config.max_memory_mb:
        limit = config.max_memory_mb * 1024 * 1024
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot apply --max-memory-mb {config.max_memory_mb}: {exc}"
                              ) from exc
    return config


def serve(config: WorkerConfig, handler: handlers.Handler | Handle) -> int:
    """Run a worker until it drains, with SIGTERM and SIGINT draining it."""
    worker = Worker(config, handler)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    log.info("worker for %r starting, brokers %s, version %s, link floor %s, transport %s",
             config.service, " ".join(config.brokers), worker.meta["version"],
             format_rate(config.link_floor), describe_transport(config, worker.auto))
    return worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = prepare(argv)
        handler = handlers.resolve(config.service)
        if handler.warm_up is not None:
            handler.warm_up()  # once-per-process work now, before the first request
    except (ConfigError, OSError) as exc:  # (OSError: a key file, a handler's warm-up)
        log.error("%s", exc)
        return 2
    return serve(config, handler)


if __name__ == "__main__":
    raise SystemExit(main())
