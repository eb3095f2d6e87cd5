"""Many requests through every broker at once, with a bounded window.

One thread per broker, each with its own :class:`mdp.client.MDPClient` whose list starts
at that broker (and fails over to the others), takes the next chunk of work from a shared
:class:`Feed` and sends it pipelined.  Outcomes come back on a bounded queue as
``(job, result-or-exception)``; at most ``window`` requests are in flight in all.

:func:`send_chunk` is the one place that talks to the client: it uses
``MDPClient.iter_many`` where the client has it, else ``send_many`` on the chunk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import zmq

from mdp.errors import BadRequest
from mdp.keys import CurveConfig
from mdpctl.errors import CtlError

log = logging.getLogger(__name__)

J = TypeVar("J")
SENDER_FAILED = object()
Outcome = Any  # a result, or the exception that took its place

STOP_WAIT_S = 2.0
"""How long a stopped pipeline waits for its senders to finish the requests in hand."""
IDLE_WAIT_S = 0.02
"""How long a sender waits for work when only retries that are not yet due are left."""


def send_chunk(client: Any, service: str, requests: list[dict[str, Any]], window: int
               ) -> Iterator[tuple[int, Outcome]]:
    """Send ``requests`` pipelined; yield ``(index, outcome)`` as each finishes."""
    iter_many = getattr(client, "iter_many", None)
    if iter_many is not None:
        yield from iter_many(service, requests, window=window)
        return
    outcomes = client.send_many(service, requests, window=window, return_exceptions=True)
    yield from enumerate(outcomes)


class Feed(Generic[J]):
    """The work still to send: fresh jobs in order, and retries once they are due."""

    def __init__(self, jobs: Iterable[J]) -> None:
        self._fresh = iter(jobs)
        self._retries: deque[tuple[float, J]] = deque()
        self._lock = threading.Lock()
        self._fresh_done = False
        self.outstanding = 0  # taken and not yet settled (result or retry)

    def take(self, count: int, now: float) -> list[J] | None:
        """Up to ``count`` jobs; [] when only later retries are left; None when all is sent."""
        with self._lock:
            taken: list[J] = []
            while self._retries and len(taken) < count and self._retries[0][0] <= now:
                taken.append(self._retries.popleft()[1])
            while not self._fresh_done and len(taken) < count:
                try:
                    taken.append(next(self._fresh))
                except StopIteration:
                    self._fresh_done = True
            self.outstanding += len(taken)
            if taken or self._retries or self.outstanding:
                return taken
            return None if self._fresh_done else taken

    def settle(self, job: J, retry_at: float | None = None) -> None:
        """A job taken earlier is finished, or is to be sent again at ``retry_at``."""
        with self._lock:
            self.outstanding -= 1
            if retry_at is not None:
                self._retries.append((retry_at, job))
                self._retries = deque(sorted(self._retries, key=lambda r: r[0]))


@dataclass
class Pipeline(Generic[J]):
    """Senders for every broker, fed from one :class:`Feed`."""

    brokers: tuple[str, ...]
    service: str
    make_request: Callable[[J], dict[str, Any]]
    window: int = 64
    timeout_s: float = 30.0
    curve: CurveConfig | None = None

    def run(self, feed: Feed[J]) -> Generator[tuple[J, Outcome], None, None]:
        """Yield ``(job, outcome)`` until the feed is empty; the caller settles each job."""
        per_broker = max(1, self.window // len(self.brokers))
        results: queue.Queue[tuple[J, Outcome] | None] = queue.Queue(maxsize=4 * self.window)
        stop = threading.Event()
        context = zmq.Context()
        threads = [
            threading.Thread(
                target=self._sender,
                args=(i, feed, per_broker, results, stop, context),
                name=f"batch-sender-{i}",
                daemon=True,
            )
            for i in range(len(self.brokers))
        ]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                item = results.get()
                if item is None:
                    running -= 1
                    continue
                if item[0] is SENDER_FAILED:
                    raise CtlError(f"a batch sender failed: {item[1]}") from item[1]
                yield item
        finally:
            stop.set()
            deadline = time.monotonic() + STOP_WAIT_S
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                try:  # unblock senders waiting to put a result nobody will read
                    results.get(timeout=0.05)
                except queue.Empty:
                    pass
            if any(t.is_alive() for t in threads):
                log.info("left %d sender(s) finishing their requests", len(threads))
            else:
                context.term()

    def _sender(
        self,
        index: int,
        feed: Feed[J],
        window: int,
        results: queue.Queue[tuple[J, Outcome] | None],
        stop: threading.Event,
        context: zmq.Context,
    ) -> None:
        from mdp.client import MDPClient

        order = self.brokers[index:] + self.brokers[:index]
        client = MDPClient(order, timeout=self.timeout_s, shuffle=False, curve=self.curve,
                           context=context)
        try:
            while not stop.is_set():
                jobs = feed.take(window, time.monotonic())
                if jobs is None:
                    break
                if not jobs:
                    stop.wait(IDLE_WAIT_S)
                    continue
                self._send(client, jobs, window, results, stop)
        except Exception as exc:  # a sender must never die silently
            log.exception("batch sender %d failed", index)
            results.put((SENDER_FAILED, exc))  # type: ignore[arg-type]
        finally:
            client.close()
            results.put(None)

    def _send(
        self,
        client: Any,
        jobs: list[J],
        window: int,
        results: queue.Queue[tuple[J, Outcome] | None],
        stop: threading.Event,
    ) -> None:
        requests: list[dict[str, Any]] = []
        sendable: list[J] = []
        for job in jobs:
            try:
                requests.append(self.make_request(job))
                sendable.append(job)
            except Exception as exc:  # an unreadable input fails alone
                results.put((job, exc))
        given: set[int] = set()
        try:
            for i, outcome in send_chunk(client, self.service, requests, window):
                if stop.is_set():
                    return
                given.add(i)
                results.put((sendable[i], outcome))
        except BadRequest:
            # The client refuses a whole chunk for one request it cannot encode or that is
            # too large: send the rest one by one so that only that one fails.
            for i, (job, request) in enumerate(zip(sendable, requests, strict=True)):
                if i in given or stop.is_set():
                    continue
                try:
                    outcome = next(iter(send_chunk(client, self.service, [request], 1)))[1]
                except BadRequest as exc:
                    outcome = exc
                results.put((job, outcome))
