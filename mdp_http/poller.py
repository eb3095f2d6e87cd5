"""Polls every broker's ``mmi.status`` on demand, at most once per ``max_age``.

Scrapes, the dashboard's event streams and the health check all ask :meth:`Poller.fresh`;
one poll at a time runs (the others wait for it), so any number of viewers costs the
brokers one ``mmi.status`` per broker per interval. The poll before the latest is kept for
rates. The API asks :meth:`Poller.info` for what the workers say of a service; that never
waits for a poll, it starts one in the background when the last is old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from mdp.status import BrokerView, ServiceInfo, ServiceStatus
from mdp_http.backend import Backend

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
        self._background: asyncio.Task[list[BrokerView]] | None = None

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

    def services(self) -> set[str]:
        """Services some broker listed in the latest poll."""
        return {name for view in self.latest if view.status for name in view.status.services}

    def refresh_behind(self, max_age_s: float) -> None:
        """Poll again in the background when the latest poll is older than ``max_age_s``;
        the caller goes on with what the latest poll found."""
        if self.age() > max_age_s and (self._background is None or self._background.done()):
            self._background = asyncio.get_running_loop().create_task(self.fresh(max_age_s))

    def entries(self, service: str) -> list[ServiceStatus]:
        """``service`` at each broker that listed it in the latest poll."""
        return [view.status.services[service] for view in self.latest
                if view.status is not None and service in view.status.services]

    def info(self, service: str, max_age_s: float) -> ServiceInfo | None:
        """What the workers of ``service`` say of it, as the latest poll found (None: not
        described); a poll older than ``max_age_s`` is redone in the background."""
        self.refresh_behind(max_age_s)
        return next((e.info for e in self.entries(service) if e.info is not None), None)

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
            return BrokerView(endpoint, None, f"{type(exc).__name__}: {exc}", self.clock())
        return BrokerView(endpoint, status, taken_at=self.clock())
