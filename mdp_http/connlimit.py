"""At most ``--max-connections`` HTTP connections, kept for the callers that use them, and
none held by a peer that stops reading.

Without a limit, peers that open connections and send nothing (or a head a byte at a time)
hold one file descriptor each until ``--header-timeout``; once the process's descriptors are
gone, no caller is served and asyncio logs every failed ``accept()`` with a traceback (1,100
idle connections against a 1,024-descriptor door: no answer for any caller, and 40,000 log
lines in five seconds).

:class:`ConnectionGuard` is the protocol factory of the door's listening socket. Below the
limit it makes aiohttp's request handler, as aiohttp's own site would. At the limit it
closes the connection that has waited longest for a request's head (an idle keep-alive
connection, or one still sending its head; never one whose request is being handled) and
takes the new one in its place, so a flood of idle peers cannot keep a caller out; if every
connection has a request in hand, the new one is answered ``503`` (``overloaded``) and
closed. Which connection is waiting is aiohttp's own idea of idle, the one its keep-alive
timer uses.

A peer that stops reading its reply holds its connection, the reply's bytes and the handler
for ever (aiohttp has no send timeout): :meth:`ConnectionGuard.sweep`, once a second, aborts
a connection whose reply has waited in the door's buffer while the peer acknowledged no byte
of it for ``--send-timeout`` (nginx's ``send_timeout``: 60 s), reading the kernel's count of
bytes the peer acknowledged (``TCP_INFO``). That alone never cuts a peer that acknowledges a
byte now and then (nginx's ``send_timeout`` has the same gap), so a reply waiting in the
door must also be taken at ``--min-send-rate`` (1 KiB/s) on average over each
``--send-timeout`` window, as curl's low-speed limit judges a download; :func:`judge`
decides both, without sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from mdp.logs import RateLimitedLog

log = logging.getLogger(__name__)

_REFUSAL_BODY = json.dumps({"error": {
    "code": "overloaded",
    "message": "the gateway holds its most connections, each with a request in hand; "
               "try again"}}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\n"
           b"Content-Type: application/json\r\n"
           b"Retry-After: 1\r\n"
           b"Connection: close\r\n"
           b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


class _Refusal(asyncio.Protocol):
    """A connection over the limit: the 503, then closed, whatever it sends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(REFUSAL)  # a TCP server's transport
        transport.close()


def waiting_since(handler: Any) -> float | None:
    """When an aiohttp request handler began to wait for a request's head (its keep-alive
    deadline, which moves with each reply), or None if it is handling one, is closing, or
    has not yet begun. Reads the attributes aiohttp's own keep-alive timer reads."""
    if getattr(handler, "transport", None) is None or _closing(handler):
        return None
    waiter = getattr(handler, "_waiter", None)
    if waiter is None or waiter.done():
        return None
    deadline = getattr(handler, "_next_keepalive_close_time", 0.0)
    return deadline if isinstance(deadline, float) else 0.0


_TCP_INFO_BYTES = 128  # struct tcp_info up to tcpi_bytes_acked (Linux 4.1+)
_BYTES_ACKED = struct.Struct("=Q")  # tcpi_bytes_acked, at byte 120


def bytes_acked(transport: asyncio.BaseTransport) -> int | None:
    """Bytes of this connection its peer has acknowledged (None: not known here)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(info) < _TCP_INFO_BYTES:
        return None
    return int(_BYTES_ACKED.unpack_from(info, 120)[0])


def _reset(transport: asyncio.Transport) -> None:
    """Drop a connection and what the kernel still holds for it (a reset, as nginx's
    ``reset_timedout_connection``): close() would wait for the peer to read."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def _lost(handler: Any) -> bool:
    """Its connection is gone (aiohttp drops the handler's manager then)."""
    return getattr(handler, "_manager", None) is None


def _closing(handler: Any) -> bool:
    """Closed by the door, its descriptor about to go."""
    return bool(getattr(handler, "_force_close", False))


@dataclass
class Sending:
    """A reply waiting in the door for its peer: the bytes the peer had acknowledged when the
    current window began, and when it last acknowledged any."""

    window_acked: int
    window_start: float
    last_acked: int
    last_progress: float


