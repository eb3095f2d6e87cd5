"""The one place where the gateway talks to the brokers: requests and ``mmi.status``.

Requests go through one :class:`~mdp.aio.AsyncMDPClient` over every broker (failover,
spreading); each broker's status through a single-broker client of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mdp.aio import AsyncMDPClient
from mdp.body import decode_reply
from mdp.keys import CurveConfig
from mdp.rates import DEFAULT_LINK_FLOOR
from mdp.status import BrokerStatus
from mdp.statusfetch import StatusClients
from mdp_http.errors import TooLarge

log = logging.getLogger(__name__)


class Backend:
    """Send requests through every broker (with failover) and read each broker's status."""

    kind = "asyncio"

    def __init__(self, brokers: Sequence[str], *, timeout_s: float,
                 status_timeout_s: float = 1.0, curve: CurveConfig | None = None,
                 link_floor: int = DEFAULT_LINK_FLOOR) -> None:
        self.brokers = tuple(brokers)
        self.timeout_s = timeout_s
        self.status_timeout_s = status_timeout_s
        self.curve = curve
        self._client = AsyncMDPClient(list(self.brokers), timeout=timeout_s, curve=curve,
                                      link_floor=link_floor)
        self._statuses = StatusClients(timeout_s=status_timeout_s, curve=curve)

    async def send(self, service: str, request: dict[str, Any]) -> Any:
        """The result of one request; raises RequestError subclasses or Timeout."""
        return await self._client.send(service, request)

    async def send_keyed(self, service: str, request: dict[str, Any], key: bytes) -> Any:
        """As :meth:`send`, with a coalescing key: the client sends it to the key's home
        broker (the same for every door with the same broker list), which works identical
        keyed requests in flight at once only once."""
        return await self._client.send(service, request, key=key)

    async def send_frame(self, service: str, frame: bytes | bytearray | memoryview,
                         key: bytes | None = None) -> Any:
        """The result of a request whose body is already one msgpack map frame (sent as it
        is, never re-packed), with a coalescing key as :meth:`send_keyed` takes; raises as
        :meth:`send` does."""
        if len(frame) > self._client.max_request_bytes:
            raise TooLarge(f"the request is {len(frame)} bytes; the brokers take at most "
                           f"{self._client.max_request_bytes}")
        return decode_reply(await self._client.request_raw(
            service, frame, key=key))  # type: ignore[arg-type]

    async def status(self, endpoint: str) -> BrokerStatus:
        """One broker's ``mmi.status``; raises Timeout or ProtocolError."""
        return await self._statuses.fetch(endpoint)

    async def close(self) -> None:
        await self._client.close()
        await self._statuses.close()
