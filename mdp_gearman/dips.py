"""The one place where the gateway meets DIPS: the asyncio client, with a deadline per call.

The gateway sees :class:`Dips`: ``await call(...)`` (or ``start(...)``, the same with a
callback and no task) and ``await broker_status()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from mdp.aio import AsyncMDPClient
from mdp.clientrecords import Call, OnProgress
from mdp.errors import Timeout
from mdp.keys import CurveConfig
from mdp.rates import DEFAULT_LINK_FLOOR
from mdp.status import BrokerStatus
from mdp.statusfetch import StatusClients

log = logging.getLogger(__name__)

GRACE_S = 2.0  # past a call's own deadline, the gateway stops waiting whatever the client does
SWEEP_S = 0.25  # ... looking every this long: a call is cut at most this late after that
STATUS_TIMEOUT_S = 1.0  # how long a broker may take to answer mmi.status


class Dips:
    """Calls into DIPS from asyncio, with a deadline per call that always fires."""

    kind = "asyncio client"

    def __init__(self, brokers: Sequence[str], *, timeout_s: float,
                 curve: CurveConfig | None = None,
                 link_floor: int = DEFAULT_LINK_FLOOR) -> None:
        self.brokers = list(brokers)
        self._named = tuple(self.brokers)  # (what a Timeout names)
        self.timeout_s = timeout_s
        self.curve = curve
        self._client = AsyncMDPClient(self.brokers, timeout=timeout_s, curve=curve,
                                      link_floor=link_floor)
        self._status = StatusClients(timeout_s=STATUS_TIMEOUT_S, curve=curve)
        self._watchdog = Watchdog()

    async def call(self, service: str, request: dict[str, Any], *, priority: int = 0,
                   timeout_s: float | None = None, key: bytes | None = None,
                   on_progress: OnProgress | None = None) -> Any:
        """The result of one request; RequestError or Timeout otherwise, never a hang.
        ``key``: its coalescing key (the job's unique id); ``on_progress(kind, num, den,
        data)`` hears the worker's progress reports."""
        timeout_s = timeout_s or self.timeout_s
        watchdog = self._watchdog
        token, task = watchdog.watch(timeout_s + GRACE_S)
        cancelling = task.cancelling()
        try:
            result = await self._client.send(service, request, timeout=timeout_s,
                                             priority=priority, key=key,
                                             on_progress=on_progress)
            if token in watchdog.fired:  # cut as the reply came: the reply wins
                task.uncancel()
            return result
        except asyncio.CancelledError:
            # the watchdog's cancel, and nobody else's since the call began (as
            # asyncio.timeout decides): the call timed out; any other cancel goes on
            if token in watchdog.fired and task.uncancel() <= cancelling:
                raise Timeout(f"no reply for {service!r} within {timeout_s:g}s",
                              tuple(self.brokers)) from None
            raise
        finally:
            watchdog.forget(token)

    def start(self, service: str, request: dict[str, Any], on_done: Callable[[Any], object],
              *, priority: int = 0, timeout_s: float | None = None, key: bytes | None = None,
              on_progress: OnProgress | None = None) -> DipsCall:
        """:meth:`call` with no task: ``on_done(outcome)`` is called once, on the event
        loop, with the result or the error (RequestError, Timeout, ...) that :meth:`call`
        would raise, at the latest past the deadline and the grace as a Timeout; never after
        :meth:`DipsCall.cancel`. It may be called before this returns. A request that
        cannot be encoded raises here (RequestError)."""
        timeout_s = timeout_s or self.timeout_s
        pending = DipsCall(self._client, self._watchdog, service, timeout_s, on_done,
                           self._named)
        pending.token = self._watchdog.watch_call(timeout_s + GRACE_S, pending.expire)
        try:
            call = self._client.start(service, request, pending.finish, timeout=timeout_s,
                                      priority=priority, key=key, on_progress=on_progress)
        except BaseException:  # (placed or not, it must never call back now)
            pending.over = True
            self._watchdog.forget(pending.token)
            raise
        if not pending.over:
            pending.call = call
        return pending

    async def broker_status(self) -> list[BrokerStatus | None]:
        """Every broker's ``mmi.status`` (None for a broker that did not answer)."""
        return list(await asyncio.gather(*(self._one_status(ep) for ep in self.brokers)))

    async def _one_status(self, endpoint: str) -> BrokerStatus | None:
        try:
            async with asyncio.timeout(STATUS_TIMEOUT_S + GRACE_S):
                return await self._status.fetch(endpoint)
        except Exception as exc:  # a broker that is down, hung or garbled is shown as such
            log.debug("no mmi.status from %s: %s", endpoint, exc)
            return None

    async def close(self) -> None:
        await self._client.close()
        await self._status.close()


