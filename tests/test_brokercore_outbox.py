"""The broker's Outbox: its shortcuts send what its general path sends, in the same order.

A flush sweeps every gathered peer at once, and the one task gathered for a worker goes
as a TASK without building a batch: both are checked here against what the general path
(a batch of two, a peer emitted on its own before a message to it) sends.
"""

from __future__ import annotations

from test_brokercore import C1, W1, W2, feed, feed_more, make, ready, submit, tasks_in, tick, to
from test_brokercore import SVC as CORE_SVC

from mdp import protocol as p
from mdp.actions import Send
from mdp.outbox import Outbox
from mdp.records import Request, Service, Worker

SVC = b"echo"


def worker(identity: bytes) -> Worker:
    return Worker(identity, Service(SVC, 0.0), True, {}, 0.0, 10.0, batch=True)


def given(w: Worker, key: bytes, body: bytes, deadline: float | None = None,
          ck: bytes | None = None) -> Request:
    request = Request(b"c", SVC, [body], 0.0, 1, deadline, ck=ck)
    request.key = key
    w.tasks[key] = request
    return request


def frames(actions: list[Send]) -> list[list[bytes]]:
    return [action.frames for action in actions]


def test_one_gathered_task_goes_as_the_task_the_general_path_makes() -> None:
    w = worker(b"W")
    outbox = Outbox({w.identity: w})
    request = given(w, b"k1", b"body", deadline=2.5, ck=b"same")
    outbox.task(w, request, True, 1.0, gather=True)
    assert outbox.take() == []  # gathered
    outbox.flush(1.25)
    [sent] = frames(outbox.take())
    assert sent == p.to_worker(b"W", b"k1", [b"body"], True, 1250, True, b"same")
    assert p.parse_worker_inbound(sent[1:]) == p.BrokerTask(b"k1", [b"body"], 1250, True, True,
                                                           b"same")
    assert w.tasked_at == 1.25 and request.sent_mark == 1  # (the shell took once before)


def test_a_gathered_task_taken_back_before_the_flush_is_not_sent() -> None:
    w = worker(b"W")
    outbox = Outbox({w.identity: w})
    request = given(w, b"k1", b"body")
    outbox.task(w, request, False, 1.0, gather=True)
    del w.tasks[b"k1"]  # (given back to the queue meanwhile)
    outbox.flush(1.5)
    assert outbox.take() == [] and w.tasked_at == 1.5  # as the general path leaves it


def test_two_gathered_tasks_still_go_as_one_tasks() -> None:
    w = worker(b"W")
    outbox = Outbox({w.identity: w})
    first, second = given(w, b"k1", b"a"), given(w, b"k2", b"b")
    outbox.task(w, first, False, 1.0, gather=True)
    outbox.task(w, second, True, 1.0, gather=True)
    outbox.flush(1.0)
    [sent] = frames(outbox.take())
    assert sent == p.to_worker_batch(b"W", [b"k1", b"k2"], [b"a", b"b"], [None, None],
                                     [False, True])


def test_a_flush_sends_each_peer_in_the_order_gathered_as_a_send_to_it_would() -> None:
    """The sweep gives what emitting each peer on its own (a message sent to it) gives."""
    def run(sweep: bool) -> list[list[bytes]]:
        w1, w2 = worker(b"W1"), worker(b"W2")
        outbox = Outbox({w1.identity: w1, w2.identity: w2})
        outbox.task(w1, given(w1, b"k1", b"a"), False, 1.0, gather=True)
        outbox.result(b"C", SVC, 7, [b"r7"], 1.0, gather=True)
        outbox.task(w2, given(w2, b"k2", b"b"), False, 1.0, gather=True)
        outbox.result(b"C", SVC, 8, [b"r8"], 1.0, gather=True)
        outbox.task(w2, given(w2, b"k3", b"c"), True, 1.0, gather=True)
        if sweep:
            outbox.flush(1.0)
        else:  # one peer at a time, as a message to each would emit it, in that order
            for peer in (b"W1", b"C", b"W2"):
                outbox.send([peer, b"after"], 1.0)
        sent = frames(outbox.take())
        return [f for f in sent if f[1:] != [b"after"]]

    swept = run(sweep=True)
    assert swept == run(sweep=False)
    assert [f[0] for f in swept] == [b"W1", b"C", b"W2"]
    assert swept[1] == p.to_client_batch(b"C", SVC, [7, 8], [b"r7", b"r8"])


def test_a_request_gathered_twice_for_a_worker_goes_to_it_once() -> None:
    """A worker (buggy or hostile) that bounces the key of a task gathered for it but not yet
    sent, then says FREE, has the same request gathered for it again in the same pass: the
    flush must send it once, or the worker runs it twice."""
    core = make()
    ready(core, W1, batch=True, prefetch=8)
    ready(core, W2, dips=False)
    sent = feed(core, C1, p.client_submit_batch(CORE_SVC, [1, 2, 3], 10_000,
                                                [b"a", b"b", b"c"]), 0.0)
    [w2_task] = tasks_in(to(W2, sent))
    [first, held] = tasks_in(to(W1, tick(core, 0.0)))
    feed(core, W2, p.reply(w2_task.key, [b"r"]), 0.1)
    submit(core, C1, 4, 0.2)
    feed_more(core, W1, p.bounce(held.key), 0.3)  # handed back: given to it again, gathered
    worker = core.dispatcher.workers[W1]
    [again] = [k for k in worker.tasks if k != first.key]
    feed_more(core, W1, p.bounce(again), 0.3)  # a key it was never sent (keys are guessable)
    feed_more(core, W1, p.signal(p.FREE), 0.3)
    keys = [t.key for t in tasks_in(to(W1, tick(core, 0.3)))]
    assert keys and len(keys) == len(set(keys)), keys
