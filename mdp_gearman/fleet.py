"""Who offers each service, as the brokers' ``mmi.status`` says: the door's view of the fleet.

Three decisions of the door need it:

* a background job waits, holding no slot, while no worker offers its service
  (:mod:`mdp_gearman.background`);
* a foreground job that DIPS answered ``unknown_service`` waits for a worker of its service
  until its deadline, as gearmand keeps such a job (:meth:`Fleet.until_offered`);
* a workload passes to DIPS unchanged (as the raw field) when every worker of its service is
  a Gearman worker behind a door, which then reads the very bytes its client sent
  (:meth:`mdp_gearman.server.Gateway._attempt`).

Gearman workers behind a door announce the version :data:`GEARMAN_WORKER_VERSION`; every
other worker is a DIPS worker. The view is one fetch of every broker's status, refreshed on
demand (one fetch at a time, however many wait for it); a broker that does not answer adds
nothing, and when none answers the view keeps what it knew.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mdp.status import BrokerStatus, WorkerStatus

log = logging.getLogger(__name__)

GEARMAN_WORKER_VERSION = "gearman-worker via mdp-gearman"  # the start of a proxy's version
POLL_S = 0.25  # how often the view is fetched again while a job waits for a worker


@dataclass(frozen=True)
class Offer:
    """How many workers offer a service: DIPS workers and Gearman workers behind doors."""

    dips: int = 0
    gearman: int = 0

    @property
    def any(self) -> bool:
        return self.dips + self.gearman > 0

    @property
    def gearman_only(self) -> bool:
        return self.gearman > 0 and self.dips == 0


NOBODY = Offer()


def is_gearman_worker(worker: WorkerStatus) -> bool:
    return worker.version.startswith(GEARMAN_WORKER_VERSION)


def offers(statuses: list[BrokerStatus | None]) -> dict[str, Offer] | None:
    """Each service's offer over every broker that answered (a worker attached to several
    brokers counts once); None when no broker answered."""
    answered = [s for s in statuses if s is not None]
    if not answered:
        return None
    seen: dict[str, dict[str, set[tuple[str, int, str]]]] = {}
    for status in answered:
        for name, service in status.services.items():
            kinds = seen.setdefault(name, {"dips": set(), "gearman": set()})
            for worker in service.workers:
                who = (worker.host, worker.pid, "" if worker.pid else worker.identity)
                kinds["gearman" if is_gearman_worker(worker) else "dips"].add(who)
    return {name: Offer(len(k["dips"]), len(k["gearman"])) for name, k in seen.items()}


class Fleet:
    """The door's cached view of who offers what; see the module docstring."""

    def __init__(self, fetch: Callable[[], Awaitable[list[BrokerStatus | None]]]) -> None:
        self._fetch = fetch
        self._offers: dict[str, Offer] = {}
        self.statuses: list[BrokerStatus | None] = []  # the last fetch's, None: no answer
        self.known = False  # some broker has answered once
        self.fetched_at = -math.inf  # loop time of the last fetch
        self.refreshed_at = -math.inf  # loop time of the last fetch that got an answer
        self.viewed_at = -math.inf  # when that fetch began: the view is no older than this
        self._refresh: asyncio.Task[None] | None = None
        self.listeners: list[Callable[[], None]] = []  # told after each answered fetch
        self._offered_at: dict[str, float] = {}  # when a Gearman worker here last offered it

    def offer(self, service: str) -> Offer | None:
        """What the last view says of ``service``; None while the door knows nothing."""
        if not self.known:
            return None
        return self._offers.get(service, NOBODY)

    def offered(self, service: str) -> None:
        """A Gearman worker behind this door offers ``service`` now (a broker registered
        it): the view says so until the next fetch, which will too."""
        offer = self._offers.get(service, NOBODY)
        self._offers[service] = Offer(offer.dips, offer.gearman + 1)
        self._offered_at[service] = asyncio.get_running_loop().time()
        self.known = True
        for listener in self.listeners:
            listener()

    async def until_offered(self, service: str, within_s: float) -> bool:
        """Wait (at most ``within_s``) until a view newer than this call shows a worker of
        ``service``; whether one did. The view is fetched every :data:`POLL_S` meanwhile, and
        a Gearman worker registering here is seen at once."""
        loop = asyncio.get_running_loop()
        since, deadline = loop.time(), loop.time() + within_s
        wake = asyncio.Event()
        self.listeners.append(wake.set)
        try:
            while True:
                offer = self._offers.get(service, NOBODY)
                if offer.any and max(self._offered_at.get(service, -math.inf),
                                     self.viewed_at) >= since:
                    return True
                left = deadline - loop.time()
                if left <= 0:
                    return False
                if loop.time() - self.fetched_at >= POLL_S or self.viewed_at < since:
                    self.refresh()
                wake.clear()
                try:
                    async with asyncio.timeout(min(left, POLL_S)):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            self.listeners.remove(wake.set)

    def age_s(self, now: float | None = None) -> float:
        """How old the view is (``now``: the loop's time, if the caller has it)."""
        if now is None:
            now = asyncio.get_running_loop().time()
        return now - self.refreshed_at

    def must_wait(self, now: float, max_age_s: float, ahead_s: float) -> bool:
        """Whether a job that needs the view must wait for a fresher one: it is older than
        ``max_age_s``. A view within ``ahead_s`` of that age is fetched again now, without
        waiting, so that under steady load no job waits for the view (each second one did:
        a round trip to every broker, and up to the caller's wait with a broker hung)."""
        age = now - self.refreshed_at
        if age <= max_age_s - ahead_s:
            return False
        if age <= max_age_s:
            self.refresh()
            return False
        return True

    def refresh(self) -> asyncio.Task[None]:
        """Fetch a new view (joining a fetch under way)."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._fetch_once())
        return self._refresh

    async def fresh(self, max_age_s: float, wait_s: float = math.inf) -> None:
        """A view at most ``max_age_s`` old, waiting at most ``wait_s`` for the fetch."""
        if self.age_s() <= max_age_s:
            return
        task = self.refresh()
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_s if wait_s < math.inf else None)
        except TimeoutError:
            pass

    async def _fetch_once(self) -> None:
        began = asyncio.get_running_loop().time()
        try:
            statuses = await self._fetch()
        except Exception as exc:  # the view stays as it was; the next fetch may do better
            log.debug("no view of the fleet: %s", exc)
            return
        self.statuses, self.fetched_at = statuses, asyncio.get_running_loop().time()
        found = offers(statuses)
        if found is None:
            return
        self._offers, self.known = found, True
        self.refreshed_at, self.viewed_at = asyncio.get_running_loop().time(), began
        # offers made before this view began are in it: only later ones are kept (a worker
        # that says CAN_DO and CANT_DO under ever new names grows nothing for long)
        self._offered_at = {name: at for name, at in self._offered_at.items() if at >= began}
        for listener in self.listeners:
            listener()
