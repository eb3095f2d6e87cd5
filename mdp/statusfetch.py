"""Asking a broker for ``mmi.status``: the one way to fetch it, read into
:class:`mdp.status.BrokerStatus`.

:func:`fetch` and :func:`afetch` ask one broker (sync and asyncio); :class:`StatusClients`
keeps one asyncio client per broker for a door that polls. They are apart from the schema:
the schema is plain data, which the broker builds too; fetching takes a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdp.status import BrokerStatus

if TYPE_CHECKING:
    from mdp.aio import AsyncMDPClient
    from mdp.keys import CurveConfig


def fetch(endpoint: str, *, timeout_s: float = 2.0,
          curve: CurveConfig | None = None) -> BrokerStatus:
    """Ask the broker at ``endpoint`` for its status (one try, ``timeout_s`` in all).

    Raises :class:`~mdp.errors.Timeout`, or :class:`~mdp.errors.ProtocolError` for an
    answer that is not a status map.
    """
    from mdp.client import MDPClient

    with MDPClient([endpoint], timeout=timeout_s, retries=0, connect_timeout=timeout_s,
                   shuffle=False, curve=curve) as client:
        return BrokerStatus.from_wire(client.status())


def try_fetch(endpoint: str, *, timeout_s: float = 2.0,
              curve: CurveConfig | None = None) -> BrokerStatus | None:
    """:func:`fetch`, or None when the broker does not answer with a status in time."""
    try:
        return fetch(endpoint, timeout_s=timeout_s, curve=curve)
    except Exception:  # down, hung, refused or not a broker: no status
        return None


async def afetch(endpoint: str, *, timeout_s: float = 2.0,
                 curve: CurveConfig | None = None) -> BrokerStatus:
    """:func:`fetch` for asyncio code."""
    from mdp.aio import AsyncMDPClient

    async with AsyncMDPClient([endpoint], timeout=timeout_s, retries=0,
                              connect_timeout=timeout_s, shuffle=False, curve=curve) as client:
        return BrokerStatus.from_wire(await client.status())


class StatusClients:
    """:func:`afetch` with one single-broker client per endpoint, kept open between calls
    (a door that polls every second does not connect every second)."""

    def __init__(self, *, timeout_s: float = 1.0, curve: CurveConfig | None = None) -> None:
        self.timeout_s = timeout_s
        self.curve = curve
        self._clients: dict[str, AsyncMDPClient] = {}

    async def fetch(self, endpoint: str) -> BrokerStatus:
        client = self._clients.get(endpoint)
        if client is None:
            from mdp.aio import AsyncMDPClient

            client = self._clients[endpoint] = AsyncMDPClient(
                [endpoint], timeout=self.timeout_s, retries=0, connect_timeout=self.timeout_s,
                shuffle=False, curve=self.curve)
        return BrokerStatus.from_wire(await client.status())

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