class DipsCall:
    """One call placed by :meth:`Dips.start`: it ends once, by its reply, by the watchdog
    (a Timeout) or by :meth:`cancel`."""

    __slots__ = ("_client", "_watchdog", "service", "timeout_s", "_on_done", "_brokers",
                 "token", "call", "over")

    def __init__(self, client: AsyncMDPClient, watchdog: Watchdog, service: str,
                 timeout_s: float, on_done: Callable[[Any], object],
                 brokers: tuple[str, ...]) -> None:
        self._client = client
        self._watchdog = watchdog
        self.service = service
        self.timeout_s = timeout_s
        self._on_done = on_done
        self._brokers = brokers
        self.token = -1
        self.call: Call | None = None
        self.over = False

    def finish(self, outcome: Any) -> None:
        """The client's answer (the AsyncMDPClient calls this)."""
        if self.over:
            return
        self.over = True
        watchdog = self._watchdog
        watchdog.watched.pop(self.token, None)  # (Watchdog.forget, inline: each job's path)
        if watchdog.fired:
            watchdog.fired.discard(self.token)
        self._on_done(outcome)

    def expire(self) -> None:
        """Past its deadline and the grace, whatever the client does (the watchdog)."""
        if self.over:
            return
        self.over = True
        self._watchdog.forget(self.token)
        try:  # (the job ends even if the client fails to drop the call)
            if self.call is not None:
                self._client.cancel(self.call)
        finally:
            self._on_done(Timeout(f"no reply for {self.service!r} within "
                                  f"{self.timeout_s:g}s", self._brokers))

    def cancel(self) -> None:
        """Its caller gave up: ``on_done`` is not called."""
        if self.over:
            return
        self.over = True
        self._watchdog.forget(self.token)
        if self.call is not None:
            self._client.cancel(self.call)


class Watchdog:
    """Ends a call still running past its limit (cancels its task, or expires a
    :class:`DipsCall`): what ``asyncio.timeout`` does, with one timer for every call in
    flight (looking every :data:`SWEEP_S` while there are any) rather than a timer, a
    context manager and three ``getpid()`` system calls (``asyncio.get_running_loop``) on
    each call. One watchdog belongs to one event loop."""

    def __init__(self) -> None:
        self._tokens = itertools.count()
        # token -> (deadline, what ends its call: a task's cancel, or DipsCall.expire)
        self.watched: dict[int, tuple[float, Callable[[], object]]] = {}
        self.fired: set[int] = set()  # the tokens whose calls it ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, limit_s: float) -> tuple[int, asyncio.Task[Any]]:
        """Watch the current task for ``limit_s`` from now: its token, and the task."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a watched call runs inside a task")
        return self.watch_call(limit_s, task.cancel), task

    def watch_call(self, limit_s: float, fire: Callable[[], object]) -> int:
        """Call ``fire()`` once if the call of the token returned is still watched
        ``limit_s`` from now (a task's call: its ``cancel``)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        token = next(self._tokens)
        self.watched[token] = (loop.time() + limit_s, fire)
        if self._timer is None:
            self._timer = loop.call_later(SWEEP_S, self._sweep)
        return token

    def forget(self, token: int) -> None:
        """The call of ``token`` is over (however it ended)."""
        self.watched.pop(token, None)
        self.fired.discard(token)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None  # noqa: S101 - set before the first timer (not peer input)
        now = loop.time()
        due = [(token, fire) for token, (deadline, fire) in self.watched.items()
               if deadline <= now and token not in self.fired]
        for token, fire in due:
            self.fired.add(token)
            try:
                fire()
            except Exception:  # the loop's callback: one call's failure must not stop it
                log.exception("the gateway's watchdog failed ending a call")
        self._timer = loop.call_later(SWEEP_S, self._sweep) if self.watched else None
