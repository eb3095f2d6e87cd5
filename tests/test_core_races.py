"""Races found by stress (scripts/chaos, loops of the fault tests), each pinned down here
with real cores wired together and an explicit clock: a :class:`ClientCore` talking to
:class:`BrokerCore` s, whose workers are the test (it counts the tasks each is given).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from mdp import protocol as p
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.brokercore import BrokerCore
from mdp.clientcore import ClientCore
from mdp.config import BrokerConfig

SVC = b"echo"
WORKERS = [b"\x00w%d" % n for n in range(3)]


def broker(instance: str, now: float) -> BrokerCore:
    """A broker with three DIPS workers (the test) ready for ``echo``."""
    core = BrokerCore(BrokerConfig(bind=["inproc://races"], unknown_grace_s=0.5), now,
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
    must not be sent to the other broker too (it ran twice: a stress script showed a
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


# --- a frozen worker's task, taken back and answered elsewhere, is not run when it wakes ---

W1, W2, C1 = b"\x00w1", b"\x00w2", b"\x00c1"


def test_a_task_taken_back_from_a_frozen_worker_is_not_run_when_it_wakes() -> None:
    """W1 (a real worker core) is frozen (SIGSTOP) just as its broker sends it a task:
    the task waits in its socket. Silent past --frozen-after, the task is taken back and
    answered by W2. When W1 wakes it reads everything that waited; it must not run the
    task that was answered meanwhile (chaos: a few requests per worker SIGSTOP ran again
    on the woken worker, after their reply)."""
    from mdp.workercore import WorkerCore
    from mdp.workerstate import Timing

    core = BrokerCore(BrokerConfig(bind=["inproc://races"]), 0.0, instance="one")
    worker = WorkerCore(["tcp://b"], SVC, {"host": "h", "pid": 1, "version": "v"}, Timing(),
                        prefetch=1)
    inbox: list[list[bytes]] = []  # what waits in W1's socket while it is frozen

    def run_broker() -> list[tuple[bytes, list[bytes]]]:
        out = []
        for action in core.take_actions():
            assert isinstance(action, Send)
            if action.frames[0] == W1:
                inbox.append(action.frames[1:])
            else:
                out.append((action.frames[0], action.frames[1:]))
        return out

    def run_worker(now: float) -> None:
        for action in worker.take_actions():
            if isinstance(action, Send):
                core.handle(Received(0, [W1, *action.frames]), now)
            elif isinstance(action, Open):
                worker.handle(Opened(0), now)

    worker.start(0.0)
    run_worker(0.0)
    run_worker(0.0)  # READY
    core.handle(Received(0, [W2, *p.ready(SVC, {"host": "h", "pid": 2, "prefetch": 1})]), 0.0)
    run_broker()
    for frames in inbox:  # W1 is welcomed
        worker.handle(Received(0, frames), 0.0)
    inbox.clear()
    run_worker(0.0)
    core.handle(Received(0, [C1, *p.client_submit(SVC, 1, 10_000, [msgpack.packb({"v": 1})])]),
                0.1)
    assert run_broker() == [] and len(inbox) == 1  # W1's task: it is frozen from here
    given: list[p.BrokerTask] = []
    for now in (0.35, 0.6, 0.95):  # probed, no answer: silent
        core.handle(Tick(), now)
        for peer, frames in run_broker():
            message = p.parse_worker_inbound(frames)
            if peer == W2 and isinstance(message, p.BrokerTask):
                given.append(message)
    [again] = given
    body = p.result_body(msgpack.unpackb(again.body[0]))
    core.handle(Received(0, [W2, *p.reply(again.key, [body])]), 1.0)
    [(to, result)] = run_broker()
    assert to == C1 and p.parse_client_inbound(result).rid == 1

    for frames in inbox:  # SIGCONT: W1 reads everything that waited
        worker.handle(Received(0, frames), 2.0)
    task = worker.begin(2.0)
    assert task is None, "the woken worker runs a task answered a second ago elsewhere"


# --- a request that meets a poisoned one of another broker twice is taken for poisoned ---

P_CLIENT, I_CLIENT = b"\x00cp", b"\x00ci"
W3 = b"\x00w3"


class Fleet:
    """Brokers (BrokerCores) and workers (WorkerCores attached to each broker), with what
    a broker sends put at once in the worker's socket (``inbox``) and read only when the
    test says so; what a worker sends reaches its broker at once. A worker whose handler
    gets ``{"die": true}`` dies as it starts it: what it sent in the same step is lost with
    it (on a pyzmq link libzmq's thread may not have written it yet), and every broker
    then finds a send to it failing (``Lost``)."""

    def __init__(self, brokers: list[BrokerCore]) -> None:
        self.brokers = brokers
        self.workers: dict[bytes, Any] = {}  # identity -> WorkerCore
        self.inbox: dict[bytes, list[tuple[int, list[bytes]]]] = {}
        self.answers: dict[bytes, list[Any]] = {P_CLIENT: [], I_CLIENT: []}
        self.ran: list[bytes] = []  # the bodies the workers started, in order

    def post(self, n: int) -> None:
        """Carry out broker ``n``'s sends (the shell takes its actions once)."""
        for action in self.brokers[n].take_actions():
            assert isinstance(action, Send)
            peer, frames = action.frames[0], action.frames[1:]
            if peer in self.inbox:
                self.inbox[peer].append((n, frames))
            elif peer in self.answers:
                self.answers[peer].append(p.parse_client_inbound(frames))

    def attach(self, identity: bytes, now: float) -> None:
        from mdp.workercore import WorkerCore
        from mdp.workerstate import Timing

        core = WorkerCore([f"tcp://{n}" for n in range(len(self.brokers))], SVC,
                          {"host": "h", "pid": len(self.workers) + 1, "version": "v"},
                          Timing(), prefetch=1)
        self.workers[identity] = core
        self.inbox[identity] = []
        core.start(now)
        self.flush(identity, now)
        self.read(identity, now)  # the WELCOMEs

    def flush(self, identity: bytes, now: float) -> None:
        """Deliver what the worker sent."""
        core = self.workers[identity]
        while core.actions:
            for action in core.take_actions():
                if isinstance(action, Open):
                    core.handle(Opened(action.link), now)
                elif isinstance(action, Send):
                    self.brokers[action.link].handle(
                        Received(0, [identity, *action.frames]), now)
                    self.post(action.link)

    def read(self, identity: bytes, now: float, broker: int | None = None) -> None:
        """The worker reads what waits in its socket (only ``broker``'s, if given)."""
        core, inbox = self.workers[identity], self.inbox[identity]
        kept = []
        for n, frames in inbox:
            if broker is None or n == broker:
                core.handle(Received(n, frames), now)
            else:
                kept.append((n, frames))
        inbox[:] = kept
        self.flush(identity, now)

    def run(self, identity: bytes, now: float) -> None:
        """The worker runs what it may start, until it has nothing or dies. What it sends
        meanwhile (a reply, a CHECK) goes out when it stops to wait; a task that kills it
        first takes it along (handed to libzmq's thread, not yet written)."""
        core = self.workers[identity]
        while (task := core.begin(now)) is not None:
            request = msgpack.unpackb(task.body[0])
            self.ran.append(task.body[0])
            if request.get("die"):
                core.take_actions()  # lost with the process
                self.kill(identity, now)
                return
            core.task_done(p.result_body(request), now)
        self.flush(identity, now)

    def kill(self, identity: bytes, now: float) -> None:
        del self.workers[identity], self.inbox[identity]
        for n, core in enumerate(self.brokers):
            self.post(n)  # the shell carries out a batch; a send to the dead one fails:
            core.handle(Lost(0, identity), now)
            self.post(n)

    def tick(self, now: float) -> None:
        for n, core in enumerate(self.brokers):
            core.handle(Tick(), now)
            self.post(n)


@pytest.mark.parametrize(("round1", "round2"), [
    ("unread", "poisoned first"), ("read", "poisoned first"), ("read", "ordinary first"),
    ("unread", "ordinary unread")])
def test_a_request_queued_behind_another_brokers_poisoned_one_twice_is_not_given_up(
        round1: str, round2: str) -> None:
    """Two brokers, two workers (real worker cores) attached to both. Broker A has a
    poisoned request P (it kills the worker that runs it), broker B an ordinary one, I.
    Each broker believes W1 idle and gives it its request at the same moment: W1 runs P,
    I waits behind it (``round1``: unread in its socket, or read), W1 dies. Both requests
    have cost one worker, and both go out again after their pause, to the one idle worker
    left, W2. There each is a suspect task: ASKed, so W2 CHECKs with its broker and waits
    for GO before it starts it, and after answering it. W2 starts P (I waits, read or not)
    and dies: A gives P up (worker_lost), and B, which had no CHECK of I, queues I again,
    free; or W2 starts I first and answers it, then P. Either way I is answered by a
    worker, never worker_lost. (Found by a stress run: 3 brokers, 3 workers, a new
    poisoned request every 0.7 s, 4 of 8,579 ordinary requests answered worker_lost.)"""
    a, b = (BrokerCore(BrokerConfig(bind=["inproc://races"]), 0.0, instance=name)
            for name in ("a", "b"))
    fleet = Fleet([a, b])
    fleet.attach(W1, 0.0)  # W1 first: the least recently used
    fleet.attach(W2, 0.0)
    poisoned, ordinary = msgpack.packb({"die": True}), msgpack.packb({"n": 1})
    a.handle(Received(0, [P_CLIENT, *p.client_submit(SVC, 1, 10_000, [poisoned])]), 0.0)
    b.handle(Received(0, [I_CLIENT, *p.client_submit(SVC, 1, 10_000, [ordinary])]), 0.0)
    fleet.post(0)
    fleet.post(1)
    assert [n for n, _ in fleet.inbox[W1]] == [0, 1] and fleet.inbox[W2] == []
    fleet.read(W1, 0.01, broker=None if round1 == "read" else 0)
    fleet.run(W1, 0.01)  # it runs P, and dies
    assert W1 not in fleet.workers and fleet.ran == [poisoned]

    fleet.tick(0.3)  # after the pause (50-250 ms): both to W2, the one idle worker
    assert [n for n, _ in fleet.inbox[W2]] == [0, 0, 1, 1]  # ASK and TASK from each
    if round2 == "poisoned first":
        fleet.read(W2, 0.31, broker=0)
        fleet.run(W2, 0.31)  # CHECK P with A
        fleet.read(W2, 0.31)  # its GO, and I (W2 holds it, unstarted)
    elif round2 == "ordinary first":
        fleet.read(W2, 0.31, broker=1)
        fleet.run(W2, 0.31)  # CHECK I with B
        fleet.read(W2, 0.31)  # its GO, then P
    else:  # I unread behind P
        fleet.read(W2, 0.31, broker=0)
        fleet.run(W2, 0.31)
        fleet.read(W2, 0.31, broker=0)
    for _ in range(4):  # answers and checks go to and fro until W2 dies
        for step in (fleet.run, fleet.read):
            if W2 in fleet.workers:
                step(W2, 0.32)
    assert W2 not in fleet.workers and fleet.ran[-1] == poisoned
    [p_answer] = fleet.answers[P_CLIENT]
    assert p.unpack(p_answer.body[0])["error"]["code"] == "worker_lost"
    assert all("error" not in p.unpack(answer.body[0]) for answer in fleet.answers[I_CLIENT]), \
        "an ordinary request was taken for a poisoned one"
    if not fleet.answers[I_CLIENT]:  # I waited at W2, unstarted: queued again, free
        fleet.attach(W3, 0.4)
        fleet.read(W3, 0.4)
        for _ in range(3):
            fleet.run(W3, 0.4)
            fleet.read(W3, 0.4)
    [i_answer] = fleet.answers[I_CLIENT]
    assert p.unpack(i_answer.body[0]) == {"result": {"n": 1}}
    assert fleet.ran.count(ordinary) == 1 and fleet.ran.count(poisoned) == 2


def test_a_suspect_request_answered_just_before_a_poisoned_one_kills_its_worker_is_kept() -> None:
    """I has cost a worker already (W1 died holding it), so at W2 it is a suspect task:
    W2 CHECKs it with B and runs it. Broker A meanwhile gives W2 a fresh poisoned request
    P, which W2 runs right after I and which kills it. I's reply, handed to libzmq's
    thread just before P started, could die with the process, and B, which had I's CHECK
    and no reply, would give I up as poisoned; so after answering a suspect task W2 CHECKs
    again and starts nothing before B's GO says the reply is there."""
    a, b = (BrokerCore(BrokerConfig(bind=["inproc://races"]), 0.0, instance=name)
            for name in ("a", "b"))
    fleet = Fleet([a, b])
    fleet.attach(W1, 0.0)
    fleet.attach(W2, 0.0)
    poisoned, ordinary = msgpack.packb({"die": True}), msgpack.packb({"n": 1})
    b.handle(Received(0, [I_CLIENT, *p.client_submit(SVC, 1, 10_000, [ordinary])]), 0.0)
    fleet.post(1)
    fleet.kill(W1, 0.01)  # (killed from outside) holding I, unread: I has cost a worker
    fleet.tick(0.3)  # I, after its pause, to W2: ASK, then its task
    a.handle(Received(0, [P_CLIENT, *p.client_submit(SVC, 1, 10_000, [poisoned])]), 0.3)
    fleet.post(0)  # P: W2 is idle as far as A knows
    assert [n for n, _ in fleet.inbox[W2]] == [1, 1, 0]
    fleet.read(W2, 0.31)
    for _ in range(4):
        for step in (fleet.run, fleet.read):
            if W2 in fleet.workers:
                step(W2, 0.31)
    assert W2 not in fleet.workers and fleet.ran == [ordinary, poisoned]
    [i_answer] = fleet.answers[I_CLIENT]
    assert p.unpack(i_answer.body[0]) == {"result": {"n": 1}}, \
        "an ordinary request answered just before a poisoned one was taken for poisoned"


# --- a client gone: what it has queued is not worked ----------------------------------------


def test_the_requests_queued_for_a_client_that_is_gone_are_not_worked() -> None:
    """A broker frozen (SIGSTOP) for a second or more finds, when it wakes, the requests
    its clients sent meanwhile; the clients gave it up long ago (they closed their
    connections and sent the requests to another broker). The first reply to such a
    client fails to send: whatever that client still has queued here is dropped, not
    worked a second time (chaos, broker SIGSTOPs only, seed 71, 40 s: 382 requests ran
    twice before, 237 after)."""
    core = BrokerCore(BrokerConfig(bind=["inproc://races"]), 0.0, instance="one")
    core.handle(Received(0, [W1, *p.ready(SVC, {"host": "h", "pid": 1, "prefetch": 0})]), 0.0)
    core.take_actions()
    for rid in (1, 2, 3):  # what waited in the socket: one runs, two wait
        core.handle(Received(0, [C1, *p.client_submit(SVC, rid, 10_000,
                                                      [msgpack.packb({"v": rid})])]), 5.0)

    def tasks() -> list[p.BrokerTask]:
        found = []
        for action in core.take_actions():
            assert isinstance(action, Send)
            if action.frames[0] == W1:
                message = p.parse_worker_inbound(action.frames[1:])
                if isinstance(message, p.BrokerTask):
                    found.append(message)
        return found

    [first] = tasks()
    core.handle(Received(0, [W1, *p.reply(first.key, [p.result_body(1)])]), 5.01)
    [second] = tasks()  # (given out with the reply: the shell has not sent that yet)
    core.handle(Lost(0, C1), 5.01)  # the reply's send failed: the client is gone
    core.handle(Received(0, [W1, *p.reply(second.key, [p.result_body(2)])]), 5.02)
    assert tasks() == [], "a request of a client that is gone was worked"
    assert not core.dispatcher.held and not core.dispatcher.services[SVC].queue


def _lone_broker() -> BrokerCore:
    """A broker with one idle DIPS worker, W1, for echo."""
    core = BrokerCore(BrokerConfig(bind=["inproc://races"]), 0.0, instance="one")
    core.handle(Received(0, [W1, *p.ready(SVC, {"host": "h", "pid": 1, "prefetch": 0})]), 0.0)
    core.take_actions()
    return core


def _given(core: BrokerCore) -> list[bytes]:
    """The bodies of the tasks the core sent W1 (the rest of what it sent is dropped)."""
    bodies = []
    for action in core.take_actions():
        assert isinstance(action, Send)
        if action.frames[0] == W1:
            message = p.parse_worker_inbound(action.frames[1:])
            if isinstance(message, p.BrokerTask):
                bodies.append(message.body[0])
    return bodies


def test_a_request_read_after_its_client_is_gone_is_not_worked() -> None:
    """The client's later requests were still in the socket when a send to it failed."""
    core = _lone_broker()
    core.handle(Lost(0, C1), 1.0)  # (a PONG or a reply to it failed)
    core.handle(Received(0, [C1, *p.client_submit(SVC, 7, 10_000, [b"late"])]), 1.0)
    core.handle(Received(0, [C1, *p.client_submit_batch(SVC, [8, 9], 10_000,
                                                         [b"a", b"b"])]), 1.0)
    assert _given(core) == [] and not core.dispatcher.held


def test_a_standard_client_that_chose_its_identity_is_served_after_a_failed_send() -> None:
    """A 7/MDP client may set its own routing id, and libzmq reconnects it under that
    name: a send that failed while it was away must not silence it for good."""
    core = _lone_broker()
    core.handle(Lost(0, C1), 1.0)
    core.handle(Received(0, [C1, *p.client_request(SVC, [b"again"])]), 2.0)
    assert _given(core) == [b"again"]


def test_a_dips_client_back_under_the_same_identity_is_served_after_its_hello() -> None:
    core = _lone_broker()
    core.handle(Lost(0, C1), 1.0)
    core.handle(Received(0, [C1, *p.client_hello()]), 2.0)  # a new connection's HELLO
    core.handle(Received(0, [C1, *p.client_submit(SVC, 1, 10_000, [b"new"])]), 2.0)
    assert _given(core) == [b"new"]
