"""The broker's DIPS extensions end to end, with real broker and worker processes: identical
requests worked once (coalescing keys), unknown services answered at once."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import zmq

from clusterkit import Cluster
from mdp import protocol as p
from mdp.client import MDPClient
from mdp.errors import UnknownService
from testkit import broker_status, status_of, wait_for


def raw_client(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    """A DIPS client by hand: a DEALER that has said HELLO (and read WELCOME)."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart(p.client_hello())
    assert sock.poll(5000), "no WELCOME"
    assert isinstance(p.parse_client_inbound(sock.recv_multipart()), p.Welcome)
    return sock


def reply_of(sock: zmq.Socket) -> tuple[int | None, Any]:
    assert sock.poll(10_000), "no reply"
    reply = p.parse_client_inbound(sock.recv_multipart())
    assert isinstance(reply, p.Result)
    return reply.rid, p.unpack(reply.body[0])


def test_identical_requests_are_worked_once_and_each_caller_answered(
        cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "tester", faulty=True)
    cluster.worker([broker], "tester", faulty=True)
    body = msgpack.packb({"sleep": 0.5, "what": "the same image"})
    clients = [raw_client(zctx, broker.endpoint) for _ in range(3)]
    for n, sock in enumerate(clients):
        sock.send_multipart(p.client_submit(b"tester", 10 + n, 20_000, [body], ck=b"k1"))
    other = raw_client(zctx, broker.endpoint)
    other.send_multipart(p.client_submit(b"tester", 99, 20_000, [body], ck=b"k2"))
    replies = [reply_of(sock) for sock in clients]
    assert [rid for rid, _ in replies] == [10, 11, 12]
    results = [result["result"] for _, result in replies]
    assert all(r == results[0] for r in results)  # one run: one pid, one start time
    _, separate = reply_of(other)
    assert (separate["result"]["pid"], separate["result"]["start"]) != (
        results[0]["pid"], results[0]["start"])
    status = status_of(broker.endpoint)
    service = status.services["tester"].counters
    assert status.counters.coalesced == 2
    assert service is not None and service.coalesced == 2 and service.replies == 2


def test_an_unknown_service_is_answered_at_once_naming_those_offered(
        cluster: Cluster) -> None:
    broker = cluster.broker(None, "--unknown-grace", "1")
    cluster.worker([broker], "echo")
    wait_for(lambda: (status := broker_status(broker.endpoint)) is not None
             and status.broker.uptime_s >= 1.0, 10, "the broker's start-up grace to end")
    # a client that waits less than the grace: only an answer at once reaches it
    with MDPClient([broker.endpoint], timeout=0.8, retries=0) as client:
        with pytest.raises(UnknownService) as raised:
            client.send("nosuch", {})
    assert "'nosuch'" in str(raised.value) and "echo" in str(raised.value)
