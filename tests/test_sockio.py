"""How mdp.sockio sends a big last frame: from the caller's own memory only when the caller
cannot change it (bytes, or a read-only memoryview handed over), else as a copy. Shown over
inproc, where libzmq passes a message's memory along: a change made to the buffer after the
send is seen by the receiver exactly when the frame was not copied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from mdp import sockio

BIG = sockio.ZERO_COPY + 1


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    receiver.bind("inproc://sockio")
    sender.connect("inproc://sockio")
    receiver.rcvtimeo = 5000
    try:
        yield sender, receiver
    finally:
        sender.close(0)
        receiver.close(0)
        context.term()


def test_a_read_only_view_is_sent_from_its_own_memory(
        pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    sender, receiver = pair
    buffer = bytearray(BIG)
    sockio.send(sender, [b"head", memoryview(buffer).toreadonly()])
    buffer[-1] = 7  # (a caller that keeps its promise never does this)
    head, body = receiver.recv_multipart(copy=True)
    assert head == b"head" and len(body) == BIG and body[-1] == 7  # not copied


def test_a_mutable_buffer_is_copied(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    sender, receiver = pair
    buffer = bytearray(BIG)
    sockio.send(sender, [b"head", buffer])
    buffer[-1] = 7
    _, body = receiver.recv_multipart(copy=True)
    assert body[-1] == 0  # what was sent, not what the buffer became
