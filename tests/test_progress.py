"""Progress from a handler to its caller, through a real broker (docs/PROTOCOL.md, PROGRESS).

A worker whose handler reports progress (``mdp.handlers.progress``, ``send_data``, ``warn``)
while it runs; a sync ``MDPClient`` and an ``AsyncMDPClient`` that pass ``on_progress``
get every report of their own request, in order, before the reply, and a caller that passed
none gets the reply alone. Runs once the broker relays PROGRESS (its WELCOME to workers says
``"progress": true``); until then it is skipped, naming why.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from clusterkit import Cluster, Proc
from mdp import handlers
from mdp import protocol as p
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
from mdp.worker import Worker, WorkerConfig

REPORTS = [("status", 1, 3, None), ("data", None, None, b"first part"),
           ("status", 3, 3, None), ("warning", None, None, b"nearly done")]


def reporter(request: dict[str, Any]) -> Any:
    """A handler that tells its caller how far it has got."""
    handlers.progress(1, 3)
    handlers.send_data(b"first part")
    handlers.progress(3, 3)
    handlers.warn("nearly done")
    return {"done": request.get("n")}


def broker_relays_progress(endpoint: str) -> bool:
    """Whether the broker's WELCOME to a DIPS worker offers to relay PROGRESS."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(p.ready(b"probe", {"host": "t", "pid": 0, "version": "t"}))
        if not sock.poll(5000):
            return False
        message = p.parse_worker_inbound(sock.recv_multipart())
        sock.send_multipart(p.signal(p.DISCONNECT))
        return isinstance(message, p.BrokerWelcome) and message.meta.get("progress") is True
    finally:
        sock.close(linger=0)


@pytest.fixture
def served(cluster: Cluster) -> Iterator[Proc]:
    broker = cluster.broker()
    assert broker_relays_progress(broker.endpoint), "the broker's WELCOME offers no progress"
    worker = Worker(WorkerConfig(brokers=[broker.endpoint], service="reporter"), reporter)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield broker
    finally:
        worker.stop()
        thread.join(10)


def test_a_sync_caller_gets_every_report_of_its_request_before_the_reply(served: Proc) -> None:
    got: list[tuple[Any, ...]] = []
    with MDPClient([served.endpoint], timeout=10.0) as client:
        reply = client.send("reporter", {"n": 1}, on_progress=lambda *r: got.append(r))
        assert reply == {"done": 1} and got == REPORTS
        assert client.send("reporter", {"n": 2}) == {"done": 2}  # none asked: reply alone


def test_an_async_caller_gets_every_report_of_its_request(served: Proc) -> None:
    async def main() -> None:
        async with AsyncMDPClient([served.endpoint], timeout=10.0) as client:
            mine: list[list[tuple[Any, ...]]] = [[], []]
            replies = await asyncio.gather(*(
                client.send("reporter", {"n": n}, on_progress=lambda *r, n=n: mine[n].append(r))
                for n in range(2)))
            assert replies == [{"done": 0}, {"done": 1}]
            assert mine == [REPORTS, REPORTS]

    asyncio.run(main())
