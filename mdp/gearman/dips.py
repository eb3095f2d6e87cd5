"""The one place where the gateway meets the DIPS client.

Uses ``mdp.aio.AsyncMDPClient`` when the core provides it; until then, the sync
``MDPClient`` on a pool of threads (one client per thread: MDPClient is not thread-safe).
Either way the gateway sees :class:`Dips`: ``await call(...)``, ``await broker_status()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mdp.client import MDPClient
from mdp.errors import Timeout
from mdp.keys import CurveConfig

log = logging.getLogger(__name__)

try:  # core v2
    from mdp.aio import AsyncMDPClient  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the core's version
    AsyncMDPClient = None

GRACE_S = 2.0  # past a call's own deadline, the gateway stops waiting whatever the client does


class Dips:
    """Calls into DIPS from asyncio, with a deadline per call that always fires."""

    def __init__(self, brokers: Sequence[str], *, timeout_s: float, concurrency: int = 32,
                 curve: CurveConfig | None = None, force_threads: bool = False) -> None:
        self.brokers = list(brokers)
        self.timeout_s = timeout_s
        self.curve = curve
        self._local = threading.local()
        self._clients: list[MDPClient] = []
        self._lock = threading.Lock()
        self._aio: Any = None
        self._pool: ThreadPoolExecutor | None = None
        if AsyncMDPClient is not None and not force_threads:
            self._aio = AsyncMDPClient(self.brokers, timeout=timeout_s, curve=curve)
        else:
            self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="dips")
        self._status_pool = ThreadPoolExecutor(2, thread_name_prefix="dips-status")
        self._takes_priority = "priority" in inspect.signature(MDPClient.send).parameters

    @property
    def kind(self) -> str:
        return "asyncio client" if self._aio is not None else "threads + MDPClient"

    async def call(self, service: str, request: dict[str, Any], *, priority: int = 0,
                   timeout_s: float | None = None) -> Any:
        """The result of one request; RequestError or Timeout otherwise, never a hang."""
        timeout_s = timeout_s or self.timeout_s
        if self._aio is not None:
            work = self._aio.send(service, request, timeout=timeout_s, priority=priority)
        else:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self._pool, self._send, service, request, priority)
        try:
            async with asyncio.timeout(timeout_s + GRACE_S):  # no extra task, unlike wait_for
                return await work
        except TimeoutError:
            raise Timeout(f"no reply for {service!r} within {timeout_s:g}s",
                          tuple(self.brokers)) from None

    def _send(self, service: str, request: dict[str, Any], priority: int) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = MDPClient(self.brokers, timeout=self.timeout_s, curve=self.curve)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        if self._takes_priority:
            return client.send(service, request, priority=priority)  # type: ignore[call-arg]
        return client.send(service, request)

    async def broker_status(self, timeout_s: float = 1.0) -> list[dict[str, Any] | None]:
        """Every broker's ``mmi.status`` (None for a broker that did not answer)."""
        loop = asyncio.get_running_loop()
        asks = [loop.run_in_executor(self._status_pool, _status, ep, timeout_s, self.curve)
                for ep in self.brokers]
        return list(await asyncio.gather(*asks))

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._status_pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for client in self._clients:
                try:
                    client.close()
                except Exception:  # a client busy in its thread; the process is leaving
                    log.debug("could not close a client", exc_info=True)
            self._clients.clear()


def _status(endpoint: str, timeout_s: float, curve: CurveConfig | None) -> dict[str, Any] | None:
    client = MDPClient([endpoint], timeout=timeout_s, retries=0, connect_timeout=timeout_s,
                       shuffle=False, curve=curve)
    try:
        return client.status()
    except Exception as exc:  # a broker that is down or hung is shown as such
        log.debug("no mmi.status from %s: %s", endpoint, exc)
        return None
    finally:
        client.close()
