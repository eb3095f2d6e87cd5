"""The Majordomo worker: ``python -m mdp.worker --broker tcp://A --broker tcp://B --service S``.

One process, one request at a time, attached to every broker. While it works for one
broker it tells the other DIPS brokers it is BUSY, and hands back (BOUNCE) a request that
one of them sent before the notice arrived, so no request waits on a busy worker while
another worker is idle. Standard brokers get plain 7/MDP; their requests that arrive
while busy wait in a local queue.

The handler runs on a separate thread so that heartbeats go on and the per-request time
limit holds; the built-in ``echo`` runs inline. SIGTERM drains: the request in hand is
finished and answered, every broker is told DISCONNECT, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from mdp import protocol as p
from mdp import sockio
from mdp.clock import LOG_FORMAT, Backoff, RateLimitedLog, poll_timeout_ms
from mdp.config import WorkerConfig, parse_worker_args
from mdp.errors import (
    ConfigError,
    Expired,
    ProtocolError,
    RequestError,
    WorkerError,
    WorkerTimeout,
)
from mdp.keys import CurveConfig
from mdp.version import code_version

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]

EXIT_OK = 0
EXIT_STUCK = 3  # a handler ran past the time limit; the process must be replaced
EXIT_OUT_OF_MEMORY = 4  # a handler hit the address-space limit; start afresh


class _Link:
    """This worker's connection to one broker."""

    def __init__(self, endpoint: str, backoff: Backoff) -> None:
        self.endpoint = endpoint
        self.socket: zmq.Socket | None = None
        self.dips = False  # the broker sent WELCOME
        self.told_busy = False  # we sent BUSY and owe a FREE
        self.heard_at = 0.0
        self.sent_at = 0.0
        self.retry_at = 0.0
        self.backoff = backoff

    def send(self, frames: list[bytes], now: float) -> None:
        """Send without blocking; a broker that is gone for long may miss messages."""
        if self.socket is None:
            return
        try:
            sockio.send(self.socket, frames)
            self.sent_at = now
        except zmq.Again:
            log.debug("send queue to %s is full; message dropped", self.endpoint)


@dataclass(slots=True)
class _Job:
    link: _Link
    client: bytes
    body: list[bytes]
    deadline: float | None
    started_at: float = 0.0


def echo(request: dict[str, Any]) -> dict[str, Any]:
    """The built-in diagnostic service: the request, unchanged."""
    return request


