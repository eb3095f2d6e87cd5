"""The one place where the gateway meets DIPS: the asyncio client, with a deadline per call.

The gateway sees :class:`Dips`: ``await call(...)`` and ``await broker_status()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from mdp.aio import AsyncMDPClient
from mdp.clientrecords import OnProgress
from mdp.errors import Timeout
from mdp.keys import CurveConfig
from mdp.rates import DEFAULT_LINK_FLOOR
from mdp.status import BrokerStatus
from mdp.statusfetch import StatusClients

log = logging.getLogger(__name__)

GRACE_S = 2.0  # past a call's own deadline, the gateway stops waiting whatever the client does
STATUS_TIMEOUT_S = 1.0  # how long a broker may take to answer mmi.status


class Dips:
    """Calls into DIPS from asyncio, with a deadline per call that always fires."""

    kind = "asyncio client"

    def __init__(self, brokers: Sequence[str], *, timeout_s: float,
                 curve: CurveConfig | None = None,
                 link_floor: int = DEFAULT_LINK_FLOOR) -> None:
        self.brokers = list(brokers)
        self.timeout_s = timeout_s
        self.curve = curve
        self._client = AsyncMDPClient(self.brokers, timeout=timeout_s, curve=curve,
                                      link_floor=link_floor)
        self._status = StatusClients(timeout_s=STATUS_TIMEOUT_S, curve=curve)

    async def call(self, service: str, request: dict[str, Any], *, priority: int = 0,
                   timeout_s: float | None = None, key: bytes | None = None,
                   on_progress: OnProgress | None = None) -> Any:
        """The result of one request; RequestError or Timeout otherwise, never a hang.
        ``key``: its coalescing key (the job's unique id); ``on_progress(kind, num, den,
        data)`` hears the worker's progress reports."""
        timeout_s = timeout_s or self.timeout_s
        try:
            async with asyncio.timeout(timeout_s + GRACE_S):  # no extra task, unlike wait_for
                return await self._client.send(service, request, timeout=timeout_s,
                                               priority=priority, key=key,
                                               on_progress=on_progress)
        except TimeoutError:
            raise Timeout(f"no reply for {service!r} within {timeout_s:g}s",
                          tuple(self.brokers)) from None

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
