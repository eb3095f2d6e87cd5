"""The Majordomo worker: ``python -m mdp.worker --broker tcp://A --broker tcp://B --service S``.

This module is the I/O shell around :class:`mdp.workercore.WorkerCore`, which takes every
decision. One process serves one request at a time, from every broker given.

The handler runs inline on the main thread: no thread hand-off per request. Between tasks
the main thread reads every pending message on every link, then starts the next task at
once if one is waiting. Each DEALER enables ZMTP heartbeats, answered by libzmq's I/O
thread even while the handler runs and silent when the process is frozen, so a broker
drops a SIGSTOPped worker within about 0.6 s.

While a handler runs, the worker's lock is free. One *sentinel* thread per process (shared
by every Worker in it, ``mdp.sentinel``) takes the lock, and with it the worker's sockets,
only when the handler has run past ``busy_after``: it then feeds the core (BUSY goes out,
crossed tasks bounce, RECALLs are answered, heartbeats flow) and enforces the time limit.
When the handler returns, the main thread wakes the sentinel (only if it had taken over)
and takes its lock back.

SIGTERM drains: the request in hand is finished and answered, every broker is told
DISCONNECT, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import resource
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
from mdp.errors import ConfigError, RequestError, WorkerError
from mdp.keys import CurveConfig
from mdp.logs import LOG_FORMAT
from mdp.rates import format_rate
from mdp.sentinel import SENTINEL
from mdp.version import code_version
from mdp.workercore import EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_STUCK, WorkerCore
from mdp.workerstate import Phase, Task, Timing

log = logging.getLogger(__name__)

__all__ = ["EXIT_OK", "EXIT_OUT_OF_MEMORY", "EXIT_STUCK", "Worker", "WorkerConfig", "main"]

STUCK_LINGER_S = 0.2  # after the time limit: how long queued messages get to go out
RECV_WAIT_MS = 50  # with one broker: the longest wait in the socket's own receive
READ_EVERY_S = 0.001  # between short tasks run back to back: how often to read the sockets

Handle = Callable[[dict[str, Any]], Any]
_POLLIN = int(zmq.POLLIN)
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
        self.sockets: list[zmq.Socket | None] = [None] * len(config.brokers)
        # with several brokers, a socket monitor tells at once that a broker's connection
        # dropped (it died or restarted), so the worker registers anew without waiting for
        # a heartbeat to go unanswered; with one broker the loop blocks in its socket
        self.monitors: list[zmq.Socket | None] = [None] * len(config.brokers)
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
        self._received: tuple[int, list[bytes]] | None = None  # taken by _wait_one
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
                match action:
                    case Send(link, frames):
                        sock = self.sockets[link]
                        if sock is not None:
                            try:
                                sockio.send(sock, frames)
                            except zmq.Again:
                                log.debug("send queue to %s is full; message dropped",
                                          self.config.brokers[link])
                    case Close(link, linger_ms):
                        sock = self.sockets[link]
                        if sock is not None:
                            self._close_monitor(link, sock)
                            sock.close(linger=linger_ms)
                            self.sockets[link] = None
                            self._poller = None
                    case Open(link):
                        self._connect(link)

    def _connect(self, link: int) -> None:
        endpoint = self.config.brokers[link]
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        # No ZMTP heartbeats of our own: the broker's (``--zmtp-heartbeat``) are answered by
        # libzmq's I/O thread even while a handler runs, and are what finds a frozen worker;
        # a dead or hung broker is found by the socket monitor and by MDP silence. Pings both
        # ways would double what 1,000 idle workers cost the broker.
        if self.config.curve is not None:
            self.config.curve.apply(sock, endpoint)
        if len(self.sockets) > 1:
            monitor = self.monitors[link] = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._drain_monitor(monitor)  # from now on its descriptor signals each event
        sock.connect(endpoint)
        self.sockets[link] = sock
        self._poller = None
        self.core.handle(Opened(link), time.monotonic())
        log.debug("connected to %s", endpoint)

    def _close_monitor(self, link: int, sock: zmq.Socket) -> None:
        monitor = self.monitors[link]
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(linger=0)
            self.monitors[link] = None

    def _on_monitor(self, link: int) -> None:
        """The monitor of ``link`` reported: a dropped connection means a new one."""
        monitor = self.monitors[link]
        if monitor is not None and self._drain_monitor(monitor):
            self.core.handle(Lost(link), time.monotonic())
            self.flush()

    @staticmethod
    def _drain_monitor(monitor: zmq.Socket) -> bool:
        """Read every event the monitor holds (so that its descriptor, which signals only
        when events arrive at an emptied queue, signals the next); True if one was a
        dropped connection."""
        dropped = False
        while True:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return dropped
            dropped = dropped or sockio.monitor_event(frames) == zmq.EVENT_DISCONNECTED

    def read_all(self, now: float, links: list[int] | None = None) -> None:
        """Feed the core the message ``_wait`` received, if any, then every message waiting
        on ``links`` (default: every link). The caller holds ``lock``."""
        received = self._received
        if received is not None:
            self._received = None
            self._feed(*received, now)
        if links is None:
            self._read_at = now
            links = list(range(len(self.sockets)))
        sockets, recv, readable = self.sockets, sockio.recv, sockio.readable
        for link in links:
            sock = sockets[link]
            # a receive that finds nothing costs more than asking first (pyzmq builds a
            # zmq.Again), and a pass usually finds one message
            while sock is not None and readable(sock) and (frames := recv(sock)) is not None:
                self._feed(link, frames, now)
                sock = sockets[link]

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
                # before draining, take in every task already here: it is served
                self.read_all(now, None if self._stop_requested else ready)
                if self._stop_requested:
                    self.check_stop(now)
                deadline = core.next_deadline(now)
                if now >= deadline:
                    core.handle(Tick(), now)
                    deadline = core.next_deadline(now)
                task = core.begin(now)
                if core.actions:
                    self.flush()
                if task is not None:
                    # after a short task with nothing else held, the next poll finds what
                    # came meanwhile; between short tasks run back to back, the sockets are
                    # read every READ_EVERY_S (a receive that finds nothing costs ~4 us);
                    # otherwise read everything before choosing again
                    short = self._run_task(task)
                    if short and not core.waiting:
                        ready = []
                    elif short and time.monotonic() - self._read_at < READ_EVERY_S:
                        ready = []
                    else:
                        ready = None
                elif core.phase is not Phase.DONE:
                    # (what begin did since can only make the deadline later: an early
                    # wake-up at worst)
                    ready = self._wait(deadline)
        finally:
            self._leave()
            self.lock.release()
        return core.exit_code

    def _wait(self, deadline: float) -> list[int]:
        """Wait for input or the deadline; the links that have input."""
        if self._poller is None:
            self._poller = [(sock, _POLLIN) for sock in self.sockets if sock is not None]
            self._poller.append((self._wake_recv.fileno(), _POLLIN))
            self._poll_links = {id(sock): i for i, sock in enumerate(self.sockets)
                                if sock is not None}
            # a monitor is polled by its descriptor alone: as a socket, zmq_poll would ask
            # it for events (system calls) on every wait, for an event that comes rarely
            self._monitor_fds = {}
            for i, monitor in enumerate(self.monitors):
                if monitor is not None:
                    fd = monitor.fileno()
                    self._poller.append((fd, _POLLIN))
                    self._monitor_fds[fd] = i
        if len(self._poller) == 2 and not self._stop_requested:
            # one link under load: block in its own receive, one system call where a poll
            # costs several; briefly, so that stop() is seen soon without a wake-up socket
            [link] = self._poll_links.values()
            sock = self.sockets[link]
            assert sock is not None  # noqa: S101 (the poller lists open sockets only)
            while True:
                timeout_ms = poll_timeout_ms(deadline, time.monotonic())
                frames, _ = sockio.recv_wait(sock, min(timeout_ms, RECV_WAIT_MS))
                if frames is None:
                    if timeout_ms <= RECV_WAIT_MS:
                        return []
                    break  # (a long wait: in a poll that stop() can end)
                lone = self._lone(link, frames)
                if lone is None:
                    # that message alone: what follows it is read once the loop comes back
                    # here (asking the socket again would cost more than the wait finds)
                    self._received = (link, frames)
                    return []
                if not lone or self._stop_requested or self.sockets[link] is not sock:
                    return []
        events = _zmq_poll(self._poller, poll_timeout_ms(deadline, time.monotonic()))
        if len(events) == 1 and type(item := events[0][0]) is not int \
                and not self._stop_requested:
            # one link has input (the usual case): a task that came alone runs at once
            link = self._poll_links[id(item)]
            frames = sockio.recv(item)
            if frames is not None:
                lone = self._lone(link, frames)
                if lone is None:
                    self._received = (link, frames)  # fed first, then the rest of the link
                    return [link]
                return []  # what came meanwhile: the next poll finds it
        ready = []
        for item, _ in events:
            if type(item) is not int:
                ready.append(self._poll_links[id(item)])
            elif item in self._monitor_fds:
                self._on_monitor(self._monitor_fds[item])
            else:
                self._drain_wake()
        return ready

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
        for link, sock in enumerate(self.sockets):
            if sock is not None:
                self._close_monitor(link, sock)
                sock.close(linger=self.config.drain_linger_ms)
                self.sockets[link] = None
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
        if now >= core.next_deadline(now):
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
    log.info("worker for %r starting, brokers %s, version %s, link floor %s", config.service,
             " ".join(config.brokers), worker.meta["version"], format_rate(config.link_floor))
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
