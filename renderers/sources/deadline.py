"""One deadline over every phase of a fetch, where a socket timeout cannot give one.

A socket's timeout bounds each receive, not their sum: a source that sends its status line,
headers or body a byte at a time, each byte well within the timeout, holds a worker for as
long as it likes. :class:`Watchdog` shuts the socket of the connection in use down when the
deadline passes, whatever phase the exchange is in (a blocked receive then returns at once),
and :func:`within` gives up on a call, such as a name lookup, that does not return in time.

The connection in use is learnt from urllib3's pools: :func:`tracked_pool` makes a pool
class whose connections report themselves, as they send a request, to the watchdog of the
thread that sends it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

import urllib3
from urllib3.connection import HTTPConnection

log = logging.getLogger(__name__)

T = TypeVar("T")
Pool = TypeVar("Pool", bound=urllib3.HTTPConnectionPool)

_current = threading.local()  # .watchdog: the Watchdog of this thread's request, if any


class Watchdog:
    """Shuts down the socket of the watched connection ``seconds`` from now."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._connection: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Connections that send a request in this block (in this thread) are watched."""
        _current.watchdog = self
        try:
            yield
        finally:
            _current.watchdog = None

    def watch(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connection = connection
            fired = self.fired
        if fired:  # the deadline passed while the request was being set up
            _shut(connection)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._connection = None

    def guard(self, response: Any) -> Guarded:
        return Guarded(response, self)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            connection = self._connection
        if connection is not None:
            log.debug("source deadline passed: shutting the connection down")
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for a TLS socket: the TLS state stays for the
        # thread that is reading, which then sees the end of the stream.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class Guarded:
    """A response whose reads fail as timeouts once its watchdog has fired, and whose
    release or close ends the watchdog."""

    def __init__(self, response: Any, watchdog: Watchdog) -> None:
        self._response = response
        self._watchdog = watchdog
        self.status: int = response.status
        self.headers = response.headers

    def read1(self, amt: int | None = None) -> bytes:
        try:
            data: bytes = self._response.read1(amt)
        except (urllib3.exceptions.HTTPError, OSError):
            if self._watchdog.fired:
                raise urllib3.exceptions.TimeoutError("the deadline passed") from None
            raise
        if self._watchdog.fired:
            raise urllib3.exceptions.TimeoutError("the deadline passed")
        return data

    def release_conn(self) -> None:
        self._watchdog.cancel()
        self._response.release_conn()

    def close(self) -> None:
        self._watchdog.cancel()
        self._response.close()


@cache
def tracked_pool(base: type[Pool]) -> type[Pool]:
    """A subclass of the pool class ``base`` whose connections report to the watchdog."""
    connection_class = base.ConnectionCls

    class TrackedConnection(connection_class):  # type: ignore[valid-type,misc]
        def request(self, *args: Any, **kwargs: Any) -> None:
            watchdog = getattr(_current, "watchdog", None)
            if watchdog is not None:
                watchdog.watch(self)
            super().request(*args, **kwargs)

    return type(f"Tracked{base.__name__}", (base,), {"ConnectionCls": TrackedConnection})


def within(seconds: float, call: Callable[..., T], *args: Any) -> tuple[T] | None:
    """``(call(*args),)``, or None when it has not returned within ``seconds``.

    The call runs on a daemon thread that is left to finish on its own when given up (a
    name lookup cannot be interrupted); its exception, if any, is raised here.
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # noqa: BLE001 (handed to the caller as it is)
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="dips-source-lookup", daemon=True).start()
    if not done.wait(seconds):
        return None
    ok, value = outcome[0]
    if not ok:
        raise value
    return (value,)
