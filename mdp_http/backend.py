"""The one place where the gateway talks to the brokers: requests and ``mmi.status``.

Requests go through one :class:`~mdp.aio.AsyncMDPClient` over every broker (failover,
spreading); each broker's status through a single-broker client of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mdp.aio import AsyncMDPClient
from mdp.keys import CurveConfig
from mdp.status import BrokerStatus, StatusClients

log = logging.getLogger(__name__)


class Backend:
    """Send requests through every broker (with failover) and read each broker's status."""

    kind = "asyncio"

    def __init__(self, brokers: Sequence[str], *, timeout_s: float,
                 status_timeout_s: float = 1.0, curve: CurveConfig | None = None) -> None:
        self.brokers = tuple(brokers)
        self.timeout_s = timeout_s
        self.status_timeout_s = status_timeout_s
        self.curve = curve
        self._client = AsyncMDPClient(list(self.brokers), timeout=timeout_s, curve=curve)
        self._statuses = StatusClients(timeout_s=status_timeout_s, curve=curve)

    async def send(self, service: str, request: dict[str, Any]) -> Any:
        """The result of one request; raises RequestError subclasses or Timeout."""
        return await self._client.send(service, request)

    async def status(self, endpoint: str) -> BrokerStatus:
        """One broker's ``mmi.status``; raises Timeout or ProtocolError."""
        return await self._statuses.fetch(endpoint)

    async def close(self) -> None:
        await self._client.close()
        await self._statuses.close()