def judge(state: Sending | None, acked: int, now: float, timeout_s: float,
          min_rate: float) -> tuple[Sending | None, str | None]:
    """The connection's next state, and why it must be cut (``"stalled"``: no byte taken
    for ``timeout_s``; ``"slow"``: fewer than ``min_rate`` bytes a second over a window of
    ``timeout_s``), or None. ``acked`` is the kernel's count of bytes the peer acknowledged."""
    if state is None:
        return Sending(acked, now, acked, now), None
    if acked != state.last_acked:
        state = Sending(state.window_acked, state.window_start, acked, now)
    elif now - state.last_progress >= timeout_s:
        return None, "stalled"
    elapsed = now - state.window_start
    if elapsed >= timeout_s:
        if acked - state.window_acked < min_rate * elapsed:
            return None, "slow"
        state = Sending(acked, now, acked, state.last_progress)
    return state, None


class ConnectionGuard:
    """The listening socket's protocol factory: aiohttp's handlers, at most ``limit``."""

    def __init__(self, server: web.Server, limit: int, send_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 min_send_rate: float = 0.0) -> None:
        self.server = server
        self.limit = limit
        self.send_timeout_s = send_timeout_s
        self.min_send_rate = min_send_rate
        self.clock = clock
        self.stalled = 0  # connections aborted: the peer took none of its reply in time
        self.too_slow = 0  # connections aborted: the peer took its reply below the rate
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # connections answered 503 with every connection busy
        self._refusals = RateLimitedLog(log)  # each kind its own limit: both are seen
        self._evictions = RateLimitedLog(log)
        self._handlers: list[Any] = []  # aiohttp's request handlers this factory made
        self._stalls = RateLimitedLog(log)
        # handlers with a reply waiting in the door's buffer
        self._sending: dict[Any, Sending] = {}

    def open_connections(self) -> int:
        """Connections that hold a descriptor: made here, not lost, not being closed. Counted
        from this factory's own record, since aiohttp learns of a connection only a loop
        pass after it was accepted, and accepts come in bursts."""
        self._forget_lost()
        return sum(1 for h in self._handlers if not _closing(h))

    def _forget_lost(self) -> None:
        self._handlers = [h for h in self._handlers if not _lost(h)]

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._handlers) >= self.limit and self.open_connections() >= self.limit:
            if not self._evict_one():
                self.refused += 1
                self._refusals(self.clock(), "refused a connection: all %d connections are "
                               "busy, with a request in hand or just opened "
                               "(--max-connections)", self.limit)
                return _Refusal()
        handler = self.server()
        self._handlers.append(handler)
        return handler

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request's head."""
        oldest: Any = None
        oldest_since = float("inf")
        for handler in self._handlers:
            since = waiting_since(handler)
            if since is not None and since < oldest_since:
                oldest, oldest_since = handler, since
        if oldest is None:
            return False
        oldest.force_close()
        self.evicted += 1
        self._evictions(self.clock(), "closed an idle connection to make room: %d "
                        "connections (--max-connections)", self.limit)
        return True

    def sweep(self) -> None:
        """Abort each connection whose peer has taken none of its waiting reply for
        ``send_timeout_s``, or less than ``min_send_rate`` of it over that long, and forget
        the connections gone (the caller runs this about once a second)."""
        now = self.clock()
        sending: dict[Any, Sending] = {}
        self._forget_lost()
        for handler in self._handlers:
            transport = getattr(handler, "transport", None)
            if transport is None or not transport.get_write_buffer_size():
                continue  # nothing waits in the door: the peer has taken what was sent
            acked = bytes_acked(transport)
            if acked is None:
                continue
            known = self._sending.get(handler)
            state, cut = judge(known, acked, now, self.send_timeout_s, self.min_send_rate)
            if state is not None:
                sending[handler] = state
                continue
            waiting = transport.get_write_buffer_size()
            if cut == "stalled":
                self.stalled += 1
                self._stalls(now, "aborted a connection whose peer took no byte of its reply "
                             "for %gs (--send-timeout): %d bytes waited", self.send_timeout_s,
                             waiting)
            else:
                began = known or Sending(acked, now, acked, now)  # (a first sight is never cut)
                self.too_slow += 1
                self._stalls(now, "aborted a connection whose peer took %d bytes of its "
                             "reply in %.0fs, below --min-send-rate %g B/s: %d bytes waited",
                             acked - began.window_acked, now - began.window_start,
                             self.min_send_rate, waiting)
            _reset(transport)
            handler.force_close()
        self._sending = sending
