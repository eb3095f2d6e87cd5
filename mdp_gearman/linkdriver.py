"""An asyncio shell for a socket-free :class:`mdp.workercore.WorkerCore`.

:class:`LinkDriver` carries out what the core asks (CONNECT a DEALER to a broker, SEND
frames, CLOSE) and feeds it what arrives, from the event loop: each socket's ZeroMQ
descriptor is watched with ``loop.add_reader`` (the descriptor is edge-triggered, so every
pass reads each socket until it is empty, and reads again after sending), a socket monitor
tells at once that a broker's connection dropped (``core.lost``), and one ``call_at`` timer
runs ``core.tick`` at the core's next deadline. Nothing blocks; one driver per Gearman
worker connection, all on the door's one loop.

:meth:`LinkDriver.close` ends the links: ``abrupt`` closes the sockets at once, so the
brokers see the worker's connections drop (a lost worker: its task goes to another worker
and counts toward the poisoned-request limit); otherwise the core drains first (bounces
what it holds, says DISCONNECT).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from mdp import sockio
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.keys import CurveConfig
from mdp.workercore import WorkerCore
from mdp.workerstate import Phase

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)


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
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.closed = False

    # --- public ------------------------------------------------------------------------

    def start(self) -> None:
        self.core.start(self._loop.time())
        self.pump()

    def pump(self) -> None:
        """Carry out the core's actions, read until quiet, tell the owner, arm the timer.

        The owner calls this after it fed the core an event of its own."""
        if self.closed:
            return
        while True:
            if self.core.actions:
                self._flush()
            if not self._read_all():
                break
        self._arm()

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

    # --- actions -----------------------------------------------------------------------

    def _flush(self) -> None:
        core = self.core
        while core.actions:
            for action in core.take_actions():
                match action:
                    case Send(index, frames):
                        sock = self.sockets[index]
                        if sock is not None:
                            try:
                                sockio.send(sock, frames)
                            except zmq.Again:
                                log.debug("send queue to %s full; message dropped",
                                          core.links[index].endpoint)
                    case Close(index, linger_ms):
                        self._close_socket(index, linger_ms)
                    case Open(index):
                        self._connect(index)

    def _connect(self, index: int) -> None:
        self._close_socket(index, 0)
        endpoint = self.core.links[index].endpoint
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if self.curve is not None:
            self.curve.apply(sock, endpoint)
        monitor = sock.get_monitor_socket(_DISCONNECTED)
        sock.connect(endpoint)
        self.sockets[index], self.monitors[index] = sock, monitor
        fds = (int(sock.get(zmq.FD)), int(monitor.get(zmq.FD)))  # type: ignore[arg-type]
        self._fds[index] = fds
        for fd in fds:
            self._loop.add_reader(fd, self._on_readable)
        self._loop.call_soon(self._on_readable)  # the descriptor may have fired already
        self.core.handle(Opened(index), self._loop.time())  # a DEALER queues until it is up

    def _close_socket(self, index: int, linger_ms: int) -> None:
        sock, monitor = self.sockets[index], self.monitors[index]
        if sock is None:
            return
        for fd in self._fds[index]:
            self._loop.remove_reader(fd)
        self._fds[index] = (-1, -1)
        self.sockets[index] = self.monitors[index] = None
        try:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=linger_ms)
        except zmq.ZMQError as exc:  # the context is going away with the door
            log.debug("closing a link to %s: %s", self.core.links[index].endpoint, exc)

    # --- input -------------------------------------------------------------------------

    def _read_all(self) -> bool:
        """Feed the core everything waiting; True when anything came."""
        core, now, got = self.core, self._loop.time(), False
        for index in range(len(self.sockets)):
            monitor = self.monitors[index]
            if monitor is not None and _dropped(monitor):
                core.handle(Lost(index), now)
                got = True
            sock = self.sockets[index]
            while sock is not None and sock is self.sockets[index] and sockio.readable(sock):
                frames = sockio.recv(sock)
                if frames is None:
                    break
                got = True
                try:
                    core.handle(Received(index, frames), now)
                except Exception:  # the barrier: no input stops the door
                    log.exception("error handling a message from %s", core.links[index].endpoint)
                if core.actions:
                    self._flush()
        if got:
            self.owner.on_input(now)
        return got

    def _on_readable(self) -> None:
        try:
            self.pump()
        except Exception:  # a bug here must not kill the loop's other callbacks
            log.exception("error driving the broker links")

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
        except Exception:
            log.exception("error on a broker link timer")

    def _arm(self) -> None:
        now = self._loop.time()
        at = min(self.core.next_deadline(now), self.owner.next_deadline(now))
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
