"""What one pass of the broker's loop sends is written together, every FLUSH_EVERY messages
and at the pass's end, not after each message: a plain router (which writes only when
asked, or before it waits) then writes the tasks of many requests in one go. Driven
in-process (``tests/inprockit.py``): the loop's router is wrapped to record what each
write-out carries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from inprockit import dealer, inproc_broker

from mdp import protocol as p
from mdp.broker import FLUSH_EVERY, Broker

BODY = msgpack.packb({"x": 1})
WORKERS = 8


class Recording:
    """A router that counts the sends each flush writes out (and passes all on)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.since_flush = 0
        self.write_outs: list[int] = []  # sends per flush that had any

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send(self, frames: list[Any]) -> None:
        self.inner.send(frames)
        self.since_flush += 1

    def flush(self) -> None:
        if self.since_flush:
            self.write_outs.append(self.since_flush)
            self.since_flush = 0
        self.inner.flush()


@pytest.fixture
def broker(zctx: zmq.Context) -> Iterator[Broker]:
    with inproc_broker(zctx) as b:
        yield b


def test_the_tasks_of_one_pass_are_written_together(broker: Broker,
                                                    zctx: zmq.Context) -> None:
    workers = [dealer(zctx) for _ in range(WORKERS)]
    for i, worker in enumerate(workers):
        worker.send_multipart(p.ready(b"echo", {"pid": i}))
    client = dealer(zctx)
    client.send_multipart(p.client_hello())
    for _ in range(10):
        broker.run_once(0)
    for worker in workers:
        assert worker.poll(1000) and worker.recv_multipart()[2] == p.WELCOME
    recording = Recording(broker.router)
    broker.router = recording
    broker._writes_later = True  # (as for a plain router: it writes when asked)
    for rid in range(WORKERS):  # (inproc: all in the broker's socket at once)
        client.send_multipart(p.client_submit(b"echo", rid, 60_000, [BODY]))
    deadline = time.monotonic() + 10
    given = 0
    while given < WORKERS and time.monotonic() < deadline:
        broker.run_once(0)
        given = sum(1 for w in workers if w.poll(0))
    assert given == WORKERS
    assert WORKERS <= FLUSH_EVERY
    assert max(recording.write_outs) >= WORKERS, recording.write_outs
    for sock in [*workers, client]:
        sock.close()
