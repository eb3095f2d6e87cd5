"""The Gearman door's LinkDriver with real ZeroMQ sockets: a ROUTER per broker on loopback,
a real ProxyCore of four functions at two brokers (eight links), and the driver on an
asyncio loop in a thread of its own (the test thread plays the brokers).

What it does is proportional to what happened: a pass after one send looks at that one
socket, not at every link; and whatever arrives on any link is still read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import zmq

from mdp import protocol as p
from mdp import sockio
from mdp.actions import Close, Event, Lost, Open, Received, Send
from mdp.workerstate import Timing
from mdp_gearman import linkdriver
from mdp_gearman.linkdriver import LinkDriver
from mdp_gearman.proxycore import ProxyCore
from testkit import wait_for

FUNCTIONS = ("f0", "f1", "f2", "f3")
WAIT_S = 10.0
R = TypeVar("R")


class RecordingCore(ProxyCore):
    """A real ProxyCore that keeps the events its driver fed it."""

    def __init__(self, brokers: list[str]) -> None:
        # timers far off: no heartbeat of the core's own comes in the middle of a count
        super().__init__(FUNCTIONS, brokers, {}, Timing(heartbeat_interval_s=60.0), 1)
        self.events: list[Event] = []

    def handle(self, event: Event, now: float) -> None:
        self.events.append(event)
        super().handle(event, now)


class Owner:
    """The Gearman worker's side: counts the driver's calls."""

    def __init__(self) -> None:
        self.inputs = 0

    def on_input(self, now: float) -> None:
        self.inputs += 1

    def next_deadline(self, now: float) -> float:
        return now + 3600.0


class Rig:
    """Two brokers (ROUTERs, driven from the test thread) and a driver on its own loop."""

    def __init__(self, context: zmq.Context) -> None:
        self.routers = []
        for _ in range(2):
            router = context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind("tcp://127.0.0.1:*")
            self.routers.append(router)
        brokers = [str(r.getsockopt_string(zmq.LAST_ENDPOINT)) for r in self.routers]
        self.core = RecordingCore(brokers)
        self.owner = Owner()
        self.identities: dict[int, bytes] = {}  # link -> its DEALER's identity at its broker
        self.readies: dict[int, list[bytes]] = {}  # link -> every identity it said READY as
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.driver: LinkDriver = self.call(lambda: LinkDriver(self.core, context, self.owner))
        self.call(self.driver.start)
        wait_for(self._all_ready, WAIT_S, "a READY from every link")

    def call(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on the driver's loop and return what it returned."""
        done: Future[R] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=WAIT_S)

    def settle(self) -> None:
        """Let every socket take in its connection's own commands (libzmq signals those on
        the descriptor too, and the driver rightly looks at a socket it signals), then let
        the loop run the looks already queued; no message waits on any socket."""
        def take_commands() -> bool:
            return not any(s is not None and sockio.readable(s)
                           for s in [*self.driver.sockets, *self.driver.monitors])

        assert self.call(take_commands), "a message the test did not send"
        self.call(lambda: None)

    def link(self, function: str, broker: int) -> int:
        return FUNCTIONS.index(function) * len(self.routers) + broker

    def take(self, broker: int) -> list[list[bytes]]:
        """What broker ``broker`` received so far (READYs noted as link identities)."""
        router, got = self.routers[broker], []
        while router.poll(0):
            frames = router.recv_multipart()
            got.append(frames)
            if frames[3:4] == [p.READY]:
                link = self.link(frames[4].decode(), broker)
                self.identities[link] = frames[0]
                self.readies.setdefault(link, []).append(frames[0])
        return got

    def _all_ready(self) -> bool:
        for broker in range(len(self.routers)):
            self.take(broker)
        return len(self.identities) == len(self.core.links)

    def to_link(self, link: int, frames: list[bytes]) -> None:
        """Broker side: send ``frames`` to link ``link``'s DEALER."""
        self.routers[link % len(self.routers)].send_multipart([self.identities[link], *frames])

    def received(self, link: int) -> int:
        return sum(1 for e in list(self.core.events)
                   if isinstance(e, Received) and e.link == link)

    def close(self) -> None:
        self.call(lambda: self.driver.close(abrupt=True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)
        self.loop.close()
        for router in self.routers:
            router.close(linger=0)


@pytest.fixture
def rig() -> Iterator[Rig]:
    context = zmq.Context()
    rig = Rig(context)
    try:
        yield rig
    finally:
        rig.close()
        context.term()


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every socket the driver asks ``readable`` of, in order."""
    seen: list[Any] = []

    def readable(sock: zmq.Socket) -> bool:
        seen.append(sock)
        return sockio.readable(sock)

    monkeypatch.setattr(linkdriver, "sockio", SimpleNamespace(
        send=sockio.send, recv=sockio.recv, readable=readable))
    return seen


HEARTBEAT = p.signal(p.HEARTBEAT)  # the same frames either way


def test_a_pump_after_one_send_looks_only_at_that_links_socket(rig: Rig,
                                                               looks: list[Any]) -> None:
    k = rig.link("f2", 1)

    def send_one() -> list[Any]:
        looks.clear()
        rig.core.actions.append(Send(k, HEARTBEAT))
        rig.driver.pump()
        return list(looks)

    seen = rig.call(send_one)
    assert seen and all(s is rig.driver.sockets[k] for s in seen)
    got = wait_for(lambda: rig.take(1), WAIT_S, "the heartbeat at broker 1")
    assert [f[0] for f in got] == [rig.identities[k]]

    def quiet_pump() -> list[Any]:  # the owner fed the core nothing it must send
        looks.clear()
        rig.driver.pump()
        return list(looks)

    assert rig.call(quiet_pump) == []


def test_a_message_on_any_link_is_read(rig: Rig, looks: list[Any]) -> None:
    for link in range(len(rig.core.links)):
        for _ in range(link + 1):  # several on some: each socket is read until empty
            rig.to_link(link, HEARTBEAT)
    every = list(range(len(rig.core.links)))
    wait_for(lambda: [rig.received(link) for link in every] == [n + 1 for n in every],
             WAIT_S, "every message read on every link")
    assert rig.owner.inputs >= 1


def test_a_readiness_reads_only_its_own_socket(rig: Rig, looks: list[Any]) -> None:
    k = rig.link("f1", 0)
    rig.settle()
    rig.call(looks.clear)
    rig.to_link(k, HEARTBEAT)
    wait_for(lambda: rig.received(k) == 1, WAIT_S, "the message on link k read")
    seen = rig.call(lambda: list(looks))
    assert seen and all(s is rig.driver.sockets[k] for s in seen)


def test_input_that_waits_when_the_driver_sends_is_read(rig: Rig) -> None:
    """A send (or any look at a socket) may take the descriptor's signal of a message
    already there: the driver reads the socket it sent to."""
    k = rig.link("f3", 0)

    def wait_then_send() -> int:  # (all in one callback: no readiness runs meanwhile)
        sock = rig.driver.sockets[k]
        assert sock is not None
        rig.to_link(k, HEARTBEAT)
        if not sock.poll(int(WAIT_S * 1000)):  # (takes the signal, as a send may)
            return -1
        rig.core.actions.append(Send(k, HEARTBEAT))
        rig.driver.pump()
        return rig.received(k)

    assert rig.call(wait_then_send) == 1


def test_a_link_reopened_while_its_first_look_is_queued_is_read_as_itself(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    k = rig.link("f0", 1)
    first = rig.identities[k]

    def reopen_twice() -> None:  # the first new socket's look is still queued when it goes
        for _ in range(2):
            rig.core.actions += [Close(k), Open(k)]
            rig.driver.pump()

    with caplog.at_level(logging.ERROR, logger="mdp_gearman.linkdriver"):
        rig.call(reopen_twice)
        told: set[bytes] = {first}

        def tell_new_sockets() -> bool:  # (the first new socket's READY may go out too)
            rig.take(1)
            for identity in set(rig.readies[k]) - told:
                rig.routers[1].send_multipart([identity, *HEARTBEAT])
                told.add(identity)
            return rig.received(k) >= 1

        wait_for(tell_new_sockets, WAIT_S, "a message on the reopened link read")
        rig.call(lambda: None)  # every look queued before has run
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_broker_that_goes_is_seen_by_each_of_its_links_monitor(rig: Rig) -> None:
    rig.routers[1].close(linger=0)
    gone = {rig.link(f, 1) for f in FUNCTIONS}
    wait_for(lambda: {e.link for e in list(rig.core.events) if isinstance(e, Lost)} == gone,
             WAIT_S, "Lost on every link of broker 1")


def test_messages_a_full_send_queue_refuses_are_a_rate_limited_warning_naming_the_broker(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = f"ipc://{tmp_path}/nobody"  # nobody listens: the DEALER queues to its HWM

    async def flood() -> None:
        context = zmq.Context()
        core = ProxyCore(["f0"], [endpoint], {}, Timing(heartbeat_interval_s=60.0), 1)
        driver = LinkDriver(core, context, Owner())
        try:
            driver.start()
            core.actions += [Send(0, HEARTBEAT) for _ in range(3000)]
            driver.pump()
        finally:
            driver.close(abrupt=True)
            context.term()

    with caplog.at_level(logging.WARNING, logger="mdp_gearman.linkdriver"):
        asyncio.run(flood())
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert dropped and all(endpoint in line for line in dropped)
    assert len(dropped) <= 10  # of some 2,000 refused
