"""A worker frozen (SIGSTOP) while idle is sent a task; its broker takes it for silent,
gives the task to another worker, which answers it, and recalls it. Continued, the frozen
worker must hand the task back unrun (docs/PROTOCOL.md, "Liveness"), though libzmq's I/O
thread, stopped with it, may hand it the TASK before the RECALL behind it. Real processes,
real signals; every run is written down."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest
from test_frozen_broker_resume import _settled, _stopped

from clusterkit import Cluster, recorded
from mdp.aio import AsyncMDPClient
from testkit import broker_status, wait_for

ROUNDS = 4


def _state(endpoint: str, pid: int) -> str | None:
    status = broker_status(endpoint)
    if status is None:
        return None
    worker = status.find("record", pid)
    return None if worker is None else worker.state


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["zmq", "plain"])
def test_a_worker_woken_from_a_freeze_hands_back_the_task_recalled_meanwhile(
        cluster: Cluster, tmp_path: Path, transport: str) -> None:
    record = tmp_path / "record.txt"
    broker = cluster.broker(fast=False)
    frozen = cluster.recorder([broker], record, "--transport", transport)
    for n in range(ROUNDS):
        other = None
        frozen.signal(signal.SIGSTOP)
        wait_for(lambda: _stopped(frozen.pid), 5, "the worker to stop")

        async def call(n: int = n) -> object:
            async with AsyncMDPClient([broker.endpoint], timeout=20.0) as client:
                return await client.send("record", {"n": n})

        async def round_trip() -> object:
            nonlocal other
            task = asyncio.ensure_future(call())
            # the task went to the frozen worker, the only one; a second worker comes
            await asyncio.to_thread(wait_for, lambda: _state(broker.endpoint, frozen.pid)
                                    == "busy", 10, "the frozen worker to hold the task")
            other = await asyncio.to_thread(cluster.recorder, [broker], record)
            return await task

        reply = asyncio.run(round_trip())
        assert reply["n"] == n  # type: ignore[index]
        assert other is not None and reply["pid"] == other.pid  # type: ignore[index]
        frozen.signal(signal.SIGCONT)
        wait_for(lambda: _state(broker.endpoint, frozen.pid) == "idle", 10,
                 "the woken worker to speak again")
        wait_for(lambda: _settled(broker.endpoint), 20, "the broker to settle")
        other.signal(signal.SIGTERM)
        other.popen.wait(10)
    runs = collections.Counter(recorded(record))
    twice = sorted(n for n, count in runs.items() if count > 1)
    assert not twice, (f"{len(twice)} of {ROUNDS} recalled tasks ran on the woken worker "
                       f"too: {twice}\n{frozen.output()[-2000:]}")
