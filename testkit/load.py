"""Load: threads that keep requests going and check every reply.

:class:`Load` holds what every load shares (threads, a request count or none, the count of
good replies, each failure in words, latencies, stop and wait); a subclass says how a thread
connects and makes one exchange. :class:`BrokerLoad` sends through ``MDPClient``; the HTTP
door's tests drive the gateway the same way (``tests/http/httpkit.py``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Self

from mdp.client import MDPClient
from testkit.waiting import wait_for

Request = Callable[[int, int], Any]  # (thread, i) -> the request
Check = Callable[[Any, Any], "str | None"]  # (request, reply) -> what is wrong, or None


class Load:
    """``threads`` threads sending until :meth:`stop` (or until ``total`` requests are sent)."""

    def __init__(self, threads: int = 8, total: int | None = None) -> None:
        self.total = total
        self.ok = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    # --- what a subclass says ------------------------------------------------------------

    def connect(self) -> AbstractContextManager[Any]:
        """One thread's connection, closed when the thread ends."""
        raise NotImplementedError

    def exchange(self, connection: Any, thread: int, i: int) -> str | None:
        """Send request ``i`` of ``thread``; what is wrong with the reply, or None."""
        raise NotImplementedError

    # --- running -------------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Requests answered so far, well or not."""
        return self.ok + len(self.failures)

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def _take(self) -> int | None:
        with self._lock:
            if self._stopping.is_set() or (self.total is not None and self._next >= self.total):
                return None
            self._next += 1
            return self._next - 1

    def _run(self, thread: int) -> None:
        try:
            with self.connect() as connection:
                while (i := self._take()) is not None:
                    self._one(connection, thread, i)
        except Exception as exc:  # cannot even connect: recorded, the test fails on it
            with self._lock:
                self.failures.append(f"thread {thread}: {type(exc).__name__}: {exc}")

    def _one(self, connection: Any, thread: int, i: int) -> None:
        started = time.monotonic()
        try:
            problem = self.exchange(connection, thread, i)
        except Exception as exc:  # every failure is recorded, none is fatal
            problem = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if problem:
                self.failures.append(problem)
            else:
                self.ok += 1
                self.latencies.append(time.monotonic() - started)

    def wait_ok(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait for ``count`` more good replies than there are now."""
        start = self.ok
        wait_for(lambda: self.ok >= start + count, timeout_s, f"{count} more good replies")

    def join(self, timeout_s: float = 60.0) -> None:
        """Wait for every thread to end (all ``total`` requests answered, or stopped)."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck:
            raise AssertionError(f"{stuck} load thread(s) hung")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Send nothing more and wait for the requests in flight; idempotent."""
        self._stopping.set()
        self.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def echo_request(thread: int, i: int) -> dict[str, Any]:
    """A request an echo service answers with itself, unique to (thread, i)."""
    return {"thread": thread, "i": i, "token": os.urandom(8)}


def echoed(request: Any, reply: Any) -> str | None:
    """An echo's check: every field of the request comes back unchanged (an echo with
    deliberate faults, ``tests/helpers/faulty_worker.py``, adds fields of its own)."""
    if isinstance(request, dict) and isinstance(reply, dict) and all(
            k in reply and reply[k] == v for k, v in request.items()):
        return None
    return f"wrong reply {reply!r:.80} for {request!r:.80}"


class BrokerLoad(Load):
    """Requests to ``service`` through ``MDPClient`` (one per thread) over ``brokers``.

    ``request`` makes each request (an echo request with ``fields`` added by default),
    ``check`` judges each reply (the request echoed, by default); ``client`` holds the
    client's options (``timeout``, ``retries`` ...).
    """

    def __init__(self, brokers: Sequence[str], service: str = "echo", *, threads: int = 8,
                 total: int | None = None, fields: Mapping[str, Any] | None = None,
                 request: Request | None = None, check: Check = echoed,
                 client: Mapping[str, Any] | None = None) -> None:
        super().__init__(threads, total)
        self.brokers = list(brokers)
        self.service = service
        self.fields = dict(fields or {})
        self.request = request or self._echo
        self.check = check
        self.client_options = dict(client or {})

    def _echo(self, thread: int, i: int) -> dict[str, Any]:
        return {**echo_request(thread, i), **self.fields}

    def connect(self) -> MDPClient:
        return MDPClient(self.brokers, **self.client_options)

    def exchange(self, connection: MDPClient, thread: int, i: int) -> str | None:
        request = self.request(thread, i)
        return self.check(request, connection.send(self.service, request))
