"""The one place where the gateway talks to the brokers: requests and ``mmi.status``.

Until the asyncio client (``mdp.aio.AsyncMDPClient``) is on main, requests run on a small
thread pool, one sync :class:`~mdp.client.MDPClient` per thread (a client is not
thread-safe). When ``mdp.aio`` can be imported it is used instead; nothing else in
``mdp.http`` knows the difference.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mdp import protocol as p
from mdp.client import MDPClient
from mdp.errors import ProtocolError
from mdp.keys import CurveConfig

try:  # core v2
    from mdp.aio import AsyncMDPClient  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on what main has
    AsyncMDPClient = None

log = logging.getLogger(__name__)


class Backend:
    """Send requests through every broker (with failover) and read each broker's status."""

    def __init__(self, brokers: Sequence[str], *, timeout_s: float, threads: int = 16,
                 status_timeout_s: float = 1.0, curve: CurveConfig | None = None) -> None:
        self.brokers = tuple(brokers)
        self.timeout_s = timeout_s
        self.status_timeout_s = status_timeout_s
        self.curve = curve
        self._local = threading.local()
        self._all: list[MDPClient] = []
        self._lock = threading.Lock()
        self._aio: Any = None
        if AsyncMDPClient is not None:
            self._aio = AsyncMDPClient(list(self.brokers), timeout=timeout_s, curve=curve)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mdp-http")
        self._status_pool = ThreadPoolExecutor(max(1, len(self.brokers)),
                                               thread_name_prefix="mdp-http-status")
        self._status_clients: dict[str, MDPClient] = {}

    @property
    def kind(self) -> str:
        return "asyncio" if self._aio is not None else "threads"

    async def send(self, service: str, request: dict[str, Any]) -> Any:
        """The result of one request; raises RequestError subclasses or Timeout."""
        if self._aio is not None:
            return await self._aio.send(service, request)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._send_sync, service, request)

    def _send_sync(self, service: str, request: dict[str, Any]) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = MDPClient(self.brokers, timeout=self.timeout_s, curve=self.curve)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client.send(service, request)

    async def status(self, endpoint: str) -> dict[str, Any]:
        """One broker's ``mmi.status`` map; raises Timeout or ProtocolError."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._status_pool, self._status_sync, endpoint)

    def _status_sync(self, endpoint: str) -> dict[str, Any]:
        client = self._status_clients.pop(endpoint, None)  # one poll per broker at a time
        if client is None:
            client = MDPClient([endpoint], timeout=self.status_timeout_s, retries=0,
                               connect_timeout=self.status_timeout_s, shuffle=False,
                               curve=self.curve)
        try:
            reply = client.request_raw("mmi.status", b"")
        except Exception:
            client.close()
            raise
        self._status_clients[endpoint] = client
        status = p.unpack(reply[0]) if reply else None
        if not isinstance(status, dict):
            raise ProtocolError("mmi.status reply is not a map (not a DIPS broker?)")
        return status

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._status_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            clients, self._all = self._all, []
        for client in [*clients, *self._status_clients.values()]:
            client.close()
        self._status_clients.clear()
