"""Races found by stress (scripts/chaos, loops of the fault tests), each pinned down here
with real cores wired together and an explicit clock: a :class:`ClientCore` talking to
:class:`BrokerCore` s, whose workers are the test (it counts the tasks each is given).
"""

from __future__ import annotations

from typing import Any

import msgpack

from mdp import protocol as p
from mdp.actions import Close, Open, Opened, Received, Send, Tick
from mdp.brokercore import BrokerCore
from mdp.clientcore import ClientCore
from mdp.config import BrokerConfig

SVC = b"echo"
WORKERS = [b"\x00w%d" % n for n in range(3)]


def broker(instance: str, now: float) -> BrokerCore:
    """A broker with three DIPS workers (the test) ready for ``echo``."""
    core = BrokerCore(BrokerConfig(bind=["inproc://hunt"], unknown_grace_s=0.5), now,
                      instance=instance)
    for n, worker in enumerate(WORKERS):
        core.handle(Received(0, [worker, *p.ready(SVC, {"pid": n, "prefetch": 0})]), now)
    core.take_actions()
    return core


class Wire:
    """A client core and its brokers' cores, with what each sends delivered at once. Each
    connection of the client is a peer of its own at its broker (``identity``); a
    connection libzmq made again behind the core's back (a DEALER reconnects by itself)
    is a new peer that the core knows nothing about."""

    def __init__(self, client: ClientCore, brokers: list[BrokerCore]) -> None:
        self.client = client
        self.brokers = brokers
        self.identity = [b"\x00c%d.0" % i for i in range(len(brokers))]
        self.tasks: list[tuple[int, bytes, p.BrokerTask]] = []  # (broker, worker, task)
        self.heard = False  # the client got messages since it last ran its timers

    def pump(self, now: float) -> None:
        """Deliver everything sent, until nobody has anything more to say (the client, as
        its shells do, runs its timers after what arrived)."""
        moving = True
        while moving:
            moving = False
            if self.heard:
                self.heard = False
                self.client.handle(Tick(), now)
            for action in self.client.take_actions():
                moving = True
                match action:
                    case Open(i):
                        self.client.handle(Opened(i), now)
                    case Send(i, frames):
                        self.brokers[i].handle(Received(0, [self.identity[i], *frames]), now)
                    case Close():
                        pass
            for i, core in enumerate(self.brokers):
                for action in core.take_actions():
                    moving = True
                    assert isinstance(action, Send)
                    peer, frames = action.frames[0], action.frames[1:]
                    if peer in WORKERS:
                        message = p.parse_worker_inbound(frames)
                        if isinstance(message, p.BrokerTask):
                            self.tasks.append((i, peer, message))
                        elif message == p.BrokerSignal(p.HEARTBEAT):  # a probe: alive
                            core.handle(Received(0, [peer, *p.signal(p.HEARTBEAT)]), now)
                    elif peer == self.identity[i]:
                        self.client.handle(Received(i, frames), now)
                        self.heard = True

    def tick(self, now: float) -> None:
        self.client.handle(Tick(), now)
        for core in self.brokers:
            core.handle(Tick(), now)
        self.pump(now)

    def answer(self, now: float) -> None:
        """The workers answer every task they were given."""
        tasks, self.tasks = self.tasks, []
        for i, worker, task in tasks:
            body = p.result_body(msgpack.unpackb(task.body[0]))  # an echo
            self.brokers[i].handle(Received(0, [worker, *p.reply(task.key, [body])]), now)
        self.pump(now)


def call(wire: Wire, value: Any, now: float) -> Any:
    return wire.client.submit(SVC, [msgpack.packb({"v": value})], now, timeout=10.0)


def test_a_request_sent_to_a_restarted_broker_that_holds_it_is_not_sent_elsewhere() -> None:
    """Broker 0 is killed and started again while the client has nothing outstanding on
    it. The client's DEALER connects again by itself (the core does not know: no WELCOME,
    no new instance), and its next request goes to the new broker process, which holds it
    and gives it to its worker. The request runs longer than a ping interval: the ping
    finds the broker's instance changed, and its PONG says it lost nothing. The request
    must not be sent to the other broker too (it ran twice: scripts in /tmp/hunt showed a
    sync client's first long request after any broker restart run on two workers)."""
    wire = Wire(ClientCore(["tcp://b0:1", "tcp://b1:1"]), [broker("a", 0.0), broker("b", 0.0)])
    warm = [call(wire, n, 0.0) for n in range(2)]
    wire.pump(0.0)
    wire.answer(0.01)
    wire.tick(0.02)
    assert all(c.done for c in warm) and wire.tasks == []

    wire.brokers[0] = broker("a2", 1.0)  # killed and started again on its port
    wire.identity[0] = b"\x00c0.1"  # the DEALER's new connection to it
    long = call(wire, "long", 2.0)
    wire.pump(2.0)
    assert [i for i, _, _ in wire.tasks] == [0]  # held and run by the new broker 0
    for now in (2.3, 2.6, 2.9):  # pinged while the worker runs it
        wire.tick(now)
    assert [i for i, _, _ in wire.tasks] == [0], "the request went to a second broker too"
    wire.answer(3.0)
    assert long.done and long.outcome == {"v": "long"}


def test_a_restarted_broker_gets_again_what_it_lost_and_a_hello() -> None:
    """The PONG of a new broker process behind the same connection: the requests it says
    it lost are sent again, those it holds are not, and it gets a HELLO (it knows nothing
    of what this client takes: batches, progress)."""
    wire = Wire(ClientCore(["tcp://b0:1"]), [broker("a", 0.0)])
    calls = [call(wire, n, 0.0) for n in range(3)]
    wire.pump(0.0)
    assert len(wire.tasks) == 3
    wire.tasks.clear()
    wire.brokers[0] = broker("a2", 1.0)
    wire.identity[0] = b"\x00c0.1"
    wire.brokers[0].handle(Received(0, [wire.identity[0], *p.client_submit(
        SVC, calls[2].rid, 9000, [msgpack.packb({"v": 2})])]), 1.0)  # came after the restart
    wire.pump(1.0)
    assert [t.body for _, _, t in wire.tasks] == [[msgpack.packb({"v": 2})]]
    wire.tick(1.3)  # the ping: the new process holds the last request only
    assert sorted(msgpack.unpackb(t.body[0])["v"] for _, _, t in wire.tasks) == [0, 1, 2]
    assert wire.brokers[0]._hellos.get(wire.identity[0])  # batches and progress again
    wire.answer(1.4)
    assert [c.outcome for c in calls] == [{"v": 0}, {"v": 1}, {"v": 2}]
