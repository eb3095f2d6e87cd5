"""A broker frozen (SIGSTOP) while a client writes more to it than the kernel's buffers
hold (images: a few requests of a few hundred KB): the client gives it up and closes the
connection, and what it had not yet handed to the kernel, its CANCEL last of all, is thrown
away with the socket (linger 0; measured: 1 CANCEL of 10 reached a stopped ROUTER behind
2 MB each). The broker, resumed, reads the requests that did reach it, but no CANCEL. It
still runs none of them: once it has caught up, before it gives anything to a worker, it
sends each client with requests queued an unasked PONG, and a client whose connection is
gone (the send fails) has its requests dropped unworked (the client sent them elsewhere).
Real processes, real signals."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest
from test_frozen_broker_resume import _settled, _stopped

from clusterkit import Cluster, recorded
from mdp.aio import AsyncMDPClient
from testkit import wait_for

BLOB = b"\x5a" * 300_000  # a small image's bytes: 20 of them pass the kernel's buffers


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["plain", "zmq"])
def test_a_resumed_broker_runs_none_of_big_requests_whose_cancel_was_lost(
        cluster: Cluster, tmp_path: Path, transport: str) -> None:
    record = tmp_path / "record.txt"
    brokers = [cluster.broker(fast=False), cluster.broker(fast=False)]
    cluster.recorder(brokers, record)

    async def calls() -> list[object]:
        client = AsyncMDPClient([b.endpoint for b in brokers], timeout=30.0,
                                transport=transport)
        try:
            await asyncio.gather(*[client.send("record", {"n": 100 + n}) for n in range(20)])
            brokers[0].signal(signal.SIGSTOP)
            wait_for(lambda: _stopped(brokers[0].pid), 5, "the broker to stop")
            return await asyncio.gather(*[client.send("record", {"n": n, "blob": BLOB})
                                          for n in range(20)])
        finally:
            await client.close()

    replies = asyncio.run(calls())
    assert [r["n"] for r in replies] == list(range(20))  # type: ignore[index]
    brokers[0].signal(signal.SIGCONT)
    wait_for(lambda: _settled(brokers[0].endpoint), 20, "the resumed broker to settle")
    wait_for(lambda: _settled(brokers[1].endpoint), 20, "the other broker to settle")
    runs = collections.Counter(recorded(record))
    twice = sorted(n for n, count in runs.items() if count > 1)
    assert not twice, (f"{len(twice)} of 20 requests ran on both brokers: {twice} "
                       f"({runs})\n{brokers[0].output()[-3000:]}")
