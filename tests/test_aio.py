"""AsyncMDPClient against real brokers and workers, under the same faults as the sync client.

Many tasks share one client; every request must come back with its own reply: zero lost,
zero wrong, zero errors (brokers and workers with their default settings, as in
test_faults.py).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from clusterkit import Cluster, Proc
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
from mdp.errors import BadRequest, UnknownService
from mdp.status import BrokerStatus
from testkit import broker_counter, busy_worker, free_ports, wait_for, worker_pids


@dataclass
class Load:
    """``tasks`` tasks sending ``total`` echo requests through one client."""

    client: AsyncMDPClient
    total: int
    tasks: int = 16
    sleep_s: float = 0.002
    done: int = 0
    latencies: list[float] = field(default_factory=list)
    wrong: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _next: int = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._task() for _ in range(self.tasks)))

    async def _task(self) -> None:
        while self._next < self.total:
            i = self._next
            self._next += 1
            request = {"i": i, "token": os.urandom(8), "sleep": self.sleep_s}
            started = time.monotonic()
            try:
                reply = await self.client.send("echo", request)
            except Exception as exc:  # recorded; the test fails on it
                self.errors.append(exc)
                continue
            self.latencies.append(time.monotonic() - started)
            if reply.get("i") != i or reply.get("token") != request["token"]:
                self.wrong.append((request, reply))
            self.done += 1

    def check(self, label: str) -> None:
        assert self.errors == [], f"{len(self.errors)} errors, first: {self.errors[0]!r}"
        assert self.wrong == []
        assert self.done == self.total
        extra = max(self.latencies) - statistics.median(self.latencies)
        print(f"\n{label}: {self.total} requests from {self.tasks} tasks on one async "
              f"client, 0 lost, 0 wrong; worst extra latency {extra * 1000:.0f} ms")


def test_many_concurrent_calls_share_one_client(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker])

    async def main() -> None:
        async with AsyncMDPClient([broker.endpoint]) as client:
            requests = [{"i": i, "blob": os.urandom(16)} for i in range(500)]
            replies = await asyncio.gather(*(client.send("echo", r) for r in requests))
            assert replies == requests
            assert await client.mmi_service("echo") == "200"
            assert await client.mmi_service("nothing") == "404"
            assert (await client.request_raw("mmi.other", b""))[0] == b"501"
            status = BrokerStatus.from_wire(await client.status())
            assert "echo" in status.services
            with pytest.raises(BadRequest):
                await client.send("no such name!", {})
            assert await client.send("echo", {"p": 1}, priority=1, timeout=5) == {"p": 1}

    asyncio.run(asyncio.wait_for(main(), 60))


def test_unknown_service_and_a_cancelled_call(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--unknown-grace", "0.5")  # not the default's 2 s start-up
    cluster.worker([broker], "tester", faulty=True)

    async def main() -> None:
        async with AsyncMDPClient([broker.endpoint], timeout=20) as client:
            with pytest.raises(UnknownService):
                await client.send("nobody", {})
            with pytest.raises(asyncio.TimeoutError):  # the caller gives up
                await asyncio.wait_for(client.send("tester", {"sleep": 1.0}), 0.1)
            # the late reply to the cancelled call is dropped; the next call gets its own
            reply = await client.send("tester", {"tag": "after"})
            assert reply["tag"] == "after"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_start_calls_back_once_and_a_cancelled_call_never(cluster: Cluster) -> None:
    """The callback form (a door's job path: no task, no future): each call's ``on_done``
    gets its own result or error, once; a call cancelled is never called back, and its late
    reply does not reach the call after it."""
    broker = cluster.broker(None, "--unknown-grace", "0.5")
    cluster.worker([broker], "tester", faulty=True)
    cluster.worker([broker])

    async def main() -> None:
        async with AsyncMDPClient([broker.endpoint], timeout=20) as client:
            loop = asyncio.get_running_loop()
            outcomes: dict[int, list[Any]] = {}
            over = {i: loop.create_future() for i in range(60)}

            def done(i: int, outcome: Any) -> None:
                outcomes.setdefault(i, []).append(outcome)
                if not over[i].done():
                    over[i].set_result(None)

            for i in range(50):
                client.start("echo", {"i": i}, functools.partial(done, i))
            client.start("nobody", {}, functools.partial(done, 50))
            slow = client.start("tester", {"sleep": 1.0}, functools.partial(done, 51))
            client.cancel(slow)
            client.start("tester", {"tag": "after"}, functools.partial(done, 52))
            with pytest.raises(BadRequest):  # refused as it is placed: no callback
                client.start("no such name!", {}, functools.partial(done, 53))
            await asyncio.wait_for(asyncio.gather(*(over[i] for i in (*range(51), 52))), 30)
            assert all(outcomes[i] == [{"i": i}] for i in range(50))
            assert len(outcomes[50]) == 1 and isinstance(outcomes[50][0], UnknownService)
            assert outcomes[52][0]["tag"] == "after" and len(outcomes[52]) == 1
            await asyncio.sleep(1.5)  # the cancelled call's reply has come and gone
            assert 51 not in outcomes and 53 not in outcomes
            assert all(len(v) == 1 for v in outcomes.values())

    asyncio.run(asyncio.wait_for(main(), 60))


# --- faults ------------------------------------------------------------------------------

Fault = Callable[[Cluster, list[Proc], list[Proc], list[int]], Awaitable[None]]


def run_with_fault(cluster: Cluster, fault: Fault, label: str, total: int = 1500,
                   sleep_s: float = 0.002) -> None:
    ports = free_ports(2)
    brokers = [cluster.broker(port, fast=False) for port in ports]
    workers = [cluster.worker(brokers, "echo", faulty=True, fast=False)
               for _ in range(4)]

    async def main() -> Load:
        async with AsyncMDPClient([b.endpoint for b in brokers]) as client:
            load = Load(client, total, sleep_s=sleep_s)
            running = asyncio.ensure_future(load.run())
            while load.done < total // 4 and not load.errors and not running.done():
                await asyncio.sleep(0.05)  # polling a predicate, not a synchronisation sleep
            await fault(cluster, brokers, workers, ports)
            await running
            return load

    asyncio.run(asyncio.wait_for(main(), 180)).check(label)


def _in_thread(function: Callable[[], Any]) -> Awaitable[Any]:
    return asyncio.to_thread(function)


def _requeued(brokers: list[Proc]) -> int:
    return sum(broker_counter(b.endpoint, "requeued") for b in brokers)


@pytest.mark.slow
def test_async_worker_killed_mid_request(cluster: Cluster) -> None:
    async def fault(cluster: Cluster, brokers: list[Proc], workers: list[Proc],
                    ports: list[int]) -> None:
        before = await _in_thread(lambda: _requeued(brokers))
        endpoints = [b.endpoint for b in brokers]
        pid = await _in_thread(lambda: wait_for(lambda: busy_worker(endpoints), 10, "busy"))
        os.kill(pid, signal.SIGKILL)
        await _in_thread(lambda: wait_for(lambda: _requeued(brokers) > before, 10,
                                          "the killed worker's request to be requeued"))

    run_with_fault(cluster, fault, "async: worker SIGKILL mid-request", sleep_s=0.01)


@pytest.mark.slow
def test_async_broker_killed_and_restarted(cluster: Cluster) -> None:
    async def fault(cluster: Cluster, brokers: list[Proc], workers: list[Proc],
                    ports: list[int]) -> None:
        other_before = await _in_thread(lambda: broker_counter(brokers[1].endpoint, "replies"))
        brokers[0].signal(signal.SIGKILL)
        await _in_thread(brokers[0].wait)
        await _in_thread(lambda: wait_for(
            lambda: broker_counter(brokers[1].endpoint, "replies") > other_before + 100, 30,
            "the other broker to carry on alone"))
        restarted = await _in_thread(lambda: cluster.broker(ports[0], fast=False))
        await _in_thread(lambda: wait_for(
            lambda: len(worker_pids(restarted.endpoint, "echo")) == len(workers), 30,
            "every worker to re-register with the restarted broker"))

    run_with_fault(cluster, fault, "async: broker SIGKILL + restart", sleep_s=0.005)


@pytest.mark.slow
def test_async_broker_hung(cluster: Cluster) -> None:
    async def fault(cluster: Cluster, brokers: list[Proc], workers: list[Proc],
                    ports: list[int]) -> None:
        brokers[0].signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)  # the fault itself: a broker hung for 3 s
        finally:
            brokers[0].signal(signal.SIGCONT)

    run_with_fault(cluster, fault, "async: broker SIGSTOP 3 s")


def test_send_frame_passes_an_encoded_request_through_keyed_on_both_clients(
        cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker])
    frame = msgpack.packb({"i": 1, "blob": b"\x00" * 16})
    with MDPClient([broker.endpoint]) as sync:
        assert sync.send_frame("echo", frame) == {"i": 1, "blob": b"\x00" * 16}
        assert sync.send_frame("echo", frame, key=b"k1") == {"i": 1, "blob": b"\x00" * 16}
        with pytest.raises(BadRequest):
            sync.send_frame("echo", msgpack.packb([1, 2]))  # the worker checks the map
        with pytest.raises(BadRequest):
            sync.send_frame("echo", "text")  # type: ignore[arg-type]

    async def main() -> None:
        async with AsyncMDPClient([broker.endpoint]) as client:
            replies = await asyncio.gather(*(client.send_frame("echo", frame, key=b"k")
                                             for _ in range(20)))
            assert replies == [{"i": 1, "blob": b"\x00" * 16}] * 20
            with pytest.raises(BadRequest):
                await client.send_frame("echo", b"x" * (client.max_request_bytes + 1))

    asyncio.run(main())
