"""The door's view of the fleet (mdp_gearman.fleet.Fleet): a job that needs it waits for a
fresher one only when it is past its age; one near that age is fetched again ahead of need,
so that under steady load no job waits for a round trip to every broker."""

from __future__ import annotations

import asyncio

from mdp.status import BrokerInfo, BrokerStatus, ServiceStatus, WorkerStatus
from mdp_gearman.fleet import Fleet

MAX_AGE_S, AHEAD_S = 1.0, 0.25


def _view() -> list[BrokerStatus | None]:
    worker = WorkerStatus("0001", "idle", "h", 1, "v1", 0, 1.0)
    return [BrokerStatus(BrokerInfo("tcp://b:1", 9, "b", "v1", 1.0),
                         {"ecard": ServiceStatus("ecard", 0, (worker,))})]


def test_a_view_near_its_age_is_fetched_again_without_the_job_waiting() -> None:
    async def scenario() -> tuple[list[bool], int, float, float]:
        fetched = 0

        async def fetch() -> list[BrokerStatus | None]:
            nonlocal fetched
            fetched += 1
            return _view()

        loop = asyncio.get_running_loop()
        fleet = Fleet(fetch)
        await fleet.refresh()
        assert fetched == 1 and fleet.offer("ecard") is not None
        at = fleet.refreshed_at
        waits = [fleet.must_wait(at + 0.5, MAX_AGE_S, AHEAD_S)]  # young: nothing to do
        assert fetched == 1 and fleet._refresh is not None and fleet._refresh.done()
        waits.append(fleet.must_wait(at + 0.8, MAX_AGE_S, AHEAD_S))  # near its age
        task = fleet._refresh
        assert task is not None and not task.done()  # a fetch began, nobody waits on it
        await task
        waits.append(fleet.must_wait(at + 1.5, MAX_AGE_S, AHEAD_S))  # stale: must wait
        return waits, fetched, fleet.refreshed_at, loop.time()

    waits, fetched, refreshed_at, now = asyncio.run(scenario())
    assert waits == [False, False, True]
    assert fetched == 2 and refreshed_at <= now


def test_a_view_never_fetched_must_be_waited_for() -> None:
    async def scenario() -> bool:
        async def fetch() -> list[BrokerStatus | None]:
            return _view()

        fleet = Fleet(fetch)
        return fleet.must_wait(asyncio.get_running_loop().time(), MAX_AGE_S, AHEAD_S)

    assert asyncio.run(scenario())
