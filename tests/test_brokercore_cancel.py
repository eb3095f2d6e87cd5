"""CANCEL in the broker core, with an explicit clock and no sockets: a client that failed
over from this broker (it stopped answering, frozen say) gives up the requests it had sent
here, and none of them that no worker has yet is run (docs/PROTOCOL.md, "Failing over").

The test plays every peer, as in ``tests/test_brokercore.py``, whose helpers it uses.
"""

from __future__ import annotations

from typing import Any

from test_brokercore import (
    BODY,
    C1,
    C2,
    SVC,
    W1,
    W2,
    feed,
    lost,
    make,
    out,
    ready,
    submit,
    tasks_in,
    tick,
    to,
)

from mdp import protocol as p
from mdp.brokercore import BrokerCore


def backlog(core: BrokerCore, messages: list[tuple[bytes, list[bytes]]],
            now: float) -> list[tuple[bytes, Any]]:
    """Messages that waited together in the socket (a frozen broker wakes): the shell
    reads them all, shows each to the core, then hands them in, in order, and ends the
    pass; what the core sent."""
    for peer, frames in messages:
        core.ahead([peer, *frames])
    sent: list[tuple[bytes, Any]] = []
    for i, (peer, frames) in enumerate(messages):
        core.receive([peer, *frames], "", now, more=i > 0)
        sent += out(core)
    return sent + tick(core, now)


def test_a_clients_welcome_offers_cancel_and_a_workers_does_not() -> None:
    core = make()
    [(_, welcome)] = feed(core, C1, p.client_hello(), 0.0)
    assert isinstance(welcome, p.Welcome) and welcome.meta["cancel"] is True
    [(_, worker_welcome)] = ready(core, W1)
    assert isinstance(worker_welcome, p.BrokerWelcome) and "cancel" not in worker_welcome.meta


def test_requests_read_with_the_cancel_behind_them_never_reach_a_worker() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=4)
    ready(core, W2)
    # what waited in a frozen broker's socket: C1's requests (a SUBMIT of several, then a
    # lone one), C2's, and C1's CANCEL, sent when C1 failed over
    sent = backlog(core, [
        (C1, p.client_submit_batch(SVC, [1, 2, 3], 10_000, [b"a", b"b", b"c"])),
        (C2, p.client_submit(SVC, 7, 10_000, [b"x"])),
        (C1, p.client_submit(SVC, 4, 10_000, [b"d"])),
        (C1, p.client_ping([1, 2, 3, 4])),
        (C1, p.client_cancel([1, 2, 3, 4])),
    ], 1.0)
    tasks = tasks_in([m for _, m in sent])
    assert [t.body for t in tasks] == [[b"x"]]  # only C2's
    assert to(C1, sent) == [p.Pong([1, 2, 3, 4], "one")]  # none held, none answered
    assert list(core.dispatcher.held) == [(C2, 7)] and core.dispatcher.queued == 0
    # the CANCEL, handed in, is no longer in force: a request read after it runs (even
    # under an id it named)
    [(_, task)] = submit(core, C1, 2, 1.1)
    assert isinstance(task, p.BrokerTask) and task.body == [BODY]


def test_a_cancel_read_later_drops_the_queued_recalls_the_held_and_drops_the_reply() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=4)
    sent = feed(core, C1, p.client_submit_batch(SVC, [1, 2, 3], 10_000, [b"a", b"b", b"c"]),
                0.0)
    sent += tick(core, 0.0)
    running, held = tasks_in(to(W1, sent))  # W1 runs 1 and holds 2; 3 is queued
    assert held.hold and core.dispatcher.queued == 1
    sent = feed(core, C1, p.client_cancel([1, 2, 3, 99]), 0.5)  # (99: never held, ignored)
    # both asked back: a worker hands back one it has not started (it may have been busy
    # for another broker when it came), and ignores the RECALL of the one it runs
    assert sorted(sent) == sorted([(W1, p.BrokerRecall(running.key)),
                                   (W1, p.BrokerRecall(held.key))])
    assert core.dispatcher.queued == 0 and not core.dispatcher.held
    assert feed(core, W1, p.bounce(held.key), 0.6) == []  # handed back: not queued again
    # the running one's reply goes nowhere; W1 is idle again and serves the next request
    assert feed(core, W1, p.reply(running.key, [b"r"]), 0.7) == []
    [(peer, task)] = submit(core, C2, 7, 0.8)
    assert peer == W1 and isinstance(task, p.BrokerTask)
    assert feed(core, W1, p.reply(task.key, [b"r"]), 0.9) == [(C2, p.Result(SVC, [b"r"], 7))]
    assert core.dispatcher.counters.requeued == 0


def test_a_cancel_detaches_its_caller_from_a_shared_request_that_others_wait_for() -> None:
    core = make()
    ready(core, W1)
    [(_, task)] = submit(core, C1, 1, 0.0, ck=b"key")
    assert submit(core, C2, 7, 0.1, ck=b"key") == []  # attached to C1's
    assert feed(core, C1, p.client_cancel([1]), 0.2) == []  # C2 still waits: no recall
    sent = feed(core, W1, p.reply(task.key, [b"shared"]), 0.3)  # type: ignore[union-attr]
    assert sent == [(C2, p.Result(SVC, [b"shared"], 7))]
    assert not core.dispatcher.held and core.dispatcher.attached == 0


