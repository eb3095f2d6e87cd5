"""A rogue peer throws garbage and protocol abuse at the broker while a well-behaved
client keeps being served correctly."""

from __future__ import annotations

import random

import msgpack
import pytest
import zmq

from clusterkit import Cluster
from mdp import protocol as p
from testkit import BrokerLoad, broker_status, wait_for

pytestmark = pytest.mark.slow

W = b"MDPW01"


def rogue(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


def random_frames(rng: random.Random) -> list[bytes]:
    headers = [b"", b"MDPC01", b"MDPW01", b"DIPC01", b"DIPC02", b"MDPC02", b"\xff" * 6]
    frames = []
    for _ in range(rng.randint(0, 8)):
        kind = rng.random()
        if kind < 0.3:
            frames.append(rng.choice(headers))
        elif kind < 0.5:
            frames.append(bytes([rng.randint(0, 12)]))
        else:
            frames.append(rng.randbytes(rng.randint(0, 64)))
    return frames or [b""]


def test_garbage_does_not_disturb_service(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker()
    cluster.worker([broker])
    good = BrokerLoad([broker.endpoint], threads=1, client={"timeout": 15.0}).start()
    wait_for(lambda: good.ok >= 20 or good.failures, 10, "the good client to get going")
    rng = random.Random(7)

    # random frames and mutated valid messages, from many sockets
    valid = [p.client_request(b"echo", [msgpack.packb({"x": 1})]), p.ready(b"echo", {"pid": 1}),
             p.signal(p.HEARTBEAT), p.reply(b"nobody", [b"x"]), p.client_ping([1, 2]),
             p.client_submit(b"echo", 9, 1000, [msgpack.packb({})]),
             p.client_hello(p.First(3, 9, 0))]
    for _ in range(40):
        sock = rogue(zctx, broker.endpoint)
        for _ in range(50):
            frames = random_frames(rng)
            if rng.random() < 0.5:
                frames = list(rng.choice(valid))
                i = rng.randrange(len(frames))
                frames[i] = rng.choice([b"", rng.randbytes(3), frames[i][:-1], b"\x00" * 99])
                if rng.random() < 0.3:
                    frames = frames[: rng.randrange(len(frames) + 1)] or [b""]
            sock.send_multipart(frames)
        sock.close()

    # protocol abuse at every point of a worker's life
    abuse = [
        [p.signal(p.DISCONNECT)],  # before READY
        [p.signal(p.HEARTBEAT)],  # unknown worker
        [p.reply(b"ghost", [b"x"])],  # reply before READY
        [p.ready(b"echo", None), p.signal(p.DISCONNECT)],  # idle, leaves
        [p.ready(b"echo", None), p.ready(b"echo", None)],  # READY twice
        [p.ready(b"echo", {}), p.signal(p.FREE), p.bounce(b"x"),
         p.busy(), p.busy(True), p.signal(p.DISCONNECT)],
        [p.ready(b"echo", None), p.busy(), p.bounce(b"x"), p.signal(p.DISCONNECT)],
        [p.ready(b"mmi.echo", None)],  # workers may not offer mmi.*
        [p.ready(b"bad name", None)],
        [p.ready(b"echo", None), p.reply(b"someone", [b"x"]), p.signal(p.DISCONNECT)],
    ]
    for script in abuse:
        sock = rogue(zctx, broker.endpoint)
        for frames in script:
            sock.send_multipart(frames)
        sock.close()

    # a rogue worker that takes a real request and walks away with it (busy DISCONNECT)
    walked_away = 0
    for _ in range(3):
        sock = rogue(zctx, broker.endpoint)
        sock.send_multipart(p.ready(b"echo", None))
        while sock.poll(5000):
            frames = sock.recv_multipart()
            if frames[2] == p.REQUEST:
                sock.send_multipart(p.signal(p.DISCONNECT))
                walked_away += 1
                break
        sock.close()
    assert walked_away == 3

    served = good.ok
    wait_for(lambda: good.ok >= served + 50 or good.failures, 15, "service to go on")
    good.stop(15)
    assert good.failures == []
    status = broker_status(broker.endpoint)
    assert status is not None
    assert status.counters.dropped > 100
    assert status.counters.requeued >= 3  # what the rogue walked away with was served
    assert "dropped message from" in broker.output()
    assert status.workers("echo") != ()
