"""The Majordomo client: ``MDPClient(brokers).send(service, request)``.

A thin blocking shell around :class:`mdp.clientcore.ClientCore`, which makes every
decision (which broker, handshake, pings, failover, resends, id matching, deadlines; see
its docstring and ``docs/PROTOCOL.md`` section 3). This module only carries out the
core's actions on DEALER sockets and feeds it what arrives, in one loop:

    carry out actions (Open, Close, Send)  ->  wait in one receive or poll, up to the
    core's next deadline  ->  read every message available (Received)  ->  Tick

Each connection is a link (:mod:`mdp.zmtplinks`): by default (``transport="auto"``) ZMTP
spoken on a plain socket in this thread (:class:`~mdp.zmtplinks.PlainLink`) to a ``tcp://``
address or ``ipc://`` path without CURVE, a pyzmq DEALER (:class:`~mdp.zmtplinks.ZmqLink`)
to anything else (CURVE, ``inproc://``, a host name); ``$DIPS_CLIENT_TRANSPORT`` changes
what ``auto`` means (:func:`plain_transport`). A broker's plain ROUTER keeps an idle
client's connection; a pyzmq one drops it when its ZMTP heartbeats go unanswered while the
caller is idle: a plain link dropped so while it carried nothing is opened again at once,
as libzmq would, with a new HELLO; one lost with calls on it, or before its handshake, is
reported to the core (:class:`~mdp.actions.Lost`), which fails over.

A single ``send`` on a live connection is short: SUBMIT, send, block in the socket's own
receive until the reply or the next deadline, match, done. ``send_many`` and
``iter_many`` keep up to ``window`` requests in flight over all live brokers; once the
window is full it refills in steps (see :mod:`mdp.clientcore`), so between ``window`` less
an eighth and ``window`` are in flight while requests wait.

``MDPClient`` is not thread-safe: use one per thread (or :class:`mdp.aio.AsyncMDPClient`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import zmq

from mdp import protocol as p
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.clientcodec import check_frame, decode_status, encode_request, service_name
from mdp.clientcore import ClientCore
from mdp.clientrecords import CANCELLED, Call, OnProgress, State
from mdp.clock import poll_timeout_ms
from mdp.errors import (
    ClientClosed,
    ConfigError,
    ProtocolError,
    RequestError,
    UnknownService,
)
from mdp.keys import CurveConfig
from mdp.options import TRANSPORTS, ClientOptions, resolve
from mdp.zmtplinks import (
    RECONNECT_S,
    Complaints,
    Link,
    PlainLink,
    needs_lookup,
    open_link,
    open_socket,
    reopened,
)

log = logging.getLogger(__name__)

__all__ = ["CLIENT_TRANSPORT_ENV", "MDPClient", "open_socket", "report"]

CLIENT_TRANSPORT_ENV = "DIPS_CLIENT_TRANSPORT"  # what transport="auto" means for MDPClient

AUTO_TRANSPORT = "plain"  # what "auto" is for this shell when the variable is unset
_MAX_WAIT_S = 1.0  # a wait never exceeds this, whatever the core says
_NOT_LONE: Any = object()  # _lone: the call cannot take the fast path


class MDPClient:
    """Send requests to a service through any of several brokers."""

    def __init__(self, brokers: Sequence[str], options: ClientOptions | None = None, *,
                 curve: CurveConfig | None = None, context: zmq.Context | None = None,
                 **overrides: Any) -> None:
        """
        :param brokers: broker endpoints, e.g. ``["tcp://10.0.0.1:5555", ...]``; a malformed
            one raises :class:`~mdp.errors.ConfigError` at once.
        :param options: a :class:`mdp.options.ClientOptions` (timeouts, retries, limits);
            keyword ``overrides`` change single options, e.g. ``timeout=5.0``.
        :param curve: keys for brokers that require CURVE (see :mod:`mdp.keys`).
        """
        self.options = options = resolve(options, overrides)
        self._core = self._new_core(brokers)
        self.brokers = self._core.brokers
        self.timeout = options.timeout
        self.curve = curve
        self.max_request_bytes = options.max_request_bytes
        self.max_reply_bytes = options.max_reply_bytes
        self.context = context or zmq.Context.instance()
        self._plain, self._plain_names = plain_transport(options.transport)
        self._links: list[Link | None] = [None] * len(self.brokers)
        self._connecting: set[int] = set()
        self._retry_at: dict[int, float] = {}  # refused while connecting: when to try again
        self._poller: zmq.Poller | None = None
        self._polled: dict[Any, tuple[int, int]] = {}  # poll target: (link index, flags)
        self._complaints = Complaints(len(self.brokers))
        # a lone call waits in one receive up to the broker's ping (or its own deadline)
        self._lone_wait_ms = max(1, math.ceil(min(options.ping_interval, _MAX_WAIT_S) * 1000))
        self._iterating = 0  # iter_many generators alive (they read core.finished)
        self._inherited = False  # this process is a fork of the one that made the client
        _LIVE.add(self)

    # --- public API ------------------------------------------------------------------

    def send(self, service: str, request: dict[str, Any], *, timeout: float | None = None,
             priority: int = 0, key: bytes | None = None,
             on_progress: OnProgress | None = None) -> Any:
        """Send one request and return the result of its reply.

        Raises a :class:`~mdp.errors.RequestError` subclass for an error reply, and
        :class:`~mdp.errors.Timeout` when no broker answered in time. ``priority`` is
        -1 (low), 0 or 1 (high). ``key`` (1-64 bytes) is a coalescing key: identical
        requests in flight at once, from any client, are worked once (derive it from
        everything that decides the reply); the broker shares a request only with one of
        the same key whose encoded body is the same bytes (build the map the same way,
        keys in the same order). ``on_progress(kind, num, den, data)`` is
        called, in this thread, with each progress report of the worker (kind
        ``"status"``: ``num`` of ``den``; ``"data"``, ``"warning"``: ``data``); an exception
        it raises ends the call and is raised here.
        """
        body = encode_request(request, self.max_request_bytes)
        return self._send(service_name(service), body,
                          self.timeout if timeout is None else timeout, priority, key,
                          on_progress)

    def send_frame(self, service: str, frame: bytes, *, timeout: float | None = None,
                   priority: int = 0, key: bytes | None = None) -> Any:
        """Like :meth:`send`, with the request already encoded: ``frame`` is the msgpack
        map as it goes on the wire (a door passes a body it received through this way,
        without decoding and encoding it again). The worker checks that it is a map."""
        return self._send(service_name(service), check_frame(frame, self.max_request_bytes),
                          self.timeout if timeout is None else timeout, priority, key, None)

    def _send(self, name: bytes, body: bytes, timeout: float, priority: int,
              key: bytes | None, on_progress: OnProgress | None) -> Any:
        self._check_idle()
        if key is None and on_progress is None and not self._iterating:
            outcome = self._lone(name, body, timeout, priority)
            if outcome is not _NOT_LONE:
                return outcome
        call = self._core.submit(name, [body], time.monotonic(), timeout=timeout,
                                 priority=priority, key=key, on_progress=on_progress)
        return self._outcome(call)

    def _lone(self, name: bytes, body: bytes, timeout: float, priority: int) -> Any:
        """The lone call on a live DIPS connection, without the core's bookkeeping: SUBMIT,
        send, block in the socket's receive until the RESULT (or the core's next deadline:
        the call's own, or the broker's ping), match it by its meta, decode, done. Anything
        else (a failed send, a wait that ends without our RESULT, ``unknown_service``, which
        other brokers are asked about) hands the call to the core as sent at its start
        (:meth:`ClientCore.adopt`) and the usual loop takes over."""
        core = self._core
        started = core.lone_start()
        if started is None:
            return _NOT_LONE
        rid, ep = started
        index = ep.index
        now = time.monotonic()
        messages: list[list[bytes]] = []
        # (written without reading the link first: _send just asked it, see _check_idle)
        link = self._send_on(index, p.client_submit(name, rid, max(1, int(timeout * 1000)),
                                                    [body], priority), checked=True)
        if link is not None:
            wait_ms = self._lone_wait_ms  # (the core's next deadline: a ping, or the call's)
            if timeout * 1000 < wait_ms:
                wait_ms = max(1, math.ceil(timeout * 1000))
            try:
                messages = link.wait(wait_ms)
            except (ConnectionError, ProtocolError) as exc:
                messages = link.take()  # whole before it broke: the core hears them first
                link = self._broken(index, exc, busy=True)
            frames = messages[0] if len(messages) == 1 else None
            if (frames is not None and len(frames) == 6 and frames[2] == p.RESULT
                    and frames[1] == p.DIPS_CLIENT and frames[4] == p.pack_meta({"id": rid})):
                try:
                    result = p.decode_reply(frames[5:])
                except UnknownService:
                    pass  # the other brokers are asked: the core's decision
                except (RequestError, ProtocolError) as exc:
                    core.lone_heard(ep, time.monotonic())
                    raise exc from None
                else:
                    core.lone_heard(ep, time.monotonic())
                    return result
        call = core.adopt(rid, name, [body], now, timeout=timeout, priority=priority, ep=ep)
        at = time.monotonic()
        for frames in messages:
            core.handle(Received(index, frames), at)
        if link is None:
            core.handle(Lost(index), at)
        return self._outcome(call)

    def send_many(
        self,
        service: str,
        requests: Iterable[dict[str, Any]],
        *,
        window: int = 64,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Send many requests with up to ``window`` in flight; results in request order.

        With ``return_exceptions`` an error takes the place of its result; otherwise the
        first error (in request order) is raised once every request has finished.
        """
        items = list(requests)
        outcomes: list[Any] = [None] * len(items)
        for index, outcome in self.iter_many(service, items, window=window):
            outcomes[index] = outcome
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
        return outcomes

    def iter_many(self, service: str, requests: Iterable[dict[str, Any]], *,
                  window: int = 64) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result or exception)`` for each request, in completion order.

        Every request is encoded (and refused with BadRequest) before any is sent. Closing
        the iterator early gives up the requests still outstanding.
        """
        name = service_name(service)
        bodies = [encode_request(request, self.max_request_bytes) for request in requests]
        return self._iterate(name, bodies, max(1, window))

    def request_raw(self, service: str, body: bytes) -> list[bytes]:
        """Send one frame as it is and return the reply's frames undecoded (e.g. MMI)."""
        self._check_idle()
        call = self._core.submit(service.encode(), [body], time.monotonic(),
                                 timeout=self.timeout, raw=True)
        frames: list[bytes] = self._outcome(call)
        return frames

    def mmi_service(self, name: str) -> str:
        """8/MMI: "200" if a worker offers ``name``, "404" if none, "501" if unsupported."""
        return self.request_raw("mmi.service", name.encode())[0].decode("ascii", "replace")

    def status(self) -> dict[str, Any]:
        """The broker's ``mmi.status`` map (send it with a single-broker client)."""
        return decode_status(self.request_raw("mmi.status", b""))

    def close(self) -> None:
        if self._inherited:
            self._start_over()
        self._core.close(time.monotonic())
        self._core.finished.clear()
        self._flush()

    def __enter__(self) -> MDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- driving the core ------------------------------------------------------------

    def _outcome(self, call: Call) -> Any:
        core = self._core
        try:
            self._flush()
            while not call.done:
                self._wait(call)
                self._flush()
                if core.progress:
                    report(core)
        finally:
            if not call.done:  # an exception (KeyboardInterrupt, say) escaped
                core.cancel(call, time.monotonic())
                self._flush()
            if not self._iterating:
                core.finished.clear()
        if isinstance(call.outcome, Exception):
            raise call.outcome
        return call.outcome

    def _iterate(self, name: bytes, bodies: list[bytes],
                 window: int) -> Iterator[tuple[int, Any]]:
        self._check_idle()
        core = self._core
        self._iterating += 1
        core.window = window
        now = time.monotonic()
        calls = [core.submit(name, [body], now, timeout=self.timeout, tag=index)
                 for index, body in enumerate(bodies)]
        mine = {id(call) for call in calls}  # (alive in calls, so no id is reused)
        left = len(calls)
        try:
            while left:
                self._flush()
                for call in _take_own(core, mine):
                    left -= 1
                    yield call.tag, call.outcome
                    if self._inherited or self._core is not core:
                        raise ClientClosed("this iter_many was started before the process "
                                           "forked; its calls are the parent's: start a new "
                                           "one in this process")
                if left:
                    self._wait(None)
        finally:
            if not self._inherited and self._core is core:  # (else the parent's, forked)
                self._iterating -= 1
                core.window = math.inf
                now = time.monotonic()
                for call in calls:
                    core.cancel(call, now)
                self._flush()
                _take_own(core, mine)  # (cancelled: nobody reads them)
                if not self._iterating:
                    core.finished.clear()  # (sends' calls, kept while an iterator ran)

    def _flush(self) -> None:
        """Carry out the core's actions, in order."""
        core = self._core
        while core.has_actions:
            for action in core.take_actions():
                match action:
                    case Send(index, frames):
                        if self._links[index] is not None and \
                                self._send_on(index, frames) is None:
                            core.handle(Lost(index), time.monotonic())
                    case Open(index):
                        self._open(index)
                    case Close(index):
                        self._close(index)

    def _wait(self, call: Call | None) -> None:
        """Wait for a message or the next deadline; read all there is; run the timers.

        With one call outstanding on a connection that is up, wait in that socket's own
        receive (one system call); otherwise poll every socket, or with no socket open
        (every broker down) sleep: either way in the kernel, never in a loop.
        """
        core = self._core
        now = time.monotonic()
        wake = min(core.next_deadline(), now + _MAX_WAIT_S)
        if self._retry_at:
            wake = min(wake, self._retry(now))
        timeout_ms = poll_timeout_ms(wake, now)
        ep = call.endpoint if call is not None else None
        if ep is not None and not self._connecting and len(core.pending) == 1 \
                and (link := self._links[ep.index]) is not None:
            index = ep.index
            try:
                messages = link.wait(timeout_ms)
            except (ConnectionError, ProtocolError) as exc:
                messages = []
                if self._broken(index, exc) is None:
                    core.handle(Lost(index), time.monotonic())
            now = time.monotonic()
            for frames in messages:
                core.handle(Received(index, frames), now)
            if messages and call is not None and call.done:
                return
        elif self._open_count:
            events = self._get_poller().poll(timeout_ms)
            now = time.monotonic()
            for target, event in events:
                self._on_events(target, event, now)
        else:
            time.sleep(timeout_ms / 1000)  # zmq_poll on no socket would not wait at all
            now = time.monotonic()
        self._read_all(now)
        core.handle(Tick(), now)

    def _read_all(self, now: float) -> None:
        core = self._core
        for index, link in enumerate(self._links):
            if link is not None and index not in self._connecting:
                for frames in link.take():
                    core.handle(Received(index, frames), now)

    def _on_events(self, target: Any, events: int, now: float) -> None:
        """A link's poll ``events``: its I/O (a plain link reads and writes here), then
        whether it came up or broke."""
        index = self._polled[target][0]
        link = self._links[index]
        if link is None:
            return
        try:
            link.on_events(events)
        except ConnectionError as exc:
            if index in self._connecting and isinstance(link, PlainLink):
                # refused (nothing listens yet): tried again until the core's connect
                # timeout, as libzmq does, rather than reported at once
                log.debug("%s; trying again in %.1fs", exc, RECONNECT_S)
                link.close()
                self._links[index] = None
                self._poller = None
                self._retry_at[index] = now + RECONNECT_S
            elif self._broken(index, exc) is None:
                self._core.handle(Lost(index), now)
            return
        except ProtocolError as exc:
            if self._broken(index, exc) is None:
                self._core.handle(Lost(index), now)
            return
        if index in self._connecting and link.up:
            self._up(index, now)

    # --- connections -----------------------------------------------------------------

    def _open(self, index: int) -> None:
        self._close(index)
        self._connect(index, time.monotonic())

    def _connect(self, index: int, now: float) -> None:
        """Start link ``index``'s connection; the core hears :class:`Opened` once it is up.
        A plain connection that is refused (nothing listens yet) is tried again every
        ``RECONNECT_S`` until the core's connect timeout, as libzmq does for a DEALER."""
        address = self.brokers[index]
        self._connecting.add(index)
        self._poller = None
        try:
            plain = self._plain and (self._plain_names or not needs_lookup(address))
            self._links[index] = open_link(address, self.max_reply_bytes, self.curve,
                                           self.context, plain)
        except (ConnectionRefusedError, FileNotFoundError) as exc:  # (ipc: no socket file)
            log.debug("broker %s: %s; trying again in %.1fs", address, exc, RECONNECT_S)
            self._retry_at[index] = now + RECONNECT_S
        except (zmq.ZMQError, OSError, ValueError) as exc:  # e.g. a name that won't resolve
            log.debug("cannot open a connection to broker %s: %s", address, exc)
            self._connecting.discard(index)
            self._core.handle(Lost(index), now)  # it says so, rate-limited

    def _retry(self, now: float) -> float:
        """Connect again the refused links whose retry is due; when the next is due."""
        for index, at in list(self._retry_at.items()):
            if at <= now:
                del self._retry_at[index]
                self._connect(index, now)
        return min(self._retry_at.values(), default=math.inf)

    def _send_on(self, index: int, frames: list[bytes], checked: bool = False) -> Link | None:
        """Send on link ``index``; the link it went on, or None if it is gone (closed
        here; the caller tells the core). ``checked``: :meth:`_check_idle` ran just now, so
        the link is written without being read first."""
        link = self._links[index]
        if link is None:
            return None
        try:
            if checked:
                link.write(frames)
            else:
                link.send(frames)
        except (ConnectionError, ProtocolError) as exc:
            link = self._broken(index, exc)
            if link is not None:
                try:
                    link.send(frames)  # (queued until its handshake is done)
                except (ConnectionError, ProtocolError) as error:  # refused at once
                    link = self._broken(index, error, busy=True)
        return link

    def _new_core(self, brokers: Sequence[str]) -> ClientCore:
        options = self.options
        return ClientCore(
            brokers, options,
            start=random.randrange(len(brokers)) if options.shuffle and brokers else 0)

    def _start_over(self) -> None:
        """In a forked child (:func:`_forked`): the links are the parent's connections, and a
        reply on one goes to whichever process reads it first, so the child lets go of its
        copies without a word on them (closing a copied socket leaves the parent's open; a
        pyzmq socket is not touched outside the process that made it) and starts with new
        connections (from a new pyzmq context: the parent's has no I/O thread here) and a
        new core, holding none of the parent's calls."""
        self._inherited = False
        for link in self._links:
            if link is not None:
                link.close()
        self._links = [None] * len(self.brokers)
        self._connecting.clear()
        self._retry_at.clear()
        self._poller = None
        self._polled = {}
        self._iterating = 0
        self.context = zmq.Context.instance()  # (a new one in a child: see pyzmq's instance)
        self._core = self._new_core(self.brokers)

    def _check_idle(self) -> None:
        """Before a call is placed: a client inherited by a forked child starts over; a plain
        link left unread for a while is read, so that a connection the broker dropped
        meanwhile (its ZMTP PINGs went unanswered while this client was idle) is opened
        again now, while it carries none of our calls, rather than found by the call's own
        send, when it would count as a lost broker."""
        if self._inherited:
            self._start_over()
        for index, link in enumerate(self._links):
            if isinstance(link, PlainLink) and index not in self._connecting:
                try:
                    link.check_idle()
                except (ConnectionError, ProtocolError) as exc:
                    if self._broken(index, exc) is None:
                        self._core.handle(Lost(index), time.monotonic())

    def _broken(self, index: int, exc: Exception, busy: bool = False) -> Link | None:
        """Link ``index`` failed with ``exc``: the whole messages it read before are handed
        to the core (libzmq delivers them before it reports the connection gone), then it
        is closed, and opened again at once if the broker dropped it while it carried no
        call (``busy``: the lone call is on it; see :func:`reopened`); the new link, or
        None: the caller tells the core it is lost."""
        link = self._links[index]
        ep = self._core.endpoints[index]
        if link is not None:
            now = time.monotonic()
            for frames in link.take():
                self._core.handle(Received(index, frames), now)
        self._close(index)
        self._complaints.note(index, ep.address, exc, time.monotonic())
        again = reopened(link, exc, ep.address, self.max_reply_bytes,
                         ep.state is State.DIPS and not ep.calls and not busy)
        self._links[index] = again
        return again

    def _up(self, index: int, now: float) -> None:
        self._connecting.discard(index)
        self._poller = None
        self._core.handle(Opened(index), now)

    @property
    def _open_count(self) -> int:
        return sum(link is not None for link in self._links)

    def _close(self, index: int) -> None:
        self._retry_at.pop(index, None)
        self._connecting.discard(index)
        link = self._links[index]
        if link is not None:
            link.close()
            self._links[index] = None
            self._poller = None

    def _get_poller(self) -> zmq.Poller:
        """The poller of every open link, with the flags each wants now (a plain link
        asks for POLLOUT only while it has bytes to write)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = zmq.Poller()
            self._polled = {}
        polled = self._polled
        for index, link in enumerate(self._links):
            if link is not None:
                target, flags = link.poll_target(), link.poll_flags()
                if polled.get(target) != (index, flags):
                    poller.register(target, flags)
                    polled[target] = (index, flags)
        return poller


def _take_own(core: ClientCore, mine: set[int]) -> list[Call]:
    """The finished calls of one ``iter_many`` (``mine``: their ids), taken out of the
    core's list; any other's stay there (a ``send`` made meanwhile, another iterator's)."""
    finished = core.finished
    own = [call for call in finished if id(call) in mine]
    if len(own) == len(finished):
        finished.clear()
    else:
        core.finished = [call for call in finished if id(call) not in mine]
    return own


_LIVE: weakref.WeakSet[MDPClient] = weakref.WeakSet()  # every client of this process


def _forked() -> None:
    """In a child just forked (``os.fork``, multiprocessing's fork, a pre-forking server):
    every client it inherited starts over on its next use (:meth:`MDPClient._start_over`)."""
    for client in list(_LIVE):
        client._inherited = True


os.register_at_fork(after_in_child=_forked)


def plain_transport(transport: str) -> tuple[bool, bool]:
    """What the sync client's ``transport`` option asks of its links: (plain where a plain
    socket can go, also to a broker given by host name). ``"plain"`` asks both; ``"auto"``
    is what ``$DIPS_CLIENT_TRANSPORT`` says (so that a suite or a bench can run every sync
    client on either), else :data:`AUTO_TRANSPORT` for addresses only: a host name would be
    resolved in the caller's thread, outside the call's timeout, where libzmq resolves it
    in its own. A value of the variable that is not a transport raises ConfigError."""
    if transport == "auto":
        transport = os.environ.get(CLIENT_TRANSPORT_ENV) or "auto"
        if transport not in TRANSPORTS:
            raise ConfigError(f"${CLIENT_TRANSPORT_ENV} must be one of "
                              f"{', '.join(TRANSPORTS)}, got {transport!r}")
    if transport == "auto":
        return AUTO_TRANSPORT == "plain", False
    return transport == "plain", transport == "plain"


def report(core: ClientCore) -> None:
    """Give each progress report to its call's ``on_progress`` (in the caller's thread),
    also when its reply came in the same pass: every report came before it."""
    for call, progress in core.take_progress():
        if call.on_progress is not None and call.outcome is not CANCELLED:
            call.on_progress(progress.kind, progress.num, progress.den, progress.data)