def test_a_shared_request_every_caller_gave_up_is_recalled() -> None:
    core = make()
    ready(core, W1, prefetch=2)
    running = tasks_in([m for _, m in submit(core, C2, 9, 0.0)])[0]  # W1 busy with C2's
    assert submit(core, C1, 1, 0.0, ck=b"key") != []  # held at W1, behind C2's
    assert submit(core, C2, 8, 0.1, ck=b"key") == []  # attached
    held_key = next(k for k in core.dispatcher.workers[W1].tasks if k != running.key)
    assert feed(core, C1, p.client_cancel([1]), 0.2) == []
    assert feed(core, C2, p.client_cancel([8]), 0.2) == [(W1, p.BrokerRecall(held_key))]


def test_a_request_waiting_to_go_out_again_after_a_lost_worker_is_cancelled_too() -> None:
    core = make()
    ready(core, W1)
    submit(core, C1, 1, 0.0)
    ready(core, W2, 0.1)
    lost(core, W1, 0.5)  # its request waits a short random pause before it goes out again
    assert feed(core, C1, p.client_cancel([1]), 0.55) == []
    assert tasks_in(to(W2, tick(core, 1.0))) == []  # nothing for W2: it was given up
    assert not core.dispatcher.held


def test_a_standard_workers_task_cannot_be_recalled_and_its_reply_is_dropped() -> None:
    core = make()
    ready(core, W1, dips=False)
    [(_, task)] = submit(core, C1, 1, 0.0)
    assert feed(core, C1, p.client_cancel([1]), 0.1) == []  # no RECALL for a standard one
    assert feed(core, W1, p.reply(task.key, [b"r"]), 0.2) == []  # type: ignore[union-attr]
    [(peer, _)] = submit(core, C2, 7, 0.3)
    assert peer == W1  # idle again


def test_a_malformed_cancel_is_dropped_and_the_client_kept() -> None:
    core = make()
    ready(core, W1)
    bad = [b"", p.DIPS_CLIENT, p.CANCEL, p.pack_meta({"ids": ["one"]})]
    core.ahead([C1, *bad])  # read ahead: left for receive, which says what was wrong
    assert feed(core, C1, bad, 0.0) == []
    assert core.dispatcher.counters.dropped == 1
    assert feed(core, C1, [b"", p.DIPS_CLIENT, p.CANCEL], 0.0) == []  # no meta at all
    [(_, task)] = submit(core, C1, 1, 0.1)
    assert isinstance(task, p.BrokerTask) and task.body == [BODY]


def test_under_curve_a_worker_key_cannot_cancel_a_clients_requests() -> None:
    roles = {"ck": "client", "wk": "worker"}
    core = make(role_of=lambda user: roles.get(user, ""))
    feed(core, W1, p.ready(SVC, {"pid": 1}), 0.0, user="wk")
    feed(core, C1, p.client_hello(), 0.0, user="ck")
    sent = feed(core, C1, p.client_submit(SVC, 1, 10_000, [BODY]), 0.0, user="ck")
    [task] = tasks_in(to(W1, sent))
    assert feed(core, C1, p.client_cancel([1]), 0.1, user="wk") == []  # refused
    sent = feed(core, W1, p.reply(task.key, [b"r"]), 0.2, user="wk")
    assert sent == [(C1, p.Result(SVC, [b"r"], 1))]


def test_a_core_held_after_a_stop_queues_everything_and_dispatches_on_release() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    core.hold()  # the shell found it had been stopped: libzmq hands it the backlog in pieces
    assert submit(core, C1, 1, 1.0) == []  # came alone, an idle worker: queued all the same
    assert feed(core, C2, p.client_submit(SVC, 7, 10_000, [b"x"]), 1.0) == []
    assert feed(core, C1, p.client_cancel([1]), 1.01) == []  # its CANCEL, in a later piece
    assert tasks_in([m for _, m in tick(core, 1.02)]) == []  # the timers dispatch nothing
    core.release(1.05)
    [task] = tasks_in([m for _, m in out(core)])
    assert task.body == [b"x"]  # only C2's
    [(peer, reply)] = feed(core, W1 if core.dispatcher.workers[W1].tasks else W2,
                           p.reply(task.key, [b"r"]), 1.1)
    assert (peer, reply) == (C2, p.Result(SVC, [b"r"], 7))
    [(_, again)] = submit(core, C1, 2, 1.2)  # released: a lone request goes at once again
    assert isinstance(again, p.BrokerTask)


def test_a_worker_ready_while_held_waits_for_the_release_too() -> None:
    core = make()
    core.hold()
    assert submit(core, C1, 1, 0.0) == []
    assert [type(m) for _, m in ready(core, W1, 0.1)] == [p.BrokerWelcome]  # no task yet
    core.release(0.2)
    assert [peer for peer, m in out(core) if isinstance(m, p.BrokerTask)] == [W1]
