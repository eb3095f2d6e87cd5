"""At most ``--max-connections`` HTTP connections, kept for the callers that use them.

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
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


def _lost(handler: Any) -> bool:
    """Its connection is gone (aiohttp drops the handler's manager then)."""
    return getattr(handler, "_manager", None) is None


def _closing(handler: Any) -> bool:
    """Closed by the door, its descriptor about to go."""
    return bool(getattr(handler, "_force_close", False))


class ConnectionGuard:
    """The listening socket's protocol factory: aiohttp's handlers, at most ``limit``."""

    def __init__(self, server: web.Server, limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.limit = limit
        self.clock = clock
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # connections answered 503 with every connection busy
        self._refusals = RateLimitedLog(log)  # each kind its own limit: both are seen
        self._evictions = RateLimitedLog(log)
        self._handlers: list[Any] = []  # aiohttp's request handlers this factory made

    def open_connections(self) -> int:
        """Connections that hold a descriptor: made here, not lost, not being closed. Counted
        from this factory's own record, since aiohttp learns of a connection only a loop
        pass after it was accepted, and accepts come in bursts."""
        self._handlers = [h for h in self._handlers if not _lost(h)]
        return sum(1 for h in self._handlers if not _closing(h))

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._handlers) >= self.limit and self.open_connections() >= self.limit:
            if not self._evict_one():
                self.refused += 1
                self._refusals(self.clock(), "refused a connection: all %d connections are busy, "
                          "with a request in hand or just opened (--max-connections)",
                          self.limit)
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
        self._evictions(self.clock(), "closed an idle connection to make room: %d connections "
                  "(--max-connections)", self.limit)
        return True
