"""A broker driven in-process over ``inproc://`` sockets: anything a test's DEALER sends is
in the broker's socket at once, and the test runs the broker's loop itself
(``Broker.run_once``), so the order of what the loop reads is the test's to choose; and a
worker link that keeps what a worker sends (:class:`KeptLink`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from mdp.broker import Broker, BrokerConfig

ENDPOINT = "inproc://broker"


@contextmanager
def inproc_broker(ctx: zmq.Context, endpoint: str = ENDPOINT) -> Iterator[Broker]:
    """A broker bound at ``endpoint`` in ``ctx``, closed at the end of the block."""
    broker = Broker(BrokerConfig(bind=[endpoint]), ctx)
    try:
        yield broker
    finally:
        broker.close()


def dealer(ctx: zmq.Context, endpoint: str = ENDPOINT) -> zmq.Socket:
    """A DEALER connected to the broker at ``endpoint`` (closed without lingering)."""
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    return sock


class KeptLink:
    """A worker link (``mdp.worker.Worker.links``) that keeps what is sent and has nothing
    to read: the worker's loop driven by hand."""

    address = "tcp://127.0.0.1:1"
    retry_at = math.inf

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        self.sent.append(frames)

    def take(self) -> list[list[bytes]]:
        return []
