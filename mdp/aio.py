"""The asyncio client: ``await AsyncMDPClient(brokers).send(service, request)``.

The second shell on :class:`mdp.clientcore.ClientCore` (the sync one is
:class:`mdp.client.MDPClient`): same options, same failover, same guarantees. Many tasks
may await ``send`` on one client at once; each call is a future that the core's finished
calls resolve. There is no thread and no task per call: the event loop calls this client
back when one of its sockets' descriptors is readable (``loop.add_reader``; ZeroMQ
descriptors are edge-triggered, so every pass reads until ``EVENTS`` shows nothing more)
and at the core's next deadline (one ``loop.call_at`` timer). Usable from Starlette or
aiohttp without a thread pool. One client belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.asyncio

from mdp import sockio
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.client import open_socket
from mdp.clientcodec import check_frame, decode_status, encode_request, service_name
from mdp.clientcore import ClientCore
from mdp.clientrecords import CANCELLED, Call, OnProgress
from mdp.keys import CurveConfig
from mdp.options import ClientOptions, resolve

log = logging.getLogger(__name__)

_EVENTS = int(zmq.EVENTS)
_POLLOUT = int(zmq.POLLOUT)


class AsyncMDPClient:
    """Send requests through any of several brokers from asyncio code."""

    def __init__(self, brokers: Sequence[str], options: ClientOptions | None = None, *,
                 curve: CurveConfig | None = None,
                 context: zmq.asyncio.Context | zmq.Context | None = None,
                 **overrides: Any) -> None:
        """Options as for :class:`mdp.client.MDPClient`."""
        self.options = options = resolve(options, overrides)
        self._core = ClientCore(
            brokers, options,
            start=random.randrange(len(brokers)) if options.shuffle and brokers else 0)
        self.brokers = self._core.brokers
        self.timeout = options.timeout
        self.curve = curve
        self.max_request_bytes = options.max_request_bytes
        self.max_reply_bytes = options.max_reply_bytes
        self.context = context or zmq.asyncio.Context.instance()
        self._sockets: list[zmq.Socket | None] = [None] * len(self.brokers)
        self._fds: list[int] = [-1] * len(self.brokers)
        self._connecting: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    # --- public API ------------------------------------------------------------------

    async def send(self, service: str, request: dict[str, Any], *,
                   timeout: float | None = None, priority: int = 0,
                   key: bytes | None = None, on_progress: OnProgress | None = None) -> Any:
        """The result of one request; raises RequestError subclasses or Timeout.

        ``key`` and ``on_progress`` as for :meth:`mdp.client.MDPClient.send`;
        ``on_progress`` is called on the event loop (it must not block), and an exception
        it raises ends the call and is raised here."""
        body = encode_request(request, self.max_request_bytes)
        return await self._call(service_name(service), [body], timeout, priority, False,
                                key, on_progress)

    async def send_frame(self, service: str, frame: bytes, *, timeout: float | None = None,
                         priority: int = 0, key: bytes | None = None) -> Any:
        """Like :meth:`send`, with the request already encoded: ``frame`` is the msgpack
        map as it goes on the wire (a door passes a body it received through this way,
        without decoding and encoding it again). The worker checks that it is a map."""
        return await self._call(service_name(service),
                                [check_frame(frame, self.max_request_bytes)], timeout,
                                priority, False, key)

    async def request_raw(self, service: str, body: bytes, *,
                          key: bytes | None = None) -> list[bytes]:
        """Send one frame as it is and return the reply's frames undecoded (e.g. MMI);
        ``key``: a coalescing key, as :meth:`send` takes."""
        frames: list[bytes] = await self._call(service.encode(), [body], None, 0, True, key)
        return frames

    async def mmi_service(self, name: str) -> str:
        """8/MMI: "200" if a worker offers ``name``, "404" if none, "501" if unsupported."""
        reply = await self.request_raw("mmi.service", name.encode())
        return reply[0].decode("ascii", "replace")

    async def status(self) -> dict[str, Any]:
        """The broker's ``mmi.status`` map (ask it with a single-broker client)."""
        return decode_status(await self.request_raw("mmi.status", b""))

    async def close(self) -> None:
        """Close every connection; calls still outstanding raise ClientClosed."""
        if self._loop is None:
            return
        self._core.close(self._loop.time())
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    async def __aenter__(self) -> AsyncMDPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- driving the core ------------------------------------------------------------

    async def _call(self, service: bytes, body: list[bytes], timeout: float | None,
                    priority: int, raw: bool, key: bytes | None = None,
                    on_progress: OnProgress | None = None) -> Any:
        loop = self._bind()
        future: asyncio.Future[Any] = loop.create_future()
        call = self._core.submit(service, body, loop.time(),
                                 timeout=self.timeout if timeout is None else timeout,
                                 priority=priority, raw=raw, tag=future, key=key,
                                 on_progress=on_progress)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            if not call.done:
                self._core.cancel(call, loop.time())
                self._pump()
            raise

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("an AsyncMDPClient belongs to the event loop that first used it")
        return loop

    def _pump(self, read: bool = True) -> None:
        """Carry out actions and read until quiet; resolve futures; set the timer.

        ``read``: look at the sockets first (False: the caller has just read every socket
        until it showed nothing more, and nothing was sent since). They are looked at again
        only after a send: ZeroMQ's descriptors are edge-triggered, and a send may take in
        the signal of a message that arrived meanwhile; otherwise the descriptor signals
        the next message, and this client is called back."""
        core = self._core
        loop = self._loop
        assert loop is not None  # noqa: S101 - bound before any pump (not peer input)
        while True:
            if core.has_actions:
                self._flush(loop)
                read = True
            if core.progress:
                self._report(loop)
                continue
            if not read:
                break
            read = False
            if not self._read_all(loop.time()):
                break
            core.handle(Tick(), loop.time())
        for call in core.take_finished():
            future = call.tag
            if not future.done():
                if isinstance(call.outcome, BaseException):
                    future.set_exception(call.outcome)
                else:
                    future.set_result(call.outcome)
        deadline = core.next_deadline()
        if deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        """Progress reports to their calls' ``on_progress``; one that raises ends its call
        with that exception."""
        core = self._core
        for call, progress in core.take_progress():
            # also when its reply came in the same pass: every report came before it
            if call.on_progress is None or call.outcome is CANCELLED:
                continue
            try:
                call.on_progress(progress.kind, progress.num, progress.den, progress.data)
            except Exception as exc:
                self._fail_call(call, exc, loop)

    def _fail_call(self, call: Call, exc: Exception, loop: asyncio.AbstractEventLoop) -> None:
        future = call.tag
        self._core.cancel(call, loop.time())
        if not future.done():
            future.set_exception(exc)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._on_event()

    def _on_event(self, fired: int | None = None) -> None:
        """The loop's callback: a socket may be readable or connected, or a timer is due.

        ``fired``: the link whose descriptor signalled; only that socket is read (every
        other one was read until it showed nothing more, or its own descriptor signals)."""
        try:
            loop = self._loop
            assert loop is not None  # noqa: S101
            now = loop.time()
            if self._connecting:
                for index in list(self._connecting):
                    sock = self._sockets[index]
                    if sock is not None and _writable(sock):
                        self._connecting.discard(index)
                        self._core.handle(Opened(index), now)
            self._read_all(now, fired)
            self._core.handle(Tick(), now)
            self._pump(read=False)
        except Exception:  # one barrier per pass: a bug here must not kill the loop's callbacks
            log.exception("AsyncMDPClient: error handling an event")

    def _read_all(self, now: float, only: int | None = None) -> bool:
        """Feed the core every message waiting (on link ``only``, if given); whether any
        came."""
        core = self._core
        got = False
        sockets = self._sockets
        for index in range(len(sockets)) if only is None else (only,):
            sock = sockets[index]
            # asking before each receive is cheaper than a receive that finds nothing
            # (pyzmq builds a zmq.Again), and a pass usually finds one or two messages
            if sock is not None and index not in self._connecting:
                while sockio.readable(sock) and (frames := sockio.recv(sock)) is not None:
                    core.handle(Received(index, frames), now)
                    got = True
        return got

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        core = self._core
        while core.has_actions:
            for action in core.take_actions():
                match action:
                    case Send(index, frames):
                        sock = self._sockets[index]
                        if sock is not None:
                            try:
                                sockio.send(sock, frames)
                            except zmq.Again:  # no connection: the broker is gone
                                core.handle(Lost(index), loop.time())
                    case Open(index):
                        self._open(index, loop)
                    case Close(index):
                        self._close(index, loop)

    def _open(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self._close(index, loop)
        address = self.brokers[index]
        try:
            sock = open_socket(self.context, address, self.curve, self.max_reply_bytes)
        except zmq.ZMQError as exc:
            log.debug("cannot open a socket to broker %s: %s", address, exc)
            self._core.handle(Lost(index), loop.time())  # it says so, rate-limited
            return
        self._sockets[index] = sock
        self._connecting.add(index)
        fd = sock.fileno()
        self._fds[index] = fd
        loop.add_reader(fd, self._on_event, index)
        # the descriptor may already have signalled (edge-triggered): look once now too
        loop.call_soon(self._on_event)

    def _close(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        sock = self._sockets[index]
        if sock is not None:
            loop.remove_reader(self._fds[index])
            sock.close(linger=0)
            self._sockets[index] = None
            self._fds[index] = -1
            self._connecting.discard(index)


def _writable(sock: zmq.Socket) -> bool:
    """Whether a connecting socket is up (with IMMEDIATE, writable means connected)."""
    events = sock.get(_EVENTS)
    return isinstance(events, int) and bool(events & _POLLOUT)
