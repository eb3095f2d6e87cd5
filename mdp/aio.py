"""The asyncio client: ``await AsyncMDPClient(brokers).send(service, request)``.

The second shell on :class:`mdp.clientcore.ClientCore` (the sync one is
:class:`mdp.client.MDPClient`): same options, same failover, same guarantees. Many tasks
may await ``send`` on one client at once; each call is a future that the core's finished
calls resolve. There is no thread and no task per call: the event loop calls this client
back when one of its sockets' descriptors is readable (``loop.add_reader``; ZeroMQ
descriptors are edge-triggered, so every pass reads until ``EVENTS`` shows nothing more)
and at the core's next deadline (one ``loop.call_at`` timer). Usable from Starlette or
aiohttp without a thread pool. One client belongs to one event loop.

Each connection is a link of :mod:`mdp.zmtplinks`, as for the sync client: by default ZMTP
on a plain non-blocking socket read and written in the loop's own callbacks (its
descriptor is an ordinary level-triggered one, watched for writing only while bytes wait),
with none of libzmq's thread hand-offs; CURVE, ``inproc://``, a host given by name (its
lookup would block the loop) and ``transport="zmq"`` use a pyzmq DEALER. (The sync client
speaks it only when asked: ``transport="plain"``.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.asyncio

from mdp.actions import Close, Open, Send
from mdp.clientcodec import check_frame, decode_status, encode_request, service_name
from mdp.clientcore import ClientCore
from mdp.clientrecords import CANCELLED, Call, OnProgress, State
from mdp.errors import ProtocolError
from mdp.keys import CurveConfig
from mdp.options import ClientOptions, resolve
from mdp.zmtplinks import (
    RECONNECT_S,
    Complaints,
    Link,
    PlainLink,
    ZmqLink,
    needs_lookup,
    open_link,
    reopened,
)

log = logging.getLogger(__name__)

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
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
        self._plain = options.transport in ("auto", "plain")
        self._links: list[Link | None] = [None] * len(self.brokers)
        self._fds: list[int] = [-1] * len(self.brokers)
        self._writing: set[int] = set()  # plain links watched for writing
        self._retries: dict[int, asyncio.TimerHandle] = {}  # refused: the next try
        self._complaints = Complaints(len(self.brokers))
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

    def start(self, service: str, request: dict[str, Any], on_done: Callable[[Any], object],
              *, timeout: float | None = None, priority: int = 0, key: bytes | None = None,
              on_progress: OnProgress | None = None) -> Call:
        """:meth:`send` without a task or a future, for code that is itself driven by the
        event loop's callbacks (a door's protocol): the request is placed now, and
        ``on_done(outcome)`` is called once, on the event loop, with the result or the
        exception :meth:`send` would raise (it may be called before this returns, when the
        call ends at once). Returns the call, for :meth:`cancel` (after which ``on_done`` is
        not called). Call it on the loop the client belongs to. A request that cannot be
        encoded raises here. ``on_done`` should not raise: what it raises is logged."""
        body = encode_request(request, self.max_request_bytes)
        loop = self._loop or self._bind()
        self._check_idle(loop)
        call = self._core.submit(service_name(service), [body], loop.time(),
                                 timeout=self.timeout if timeout is None else timeout,
                                 priority=priority, tag=on_done, key=key,
                                 on_progress=on_progress)
        self._pump()
        return call

    def cancel(self, call: Call) -> None:
        """Give up a call placed by :meth:`start`: its ``on_done`` is not called, and a late
        reply to it is dropped. (Nothing happens if it has ended.)"""
        loop = self._loop
        if loop is not None and not call.done:
            self._core.cancel(call, loop.time())
            self._pump()

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
        self._check_idle(loop)
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
            if self._flush(loop):
                read = True
            if core.progress:
                self._report(loop)
                continue
            if not read:
                break
            read = False
            if not self._read_all(loop.time()):
                break
            core.tick(loop.time())
        for call in core.take_finished() if core.finished else ():
            tag = call.tag
            if not isinstance(tag, asyncio.Future):  # placed by start(): its callback
                try:  # (_call_back, inline: each call's path)
                    tag(call.outcome)
                except Exception:
                    log.exception("AsyncMDPClient: a call's on_done callback failed")
            elif not tag.done():
                if isinstance(call.outcome, BaseException):
                    tag.set_exception(call.outcome)
                else:
                    tag.set_result(call.outcome)
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
        tag = call.tag
        if not isinstance(tag, asyncio.Future):  # placed by start()
            if not call.done:  # (its reply came in the same pass: the reply stands)
                self._core.cancel(call, loop.time())
                _call_back(tag, exc)
            return
        self._core.cancel(call, loop.time())
        if not tag.done():
            tag.set_exception(exc)

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
            if fired is not None and isinstance(self._links[fired], PlainLink):
                self._plain_io(fired, loop)
            if self._connecting:
                for index in list(self._connecting):
                    link = self._links[index]
                    if isinstance(link, ZmqLink) and _writable(link.sock):
                        link.on_events(_POLLOUT)
                    if link is not None and link.up:
                        self._connecting.discard(index)
                        self._core.opened(index, now)
            self._read_all(now, fired)
            if fired is None:
                self._core.tick(now)
            else:  # (what is due by the clock is the timer's: see _pump)
                self._core.fill(now)
            self._pump(read=False)
        except Exception:  # one barrier per pass: a bug here must not kill the loop's callbacks
            log.exception("AsyncMDPClient: error handling an event")

    def _read_all(self, now: float, only: int | None = None) -> bool:
        """Feed the core every message waiting (on link ``only``, if given); whether any
        came."""
        received = self._core.received
        got = False
        links = self._links
        for index in range(len(links)) if only is None else (only,):
            link = links[index]
            # a pyzmq link reads until EVENTS shows nothing more; a plain one hands over
            # what its reader callback read
            if link is not None and index not in self._connecting:
                for frames in link.take():
                    received(index, frames, now)
                    got = True
        return got

    def _plain_io(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        """Plain link ``index`` is readable or writable: read and write what may go."""
        link = self._links[index]
        assert link is not None  # noqa: S101 - a closed link has no callbacks
        try:
            link.on_events(_POLLIN | _POLLOUT)
        except (ConnectionError, ProtocolError) as exc:
            self._failed(index, exc, loop)
            return
        self._watch_writes(index, link, loop)

    def _watch_writes(self, index: int, link: Link, loop: asyncio.AbstractEventLoop) -> None:
        """Watch a plain link's descriptor for writing while bytes wait to go, only then."""
        wants = bool(link.poll_flags() & _POLLOUT)
        if wants and index not in self._writing:
            loop.add_writer(self._fds[index], self._on_event, index)
            self._writing.add(index)
        elif not wants and index in self._writing:
            loop.remove_writer(self._fds[index])
            self._writing.discard(index)

    def _check_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Before a call is placed: a plain link left unread for a while (the loop was
        blocked) is read, so that a connection the broker dropped meanwhile is opened again
        while it carries none of our calls (see :meth:`MDPClient._check_idle`)."""
        for index, link in enumerate(self._links):
            if isinstance(link, PlainLink) and index not in self._connecting:
                try:
                    link.check_idle()
                except (ConnectionError, ProtocolError) as exc:
                    self._failed(index, exc, loop)

    def _failed(self, index: int, exc: Exception, loop: asyncio.AbstractEventLoop) -> None:
        """Link ``index`` broke: the whole messages it read before go to the core (libzmq
        delivers them before it reports the connection gone); then a refused connection is
        tried again (as libzmq does, until the core's connect timeout); an idle one the
        broker dropped is opened again; any other is lost (see
        :func:`mdp.zmtplinks.reopened`)."""
        link = self._links[index]
        ep = self._core.endpoints[index]
        connecting = index in self._connecting
        if link is not None and not connecting:
            now = loop.time()
            for frames in link.take():
                self._core.received(index, frames, now)
        self._close(index, loop)
        if connecting and isinstance(exc, ConnectionError):
            log.debug("%s; trying again in %.1fs", exc, RECONNECT_S)
            self._retry_later(index, loop)
            return
        self._complaints.note(index, ep.address, exc, loop.time())
        again = reopened(link, exc, ep.address, self.max_reply_bytes,
                         ep.state is State.DIPS and not ep.calls)
        if again is None:
            self._core.lost(index, loop.time())
        else:
            self._watch(index, again, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Carry out the core's actions, until it has none; whether it had any."""
        take = self._core.take_actions
        actions = take()
        if not actions:
            return False
        while actions:
            for action in actions:
                match action:
                    case Send(index, frames):
                        link = self._links[index]
                        if link is not None:
                            self._send(index, link, frames, loop)
                    case Open(index):
                        self._open(index, loop)
                    case Close(index):
                        self._close(index, loop)
            actions = take()
        return True

    def _send(self, index: int, link: Link, frames: list[bytes],
              loop: asyncio.AbstractEventLoop) -> None:
        try:
            link.send(frames)
        except (ConnectionError, ProtocolError) as exc:  # (a pyzmq link: not connected)
            self._failed(index, exc, loop)
            again = self._links[index]
            if again is not None:  # reopened: the message waits for its handshake
                try:
                    again.send(frames)
                except (ConnectionError, ProtocolError) as error:  # refused at once
                    self._close(index, loop)
                    log.debug("%s", error)
                    self._core.lost(index, loop.time())
            return
        if index in self._writing or isinstance(link, PlainLink):
            self._watch_writes(index, link, loop)

    def _open(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self._close(index, loop)
        self._connect(index, loop)

    def _connect(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self._retries.pop(index, None)
        address = self.brokers[index]
        try:  # (a host name is resolved by libzmq's thread, not in the event loop)
            link = open_link(address, self.max_reply_bytes, self.curve, self.context,
                             self._plain and not needs_lookup(address))
        except (ConnectionRefusedError, FileNotFoundError) as exc:  # (ipc: no socket file)
            log.debug("broker %s: %s; trying again in %.1fs", address, exc, RECONNECT_S)
            self._retry_later(index, loop)
            return
        except (zmq.ZMQError, OSError, ValueError) as exc:
            log.debug("cannot open a connection to broker %s: %s", address, exc)
            self._core.lost(index, loop.time())  # it says so, rate-limited
            return
        self._watch(index, link, loop)
        self._connecting.add(index)
        # a pyzmq descriptor may already have signalled (edge-triggered): look once now too
        loop.call_soon(self._on_event)

    def _retry_later(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self._connecting.add(index)
        self._retries[index] = loop.call_later(RECONNECT_S, self._retry, index)

    def _retry(self, index: int) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101
        try:
            if index in self._retries:
                self._connect(index, loop)
                self._pump()
        except Exception:  # the loop's callback: a bug here must not kill the loop
            log.exception("AsyncMDPClient: error reconnecting")

    def _watch(self, index: int, link: Link, loop: asyncio.AbstractEventLoop) -> None:
        self._links[index] = link
        fd = link.poll_target() if isinstance(link, PlainLink) else link.poll_target().fileno()
        self._fds[index] = fd
        loop.add_reader(fd, self._on_event, index)
        if isinstance(link, PlainLink):
            self._watch_writes(index, link, loop)

    def _close(self, index: int, loop: asyncio.AbstractEventLoop) -> None:
        retry = self._retries.pop(index, None)
        if retry is not None:
            retry.cancel()
        self._connecting.discard(index)
        link = self._links[index]
        if link is not None:
            loop.remove_reader(self._fds[index])
            if index in self._writing:
                loop.remove_writer(self._fds[index])
                self._writing.discard(index)
            link.close()
            self._links[index] = None
            self._fds[index] = -1


def _call_back(on_done: Callable[[Any], object], outcome: Any) -> None:
    """A call placed by :meth:`AsyncMDPClient.start` ended: tell its caller. What the
    callback raises is logged: the other calls that ended in the same pass are told too."""
    try:
        on_done(outcome)
    except Exception:
        log.exception("AsyncMDPClient: a call's on_done callback failed")


def _writable(sock: zmq.Socket) -> bool:
    """Whether a connecting socket is up (with IMMEDIATE, writable means connected)."""
    events = sock.get(_EVENTS)
    return isinstance(events, int) and bool(events & _POLLOUT)
