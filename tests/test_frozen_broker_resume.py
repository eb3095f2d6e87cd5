"""A broker frozen (SIGSTOP) while requests sit in its socket: the client fails over and
gets every answer from the other broker. Before it closes the frozen broker's connection it
sends CANCEL there, naming the requests it gave up; resumed, the broker holds dispatch
while it reads what came meanwhile, so the CANCEL, behind the requests it names, keeps
every one of them from its workers: no request runs twice. Without CANCEL 1-10 of the 20
ran twice in 6 of 10 runs (both transports; found through mdp-http: 21 requests ran twice
after a 4.6 s SIGSTOP of one of two brokers). What still runs twice, a
request a worker had before the broker froze, is not in this test: the broker is frozen
before any of these requests is sent.

With big requests (images: 20 of 300 KB) the client writes more than the kernel's buffers
hold; what it had not yet handed to the kernel when it closed the connection, its CANCEL
last of all, is thrown away with the socket (linger 0; measured: 1 CANCEL of 10 reached a
stopped ROUTER behind 2 MB each). The resumed broker reads the requests that did reach it,
but no CANCEL, and still runs none of them: once caught up, before it gives anything out,
it sends each client with requests queued an unasked PONG, and a client whose connection
is gone (the send fails) has its requests dropped (before: 3-10 of 20 ran on both brokers
in 6 of 6 runs on pyzmq). Real processes, real signals."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest

from clusterkit import Cluster, recorded
from mdp.aio import AsyncMDPClient
from testkit import broker_status, wait_for


def _settled(endpoint: str) -> bool:
    status = broker_status(endpoint)
    if status is None or "record" not in status.services:
        return False
    service = status.services["record"]
    return service.queue == 0 and all(w.state == "idle" for w in service.workers)


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP takes effect when the kernel next runs it:
    until then it may still read, and hand out, what is sent to it)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].startswith("T")


BLOB = b"\x5a" * 300_000  # a small image's bytes: 20 of them pass the kernel's buffers
SMALL = {"sleep": 0.02}  # 2 workers: some of what waited is given out as the broker wakes
BIG = {"blob": BLOB}  # 1 worker


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["plain", "zmq"])  # the CANCEL goes out before either
@pytest.mark.parametrize("fields", [SMALL, BIG], ids=["small", "big"])  # closes, linger 0
def test_a_resumed_broker_runs_none_of_what_its_clients_failed_over(
        cluster: Cluster, tmp_path: Path, transport: str, fields: dict[str, object]) -> None:
    record = tmp_path / "record.txt"
    # (heartbeats at 1 s: the workers are still on the books, idle, when it wakes)
    brokers = [cluster.broker(fast=False), cluster.broker(fast=False)]
    for _ in range(2 if fields is SMALL else 1):
        cluster.recorder(brokers, record)

    async def calls() -> list[object]:
        client = AsyncMDPClient([b.endpoint for b in brokers], timeout=20.0,
                                transport=transport)
        try:
            # connected to both brokers first (each has answered some)
            await asyncio.gather(*[client.send("record", {"n": 100 + n}) for n in range(20)])
            brokers[0].signal(signal.SIGSTOP)
            wait_for(lambda: _stopped(brokers[0].pid), 5, "the broker to stop")
            return await asyncio.gather(*[client.send("record", {"n": n, **fields})
                                          for n in range(20)])
        finally:
            await client.close()

    replies = asyncio.run(calls())
    assert [r["n"] for r in replies] == list(range(20))  # type: ignore[index]
    brokers[0].signal(signal.SIGCONT)
    wait_for(lambda: _settled(brokers[0].endpoint), 20, "the resumed broker to settle")
    wait_for(lambda: _settled(brokers[1].endpoint), 20, "the other broker to settle")
    runs = collections.Counter(recorded(record))
    assert sorted(runs) == [*range(20), *range(100, 120)]
    twice = sorted(n for n, count in runs.items() if count > 1)
    assert not twice, (f"{len(twice)} of 20 requests ran on both brokers: {twice} "
                       f"({runs})\n{brokers[0].output()[-3000:]}")