class Worker:
    """Serve one service from every broker given, one request at a time."""

    def __init__(
        self,
        config: WorkerConfig,
        handler: Handler,
        *,
        inline: bool = False,
        context: zmq.Context | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.handler = handler
        self.inline = inline
        self.context = context or zmq.Context.instance()
        self.service = config.service.encode()
        self.meta = {"host": socket.gethostname(), "pid": os.getpid(), "version": code_version()}
        self.links = [
            _Link(ep, Backoff(config.reconnect_initial_s, config.reconnect_max_s))
            for ep in config.brokers
        ]
        self.served = 0
        self._job: _Job | None = None
        self._waiting: deque[_Job] = deque()  # from standard brokers, while busy
        self._results: queue.SimpleQueue[tuple[_Job, bytes]] = queue.SimpleQueue()
        self._wake_recv, self._wake_send = socket.socketpair()
        self._wake_recv.setblocking(False)
        self._draining = False
        self._stop_requested = threading.Event()
        self._exit_code = EXIT_OK
        self._warn = RateLimitedLog(log)
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._poller_cache: zmq.Poller | None = None

    @property
    def expiry_s(self) -> float:
        return self.config.heartbeat_interval_s * self.config.heartbeat_liveness

    def stop(self) -> None:
        """Drain and leave (safe from a signal handler or another thread)."""
        self._stop_requested.set()
        try:
            self._wake_send.send(b"\0")
        except OSError:
            pass

    # --- loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until drained; return the process exit code."""
        if not self.inline:
            self._thread = threading.Thread(target=self._run_handlers, daemon=True)
            self._thread.start()
        now = time.monotonic()
        for link in self.links:
            self._connect(link, now)
        try:
            while True:
                if self._stop_requested.is_set() and not self._draining:
                    self._start_drain(time.monotonic())
                if self._draining and self._job is None and not self._waiting:
                    break
                self._poll_once()
        finally:
            self._leave()
        return self._exit_code

    def _poller(self) -> zmq.Poller:
        if self._poller_cache is None:
            poller = zmq.Poller()
            for link in self.links:
                if link.socket is not None:
                    poller.register(link.socket, zmq.POLLIN)
            poller.register(self._wake_recv, zmq.POLLIN)
            self._poller_cache = poller
        return self._poller_cache

    def _poll_once(self) -> None:
        now = time.monotonic()
        events = dict(self._poller().poll(poll_timeout_ms(self._next_timer(now), now)))
        if self._wake_recv.fileno() in events:
            try:
                self._wake_recv.recv(4096)
            except BlockingIOError:
                pass
        while True:
            try:
                job, body = self._results.get_nowait()
            except queue.Empty:
                break
            self._finish(job, body, time.monotonic())
        for link in self.links:
            if link.socket is not None and link.socket in events:
                self._read(link)
        self._run_timers(time.monotonic())

    def _read(self, link: _Link) -> None:
        sock = link.socket
        while sock is not None and link.socket is sock:
            frames = sockio.recv(sock)
            if frames is None:
                return
            try:
                self._handle(link, frames)
            except Exception:  # the barrier: no input stops the worker
                log.exception("error handling a message from %s", link.endpoint)

    def _handle(self, link: _Link, frames: list[bytes]) -> None:
        now = time.monotonic()
        link.heard_at = now
        try:
            message = p.parse_worker_inbound(frames)
        except ProtocolError as exc:
            self._warn.warning("dropped message from broker %s: %s", link.endpoint, exc)
            return
        if isinstance(message, p.BrokerSignal) and message.command == p.DISCONNECT:
            # after a broker restart the first retry comes quickly; a broker that keeps
            # refusing us (full, or our service is invalid) is retried ever more slowly
            delay = link.backoff.next()
            log.info("broker %s said DISCONNECT; reconnecting in %.1fs", link.endpoint, delay)
            self._close(link, linger_ms=0)
            link.retry_at = now + delay
            return
        link.backoff.reset()
        if isinstance(message, p.BrokerSignal):
            if message.command == p.WELCOME:
                link.dips = True
            elif link.dips and now - link.sent_at >= self.config.heartbeat_interval_s / 2:
                # answer the broker's heartbeat burst rather than waking it on our own timer
                link.send(p.signal(p.HEARTBEAT), now)
            return
        self._on_request(link, message, now)

    def _on_request(self, link: _Link, msg: p.BrokerRequest, now: float) -> None:
        ttl_ms = (msg.meta or {}).get("ttl_ms")
        deadline = now + ttl_ms / 1000 if isinstance(ttl_ms, int) else None
        job = _Job(link, msg.client, msg.body, deadline)
        if self._draining and link.dips:
            link.send(p.signal(p.BOUNCE, msg.client), now)
        elif self._job is None:
            self._start(job, now)
        elif link.dips:
            link.send(p.signal(p.BOUNCE, msg.client), now)
            link.told_busy = True
        else:
            self._waiting.append(job)

    # --- jobs ------------------------------------------------------------------------

    def _start(self, job: _Job, now: float) -> None:
        job.started_at = now
        self._job = job
        if job.deadline is not None and now >= job.deadline:
            self._finish(job, p.error_body(Expired("the client's deadline passed")), now)
            return
        if self.inline:
            self._finish(job, self._execute(job), time.monotonic())
            return
        for link in self.links:
            if link is not job.link and link.dips and not link.told_busy:
                link.send(p.signal(p.BUSY), now)
                link.told_busy = True
        self._jobs.put(job)

    def _execute(self, job: _Job) -> bytes:
        """Run the handler on one request; every failure becomes an error reply."""
        try:
            request = p.decode_request(job.body, self.config.limits)
            if self.handler is echo:
                return p.raw_result_body(job.body[0])
            return p.result_body(self.handler(request))
        except RequestError as exc:
            return p.error_body(exc)
        except MemoryError:
            log.error("handler for %s ran out of memory (--max-memory-mb %d); recycling",
                      self.config.service, self.config.max_memory_mb)
            self._exit_code = EXIT_OUT_OF_MEMORY
            self.stop()
            return p.error_body(WorkerError("the request needed more memory than the worker "
                                            "may use", code="out_of_memory"))
        except Exception as exc:
            log.exception("handler for %s failed", self.config.service)
            return p.error_body(WorkerError(f"{type(exc).__name__}: {exc}", code="internal"))

    def _run_handlers(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            body = self._execute(job)
            self._results.put((job, body))
            try:
                self._wake_send.send(b"\0")
            except OSError:
                return

    def _finish(self, job: _Job, body: bytes, now: float) -> None:
        if job is not self._job:
            return  # abandoned after the time limit
        self._job = None
        self._send_reply(job, body, now)
        self.served += 1
        if self.config.max_requests and self.served >= self.config.max_requests:
            log.info("served %d requests; recycling", self.served)
            self._stop_requested.set()
        if self._waiting:  # requests already given to us are served even when draining
            self._start(self._waiting.popleft(), now)
        else:
            self._tell_free(now)

    def _send_reply(self, job: _Job, body: bytes, now: float) -> None:
        if job.link.socket is None:
            log.warning("broker %s went away; dropping a reply", job.link.endpoint)
            return
        job.link.send(p.reply(job.client, [body]), now)

    def _tell_free(self, now: float) -> None:
        if self._stop_requested.is_set():
            return
        for link in self.links:
            if link.told_busy:
                link.send(p.signal(p.FREE), now)
                link.told_busy = False

    # --- timers, links ---------------------------------------------------------------

    def _heartbeat_due(self, link: _Link) -> float:
        """When this link next needs a heartbeat of our own.

        A DIPS broker heartbeats every worker at once and we answer it, so our own timer is
        only the fallback when its heartbeats stop coming.
        """
        interval = self.config.heartbeat_interval_s
        return link.sent_at + (interval * 1.5 if link.dips else interval)

    def _next_timer(self, now: float) -> float:
        deadline = now + self.config.heartbeat_interval_s
        for link in self.links:
            if link.socket is None:
                deadline = min(deadline, link.retry_at)
            else:
                deadline = min(deadline, self._heartbeat_due(link), link.heard_at + self.expiry_s)
        if self._job is not None and not self.inline:
            deadline = min(deadline, self._job.started_at + self.config.time_limit_s)
        return deadline

    def _run_timers(self, now: float) -> None:
        for link in self.links:
            if link.socket is None:
                if now >= link.retry_at and not self._draining:
                    self._connect(link, now)
            elif now >= link.heard_at + self.expiry_s:
                log.warning("broker %s silent for %.1fs; reconnecting", link.endpoint,
                            self.expiry_s)
                self._close(link, linger_ms=0)
                link.retry_at = now + link.backoff.next()
            elif now >= self._heartbeat_due(link):
                link.send(p.signal(p.HEARTBEAT), now)
        job = self._job
        if job is not None and not self.inline:
            if now >= job.started_at + self.config.time_limit_s:
                self._abandon(job, now)

    def _abandon(self, job: _Job, now: float) -> None:
        log.error("request ran past the %.1fs time limit; answering with an error and "
                  "recycling this process", self.config.time_limit_s)
        self._job = None
        self._send_reply(job, p.error_body(WorkerTimeout(
            f"the request ran past the worker's {self.config.time_limit_s:g}s time limit")), now)
        self._exit_code = EXIT_STUCK
        self._stop_requested.set()

    def _connect(self, link: _Link, now: float) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        if self.config.curve is not None:
            self.config.curve.apply(sock)
        sock.connect(link.endpoint)
        link.socket = sock
        self._poller_cache = None
        link.dips = False
        link.told_busy = False
        link.heard_at = now
        link.send(p.ready(self.service, self.meta), now)
        log.debug("connected to %s", link.endpoint)

    def _close(self, link: _Link, linger_ms: int) -> None:
        if link.socket is not None:
            link.socket.close(linger=linger_ms)
            link.socket = None
            self._poller_cache = None

    # --- leaving ---------------------------------------------------------------------

    def _start_drain(self, now: float) -> None:
        """Stop taking work; brokers whose request we do not hold are told at once."""
        self._draining = True
        log.info("draining")
        holding = {job.link for job in (self._job, *self._waiting) if job is not None}
        for link in self.links:
            if link.socket is None:
                continue
            if link not in holding:
                link.send(p.signal(p.DISCONNECT), now)
                self._close(link, self.config.drain_linger_ms)
            elif link.dips:  # it shows us as draining and gives us nothing more
                link.send(p.signal(p.BUSY, p.DRAINING), now)

    def _leave(self) -> None:
        now = time.monotonic()
        for link in self.links:
            if link.socket is not None:
                link.send(p.signal(p.DISCONNECT), now)
                self._close(link, self.config.drain_linger_ms)
        self._jobs.put(None)
        self._wake_recv.close()
        self._wake_send.close()
        log.info("worker stopped after %d requests", self.served)


# --- command line -------------------------------------------------------------------------


def resolve_handler(service: str) -> tuple[Handler, bool]:
    """The handler for a service name and whether it may run inline."""
    if service == "echo":
        return echo, True
    try:
        import renderers
    except ImportError as exc:
        raise ConfigError(f"unknown service {service!r} (no renderers package: {exc})") from exc
    try:
        renderer = renderers.get(service)
    except KeyError:
        known = ", ".join(["echo", *renderers.names()])
        raise ConfigError(f"unknown service {service!r}; known: {known}") from None
    renderers.warm_up()  # templates and codecs now, before the first request pays for them
    return renderer.render, False


def prepare(argv: Sequence[str] | None) -> WorkerConfig:
    """Parse the command line, set up logging, load keys and apply the memory limit."""
    config, args, level = parse_worker_args(argv)
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    if args.curve_secret:
        config.curve = CurveConfig.from_files(args.curve_secret, args.broker_key)
    if config.max_memory_mb:
        limit = config.max_memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = prepare(argv)
        handler, inline = resolve_handler(config.service)
        worker = Worker(config, handler, inline=inline)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (ValueError, OSError) as exc:
        log.error("cannot apply --max-memory-mb: %s", exc)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    log.info("worker for %r starting, brokers %s, version %s", config.service,
             " ".join(config.brokers), worker.meta["version"])
    return worker.run()


if __name__ == "__main__":
    raise SystemExit(main())
