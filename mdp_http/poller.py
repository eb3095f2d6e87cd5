"""Polls every broker's ``mmi.status`` on demand, at most once per ``max_age``.

Scrapes, the dashboard's event streams and the health check all ask :meth:`Poller.fresh`;
one poll at a time runs (the others wait for it), so any number of viewers costs the
brokers one ``mmi.status`` per broker per interval. The poll before the latest is kept for
rates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from mdp_http.backend import Backend
from mdp_http.status import BrokerView, parse_status

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, backend: Backend, brokers: Sequence[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.brokers = tuple(brokers)
        self.clock = clock
        self.latest: list[BrokerView] = []
        self.previous: list[BrokerView] = []
        self._lock = asyncio.Lock()
        self._polled_at = -1e18

    def age(self) -> float:
        return self.clock() - self._polled_at

    async def fresh(self, max_age_s: float) -> list[BrokerView]:
        """The views of every broker, polled again when older than ``max_age_s``."""
        if self.age() <= max_age_s:
            return self.latest
        async with self._lock:
            if self.age() > max_age_s:  # nobody polled while we waited
                await self._poll()
        return self.latest

    async def _poll(self) -> None:
        started = self.clock()
        results = await asyncio.gather(*(self._one(b) for b in self.brokers))
        self.previous, self.latest = self.latest, list(results)
        self._polled_at = started

    async def _one(self, endpoint: str) -> BrokerView:
        try:
            status = await self.backend.status(endpoint)
        except Exception as exc:  # any failure means "down" for this poll
            log.debug("mmi.status from %s failed: %s", endpoint, exc)
            return BrokerView.down(endpoint, self.clock(), f"{type(exc).__name__}: {exc}")
        return parse_status(endpoint, status, self.clock())
