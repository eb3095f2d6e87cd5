"""An asyncio shell for a socket-free :class:`mdp.workercore.WorkerCore`.

:class:`LinkDriver` carries out what the core asks (CONNECT a DEALER to a broker, SEND
frames, CLOSE) and feeds it what arrives, from the event loop: each socket's ZeroMQ
descriptor is watched with ``loop.add_reader``, a socket monitor tells at once that a
broker's connection dropped (``core.lost``), and one ``call_at`` timer runs ``core.tick``
at the core's next deadline. Nothing blocks; one driver per Gearman worker connection, all
on the door's one loop.

The work is proportional to what happened, not to the number of links (a Gearman worker of
64 functions at two brokers has 128): a readiness reads that one socket, or checks that one
monitor, and a pass after the core's actions reads only the sockets it sent to. A ZeroMQ
descriptor is edge-triggered, and a send may take the signal of input already waiting, so a
socket is read until it is empty, and read again after each send to it.

:meth:`LinkDriver.close` ends the links: ``abrupt`` closes the sockets at once, so the
brokers see the worker's connections drop (a lost worker: its task goes to another worker
and counts toward the poisoned-request limit); otherwise the core drains first (bounces
what it holds, says DISCONNECT).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from mdp import sockio
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.keys import CurveConfig
from mdp.logs import RateLimitedLog
from mdp.workercore import WorkerCore
from mdp.workerstate import Phase

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
# shared by every driver of the door: a peer (a broker's message, a Gearman worker's
# packets) may repeat a failure at will, over as many connections as it likes
_BUGS = RateLimitedLog(log, level=logging.ERROR)  # the door's own failures, with tracebacks
_DROPS = RateLimitedLog(log)  # messages a full send queue refused


class Owner(Protocol):
    """Who the driver works for: told when the core took something in, woken on time."""

    def on_input(self, now: float) -> None: ...

    def next_deadline(self, now: float) -> float: ...


class LinkDriver:
    """Drive one WorkerCore's broker links from asyncio; see the module docstring."""

    def __init__(self, core: WorkerCore, context: zmq.Context, owner: Owner, *,
                 curve: CurveConfig | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.core = core
        self.context = context
        self.owner = owner
        self.curve = curve
        self.max_message_bytes = max_message_bytes
        count = len(core.links)
        self.sockets: list[zmq.Socket | None] = [None] * count
        self.monitors: list[zmq.Socket | None] = [None] * count
        self._fds: list[tuple[int, int]] = [(-1, -1)] * count
        self._sent: dict[int, None] = {}  # links sent to since their socket was last read
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._arm_queued = False
        self.closed = False

    # --- public ------------------------------------------------------------------------

    def start(self) -> None:
        self.core.start(self._loop.time())
        self.pump()

    def pump(self) -> None:
        """Carry out the core's actions, read the sockets they sent to until quiet, tell
        the owner, arm the timer.

        The owner calls this after it fed the core an event of its own."""
        if not self.closed:
            self._settle(False)

    def drain(self) -> None:
        """Take no new task; bounce what waits; the task in hand may still finish."""
        if not self.closed and self.core.phase is Phase.SERVING:
            self.core.stop(self._loop.time())
            self.pump()

    def close(self, abrupt: bool) -> None:
        """End every link (``abrupt``: at once, as a lost worker; else drained first)."""
        if self.closed:
            return
        if not abrupt:
            self.drain()
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for index in range(len(self.sockets)):
            self._close_socket(index, 0 if abrupt else 500)
        self._sent.clear()

    # --- actions -----------------------------------------------------------------------

    def _settle(self, got: bool) -> None:
        """Carry out the core's actions and read the sockets they sent to, until quiet;
        tell the owner whenever anything came in (``got``: something already did); arm
        the timer once the loop has run the readinesses that came with this one (the
        core's next deadline is a look at every link: once per burst, not per message)."""
        while not self.closed:
            if self.core.actions:
                self._flush()
            sent = self._sent
            while sent:
                got = self._read(next(iter(sent))) or got
            if not got:
                if not self._arm_queued:
                    self._arm_queued = True
                    self._loop.call_soon(self._arm)
                return
            got = False
            self.owner.on_input(self._loop.time())

    def _flush(self) -> None:
        core = self.core
        while core.actions:
            for action in core.take_actions():
                match action:
                    case Send(index, frames):
                        sock = self.sockets[index]
                        if sock is not None:
                            self._sent[index] = None  # the send may take its input's signal
                            try:
                                sockio.send(sock, frames)
                            except zmq.Again:
                                _DROPS(time.monotonic(), "send queue to broker %s full; a "
                                       "message dropped", core.links[index].endpoint)
                    case Close(index, linger_ms):
                        self._close_socket(index, linger_ms)
                    case Open(index):
                        self._connect(index)

    def _connect(self, index: int) -> None:
        self._close_socket(index, 0)
        endpoint = self.core.links[index].endpoint
        sock = self.context.socket(zmq.DEALER)
        monitor: zmq.Socket | None = None
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            if self.curve is not None:
                self.curve.apply(sock, endpoint)
            monitor = sock.get_monitor_socket(_DISCONNECTED)
            sock.connect(endpoint)
        except BaseException:  # (out of sockets or descriptors): the caller is told, and
            if monitor is not None:  # nothing half made is left open
                monitor.close(linger=0)
            sock.close(linger=0)
            raise
        self.sockets[index], self.monitors[index] = sock, monitor
        fds = (int(sock.get(zmq.FD)), int(monitor.get(zmq.FD)))  # type: ignore[arg-type]
        self._fds[index] = fds
        self._loop.add_reader(fds[0], self._on_socket, index, sock)
        self._loop.add_reader(fds[1], self._on_monitor, index, monitor)
        # either descriptor may have fired already
        self._loop.call_soon(self._on_socket, index, sock)
        self._loop.call_soon(self._on_monitor, index, monitor)
        self.core.handle(Opened(index), self._loop.time())  # a DEALER queues until it is up

    def _close_socket(self, index: int, linger_ms: int) -> None:
        sock, monitor = self.sockets[index], self.monitors[index]
        if sock is None:
            return
        for fd in self._fds[index]:
            self._loop.remove_reader(fd)
        self._fds[index] = (-1, -1)
        self.sockets[index] = self.monitors[index] = None
        self._sent.pop(index, None)
        try:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=linger_ms)
        except zmq.ZMQError as exc:  # the context is going away with the door
            log.debug("closing a link to %s: %s", self.core.links[index].endpoint, exc)

    # --- input -------------------------------------------------------------------------

    def _read(self, index: int) -> bool:
        """Feed the core what waits on link ``index``'s socket, until it is empty (its
        descriptor is edge-triggered); True when anything came."""
        self._sent.pop(index, None)
        core, sock, got = self.core, self.sockets[index], False
        while sock is not None and sock is self.sockets[index] and sockio.readable(sock):
            frames = sockio.recv(sock)
            if frames is None:
                break
            got = True
            try:
                core.handle(Received(index, frames), self._loop.time())
            except Exception as exc:  # the barrier: no input stops the door
                _BUGS(time.monotonic(), "error handling a message from %s:\n%s",
                      core.links[index].endpoint, _trace(exc))
            if core.actions:
                self._flush()
        if sock is not None and sock is self.sockets[index]:
            self._sent.pop(index, None)  # read after any send to it meanwhile
        return got

    def _on_socket(self, index: int, sock: zmq.Socket) -> None:
        """Link ``index``'s socket may hold input (if it is still the link's socket)."""
        if self.closed or sock is not self.sockets[index]:
            return  # closed since, or another socket serves the link now
        try:
            self._settle(self._read(index))
        except Exception as exc:  # a bug here must not kill the loop's other callbacks
            _BUGS(time.monotonic(), "error driving the broker links:\n%s", _trace(exc))

    def _on_monitor(self, index: int, monitor: zmq.Socket) -> None:
        """Link ``index``'s monitor may report its connection dropped."""
        if self.closed or monitor is not self.monitors[index]:
            return
        try:
            if _dropped(monitor):
                self.core.handle(Lost(index), self._loop.time())
                self._settle(True)
        except Exception as exc:
            _BUGS(time.monotonic(), "error driving the broker links:\n%s", _trace(exc))

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if self.closed:
            return
        try:
            now = self._loop.time()
            if now >= self.core.next_deadline(now):
                self.core.handle(Tick(), now)
            self.owner.on_input(now)
            self.pump()
        except Exception as exc:
            _BUGS(time.monotonic(), "error on a broker link timer:\n%s", _trace(exc))

    def _arm(self) -> None:
        self._arm_queued = False
        if self.closed:
            return
        try:
            now = self._loop.time()
            at = min(self.core.next_deadline(now), self.owner.next_deadline(now))
        except Exception as exc:
            _BUGS(time.monotonic(), "error arming a broker link timer:\n%s", _trace(exc))
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)


def _dropped(monitor: zmq.Socket) -> bool:
    """Whether the monitor reported a dropped connection (its queue is emptied)."""
    dropped = False
    while sockio.readable(monitor):
        event = recv_monitor_message(monitor, zmq.NOBLOCK)
        dropped = dropped or event["event"] == _DISCONNECTED
    return dropped


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).rstrip()
