"""The broker's loop driven in-process over inproc sockets: no timing, no subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq

from mdp import protocol as p
from mdp.broker import _BATCH, Broker, BrokerConfig


@pytest.fixture
def broker(zctx: zmq.Context) -> Iterator[Broker]:
    b = Broker(BrokerConfig(bind=["inproc://broker"]), zctx)
    try:
        yield b
    finally:
        b.close()


def dealer(ctx: zmq.Context) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect("inproc://broker")
    return sock


def drain_all(broker: Broker) -> None:
    for _ in range(100):
        before = broker.dispatcher.counters.requests + broker.dispatcher.counters.replies
        broker._drain(0)
        if broker.dispatcher.counters.requests + broker.dispatcher.counters.replies == before:
            return


def test_no_message_is_lost_across_batches(broker: Broker, zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    broker._drain(0)
    assert worker.poll(1000) and worker.recv_multipart()[2] == p.WELCOME
    count = 3 * _BATCH + 7  # several full batches and a partial one
    for i in range(count):
        client.send_multipart(p.client_xrequest(b"echo", i + 1, 60_000, [msgpack.packb({})]))
    drain_all(broker)
    assert broker.dispatcher.counters.requests == count
    served = 0
    while served < count:
        assert worker.poll(1000), f"worker got {served} of {count} requests"
        frames = worker.recv_multipart()
        if frames[2] != p.XREQUEST:
            continue
        worker.send_multipart(p.reply(frames[3], [frames[-1]]))
        broker._drain(0)
        served += 1
    replies = 0
    while client.poll(0):
        client.recv_multipart()
        replies += 1
    assert replies == count
    assert broker.dispatcher.counters.replies == count
    worker.close()
    client.close()


def test_pings_tell_which_requests_the_broker_holds(broker: Broker, zctx: zmq.Context) -> None:
    client = dealer(zctx)
    client.send_multipart(p.client_xrequest(b"nobody", 5, 60_000, [msgpack.packb({})]))
    client.send_multipart(p.client_ping([5, 6]))
    drain_all(broker)
    assert client.poll(1000)
    assert p.parse_client_inbound(client.recv_multipart()) == p.Pong([6])
    client.close()
