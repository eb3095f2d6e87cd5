"""The broker's loop driven in-process over inproc sockets: no timing, no subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq
from inprockit import dealer, inproc_broker

from mdp import protocol as p
from mdp.broker import PASS, Broker


@pytest.fixture
def broker(zctx: zmq.Context) -> Iterator[Broker]:
    with inproc_broker(zctx) as b:
        yield b


def drain_all(broker: Broker) -> None:
    """Run the broker's loop until a pass finds no message. (Not until its counters stop
    moving: a pass may end after a READY alone, which counts nothing, while the SUBMIT sent
    after it still waits; under load that left a test's worker without its task.)"""
    for _ in range(100):
        if broker.run_once(0) == 0:
            return


def test_no_message_is_lost_across_batches(broker: Broker, zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    broker.run_once(0)
    assert worker.poll(1000) and worker.recv_multipart()[2] == p.WELCOME
    served_keys: set[bytes] = set()
    count = 3 * PASS + 7  # several full batches and a partial one
    for i in range(count):
        client.send_multipart(p.client_submit(b"echo", i + 1, 60_000, [msgpack.packb({})]))
    drain_all(broker)
    assert broker.dispatcher.counters.requests == count
    served = 0
    while served < count:
        assert worker.poll(1000), f"worker got {served} of {count} requests"
        frames = worker.recv_multipart()
        if frames[2] != p.TASK:
            continue
        assert frames[3] not in served_keys
        served_keys.add(frames[3])
        worker.send_multipart(p.reply(frames[3], [frames[-1]]))
        broker.run_once(0)
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
    client.send_multipart(p.client_submit(b"nobody", 5, 60_000, [msgpack.packb({})]))
    client.send_multipart(p.client_ping([5, 6]))
    drain_all(broker)
    assert client.poll(1000)
    assert p.parse_client_inbound(client.recv_multipart()) == p.Pong([6], broker.instance)
    client.close()


def test_hello_gives_the_next_standard_request_an_id_and_a_deadline(
        broker: Broker, zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    client.send_multipart(p.client_hello(p.First(41, 60_000, 0)))
    client.send_multipart(p.client_request(b"echo", [msgpack.packb({"a": 1})]))
    drain_all(broker)
    assert client.poll(1000)
    assert isinstance(p.parse_client_inbound(client.recv_multipart()), p.Welcome)
    frames = []
    while worker.poll(1000):
        frames = worker.recv_multipart()
        if frames[2] == p.TASK:
            break
    task = p.parse_worker_inbound(frames)
    assert isinstance(task, p.BrokerTask) and task.ttl_ms is not None
    worker.send_multipart(p.reply(task.key, task.body))
    drain_all(broker)
    assert client.poll(1000)
    assert p.parse_client_inbound(client.recv_multipart()) == p.Result(b"echo", task.body, 41)
    worker.close()
    client.close()


def test_a_standard_worker_is_never_given_a_second_task(broker: Broker,
                                                        zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", None))
    for i in range(3):
        client.send_multipart(p.client_submit(b"echo", i + 1, 60_000, [msgpack.packb({})]))
    drain_all(broker)
    assert worker.poll(1000)
    first = worker.recv_multipart()
    assert first[2] == p.REQUEST
    assert not worker.poll(0)  # inproc: anything sent is already there
    worker.send_multipart(p.reply(first[3], [first[-1]]))
    drain_all(broker)
    assert worker.poll(1000) and worker.recv_multipart()[2] == p.REQUEST
    worker.close()
    client.close()


@pytest.mark.parametrize("batch", [True, False])
def test_a_batched_submit_is_answered_per_request_or_in_batches(
        broker: Broker, zctx: zmq.Context, batch: bool) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    client.send_multipart(p.client_hello(batch=batch))
    bodies = [msgpack.packb({"i": i}) for i in range(5)]
    client.send_multipart(p.client_submit_batch(b"echo", [10, 11, 12, 13, 14], 60_000, bodies))
    drain_all(broker)
    answered: dict[int, bytes] = {}
    while len(answered) < 5:
        while worker.poll(0):
            task = p.parse_worker_inbound(worker.recv_multipart())
            if isinstance(task, p.BrokerTask):
                worker.send_multipart(p.reply(task.key, task.body))
        drain_all(broker)
        assert client.poll(1000), f"answered only {sorted(answered)}"
        message = p.parse_client_inbound(client.recv_multipart())
        if isinstance(message, p.Results):
            assert batch
            answered.update(zip(message.rids, message.bodies, strict=True))
        elif isinstance(message, p.Result):
            assert message.rid is not None
            answered[message.rid] = message.body[0]
    assert answered == dict(zip([10, 11, 12, 13, 14], bodies, strict=True))
    worker.close()
    client.close()


def test_a_reply_gathered_for_a_batch_reaches_the_client_before_a_pong(
        broker: Broker, zctx: zmq.Context) -> None:
    """A PONG says which requests the broker no longer holds; a reply it has gathered but
    not yet sent must go first, or the client takes that request for lost."""
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    client.send_multipart(p.client_hello(batch=True))
    client.send_multipart(p.client_submit(b"echo", 7, 60_000, [msgpack.packb({"a": 1})]))
    drain_all(broker)
    task = None
    while task is None:
        assert worker.poll(1000), "the worker got no task"
        message = p.parse_worker_inbound(worker.recv_multipart())
        if isinstance(message, p.BrokerTask):
            task = message
    while client.poll(0):
        client.recv_multipart()  # WELCOME
    # the reply and the ping are read in one pass of the broker's loop (should a busy
    # machine stall the loop past WAITED_S after the reply, the ping comes in a second
    # pass, and the order below holds as well)
    worker.send_multipart(p.reply(task.key, task.body))
    client.send_multipart(p.client_ping([7]))
    drain_all(broker)
    received = []
    while len(received) < 2:
        assert client.poll(1000), f"the client got only {received}"
        received.append(p.parse_client_inbound(client.recv_multipart()))
    assert received == [p.Result(b"echo", task.body, 7), p.Pong([7], broker.instance)]
    worker.close()
    client.close()


def test_a_worker_that_takes_batches_gets_tasks_and_replies_in_one_message_each(
        broker: Broker, zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1, "prefetch": 8, "batch": True}))
    drain_all(broker)
    assert worker.poll(1000)
    welcome = p.parse_worker_inbound(worker.recv_multipart())
    assert isinstance(welcome, p.BrokerWelcome) and welcome.meta["batch"] is True
    client.send_multipart(p.client_hello(batch=True))
    bodies = [msgpack.packb({"i": i}) for i in range(10)]
    client.send_multipart(p.client_submit_batch(b"echo", list(range(1, 11)), 60_000, bodies))
    drain_all(broker)

    def answer_all() -> list[bool]:
        """Answer what came in one REPLIES; the tasks' hold flags."""
        assert worker.poll(1000)
        message = p.parse_worker_inbound(worker.recv_multipart())
        tasks = message.tasks if isinstance(message, p.BrokerTasks) else [message]
        assert not worker.poll(0)  # inproc: anything sent is already there
        worker.send_multipart(p.replies([t.key for t in tasks], [t.body[0] for t in tasks]))
        drain_all(broker)
        return [t.hold for t in tasks]  # type: ignore[union-attr]

    # until a task of the service has been timed, one held behind the one it runs; then
    # as many as its prefetch allows (the echo tasks here take no time at all)
    assert answer_all() == [False, True]
    assert answer_all() == [False] + [True] * 7
    assert not worker.poll(0)
    answered: dict[int, bytes] = {}
    while client.poll(100):
        message = p.parse_client_inbound(client.recv_multipart())
        if isinstance(message, p.Results):
            answered.update(zip(message.rids, message.bodies, strict=True))
        elif isinstance(message, p.Result) and message.rid is not None:
            answered[message.rid] = message.body[0]
    assert answered == dict(zip(range(1, 11), bodies, strict=True))
    assert broker.dispatcher.counters.replies == 10
    worker.close()
    client.close()


def test_a_big_body_crosses_the_broker_intact(broker: Broker, zctx: zmq.Context) -> None:
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    drain_all(broker)
    assert worker.poll(1000) and worker.recv_multipart()[2] == p.WELCOME
    body = msgpack.packb({"blob": bytes(range(256)) * 8192})  # 2 MiB
    client.send_multipart(p.client_submit(b"echo", 1, 60_000, [body]))
    drain_all(broker)
    assert worker.poll(1000)
    task = p.parse_worker_inbound(worker.recv_multipart())
    assert isinstance(task, p.BrokerTask) and task.body == [body]
    worker.send_multipart(p.reply(task.key, task.body))
    drain_all(broker)
    assert client.poll(1000)  # announced (the client's next PONG would wait behind it)
    assert p.parse_client_inbound(client.recv_multipart()) == p.Pong([], broker.instance,
                                                                      len(body))
    assert client.poll(1000)
    assert p.parse_client_inbound(client.recv_multipart()) == p.Result(b"echo", [body], 1)
    worker.close()
    client.close()
