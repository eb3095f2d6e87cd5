"""The count of a poisoned request travels with it, in the broker core, with an explicit
clock and no sockets (docs/PROTOCOL.md, "Poisoned requests"): a loss is told to the
request's waiting clients that asked (LOSSES), and a request sent with ``losses`` counts
on from there.

The test plays every peer, as in ``tests/test_brokercore.py``, whose helpers it uses.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from test_brokercore import (
    BODY,
    C1,
    C2,
    C3,
    SVC,
    W1,
    W2,
    W3,
    error_of,
    feed,
    lost,
    make,
    result_of,
    submit,
    tick,
    to,
)

from mdp import protocol as p
from mdp.brokercore import BrokerCore

POISON = msgpack.packb({"die": True})
C4 = b"\x00c4"


def checked(core: BrokerCore, worker: bytes, now: float = 0.0) -> list[tuple[bytes, Any]]:
    """A DIPS worker that takes ASK (its READY says ``"checks": true``) registers."""
    return feed(core, worker, p.ready(SVC, {"pid": 1, "prefetch": 0, "checks": True}), now)


def carried(core: BrokerCore, client: bytes, rid: int, losses: int, now: float,
            body: bytes = POISON, ck: bytes | None = None) -> list[tuple[bytes, Any]]:
    """A request its client sends with the workers it cost elsewhere."""
    return feed(core, client, p.client_submit(SVC, rid, 10_000, [body], ck=ck, losses=losses),
                now)


def started(core: BrokerCore, worker: bytes, sent: list[tuple[bytes, Any]],
            now: float) -> bytes:
    """The worker got ASK then its task, CHECKs it and is told GO: it runs it; its key."""
    [ask, task] = [m for m in to(worker, sent) if not isinstance(m, p.BrokerWelcome)]
    assert isinstance(ask, p.BrokerAsk) and isinstance(task, p.BrokerTask)
    assert ask.key == task.key
    assert feed(core, worker, p.check(task.key), now) == [(worker, p.BrokerGo(task.key))]
    return task.key


def test_welcome_says_the_broker_sends_losses_and_counts_on_from_them() -> None:
    core = make()
    [(_, welcome)] = feed(core, C1, p.client_hello(losses=True), 0.0)
    assert isinstance(welcome, p.Welcome) and welcome.meta["losses"] is True


def test_a_loss_is_told_at_once_to_each_waiting_caller_that_asked_and_only_to_them() -> None:
    core = make()
    checked(core, W1)
    checked(core, W2)
    feed(core, C1, p.client_hello(losses=True), 0.0)
    feed(core, C2, p.client_hello(progress=True, batch=True), 0.0)  # an older client
    feed(core, C3, p.client_hello(losses=True), 0.0)
    assert [peer for peer, _ in submit(core, C1, 1, 0.0, body=POISON, ck=b"k")] == [W1]
    assert submit(core, C2, 2, 0.0, body=POISON, ck=b"k") == []  # the same request: shared
    assert submit(core, C3, 3, 0.0, body=POISON, ck=b"k") == []
    sent = lost(core, W1, 0.3)
    assert sent == [(C1, p.RequestLosses(SVC, 1, 1)), (C3, p.RequestLosses(SVC, 3, 1))]
    key = started(core, W2, tick(core, 0.6), 0.61)  # after its pause, a suspect: ASK
    assert key
    sent = lost(core, W2, 0.7)  # the second loss: worker_lost, and no LOSSES
    assert {peer for peer, _ in sent} == {C1, C2, C3}
    assert not any(isinstance(m, p.RequestLosses) for _, m in sent)
    assert all(error_of(to(c, sent), rid) == "worker_lost" for c, rid in ((C1, 1), (C2, 2)))


def test_a_standard_clients_request_is_never_told_its_losses() -> None:
    core = make()
    checked(core, W1)
    [(peer, _)] = feed(core, C1, p.client_request(SVC, [POISON]), 0.0)
    assert peer == W1
    assert lost(core, W1, 0.3) == []


def test_a_request_carrying_one_loss_goes_out_checked_and_is_given_up_after_one_more() -> None:
    core = make()  # --max-worker-losses 2
    checked(core, W1)
    feed(core, C1, p.client_hello(losses=True), 0.0)
    key = started(core, W1, carried(core, C1, 5, 1, 1.0), 1.1)  # not the shortcut: ASK first
    request = next(r for w in core.dispatcher.workers.values() for r in w.tasks.values())
    assert request.losses == 1 and key == request.key
    sent = lost(core, W1, 1.2)
    assert [peer for peer, _ in sent] == [C1] and error_of(to(C1, sent), 5) == "worker_lost"
    assert "2 workers were lost" in result_of(to(C1, sent))[5]["error"]["message"]
    assert core.status(1.3)["counters"]["poisoned"] == 1  # it was given up here
    # a resend of it (same client, same id) is refused at once...
    assert error_of([m for _, m in submit(core, C1, 5, 2.0)], 5) == "worker_lost"
    # ...but the same body from another client is not: its count began with C1's word
    checked(core, W2, 2.0)
    [(peer, task)] = submit(core, C2, 6, 2.1, body=POISON)
    assert peer == W2 and isinstance(task, p.BrokerTask)


def test_a_request_that_has_cost_the_limit_already_is_answered_worker_lost_at_once() -> None:
    core = make()
    checked(core, W1)
    for rid, losses in ((1, 2), (2, 200)):
        sent = carried(core, C1, rid, losses, 1.0)
        assert [peer for peer, _ in sent] == [C1]
        message = result_of(to(C1, sent))[rid]["error"]["message"]
        assert f"{losses} workers were lost" in message and "as its client reports" in message
    status = core.status(1.0)
    assert status["counters"]["poisoned"] == 0  # nothing was given up here
    [(peer, _)] = submit(core, C2, 3, 1.1, body=POISON)  # nor refused to anyone else
    assert peer == W1


def test_with_no_limit_a_carried_count_only_makes_the_request_a_suspect() -> None:
    core = make(max_worker_losses=0)
    checked(core, W1)
    started(core, W1, carried(core, C1, 1, 200, 1.0), 1.1)
    assert lost(core, W1, 1.2) == []  # never given up; it waits for another worker


def test_a_broker_with_no_limit_tells_a_count_past_the_most_the_wire_says_as_that() -> None:
    core = make(max_worker_losses=0)
    checked(core, W1)
    feed(core, C1, p.client_hello(losses=True), 0.0)
    started(core, W1, carried(core, C1, 1, p.MAX_LOSSES, 1.0), 1.1)
    sent = lost(core, W1, 1.2)  # its 256th: told as 255, which any client takes
    assert sent == [(C1, p.RequestLosses(SVC, 1, p.MAX_LOSSES))]


def test_a_claimed_count_never_shortens_another_callers_budget() -> None:
    # C2 says its request (the same as C1's: service, key, body) cost a worker elsewhere;
    # C1's honest request is not shared with it, so one loss only requeues C1's, and C2's
    # is given up after one more, its claim and a real loss making the limit
    core = make()  # --max-worker-losses 2; no worker yet: within the start-up grace
    feed(core, C1, p.client_hello(losses=True), 0.0)
    assert submit(core, C1, 1, 0.0, body=POISON, ck=b"k") == []
    assert carried(core, C2, 2, 1, 0.0, ck=b"k") == []
    [task] = [m for m in to(W1, checked(core, W1, 0.1)) if not isinstance(m, p.BrokerWelcome)]
    assert isinstance(task, p.BrokerTask)  # C1's alone, unasked: an ordinary request
    sent = lost(core, W1, 0.3)
    assert sent == [(C1, p.RequestLosses(SVC, 1, 1))]  # one loss: requeued, not given up
    sent = checked(core, W2, 0.4)  # C2's, a suspect: ASK (C1's waits out its pause)
    started(core, W2, sent, 0.41)
    sent = lost(core, W2, 0.5)
    assert [peer for peer, _ in sent] == [C2] and error_of(to(C2, sent), 2) == "worker_lost"
    assert core.status(0.5)["counters"]["poisoned"] == 1  # C2's, remembered by its id only
    sent = checked(core, W3, 0.6) + tick(core, 0.6)  # C1's, after its pause: a suspect now
    key = started(core, W3, sent, 0.61)
    sent = feed(core, W3, p.reply(key, [b"r"]), 0.7)  # and it is answered at last
    assert sent == [(C1, p.Result(SVC, [b"r"], 1))]


def test_callers_claiming_the_same_count_share_and_ordinary_ones_share_apart() -> None:
    # the callers of a shared request that all resend it after their broker's loss carry
    # the count it told each: they still share it here, apart from the ordinary callers
    core = make()
    for client, rid in ((C2, 2), (C3, 3)):
        assert carried(core, client, rid, 1, 0.0, ck=b"k") == []
    for client, rid in ((C1, 1), (C4, 4)):
        assert submit(core, client, rid, 0.0, body=POISON, ck=b"k") == []
    shared = core.dispatcher.shared
    assert sorted(len(r.callers or []) for r in shared.values()) == [2, 2]
    assert core.dispatcher.counters.coalesced == 2
    started(core, W1, checked(core, W1, 0.1), 0.2)  # the claimed one first: ASK
    sent = lost(core, W1, 0.3)
    assert {peer for peer, _ in sent} == {C2, C3}
    assert error_of(to(C2, sent), 2) == error_of(to(C3, sent), 3) == "worker_lost"


def test_a_claimed_request_at_the_head_holds_the_queue_only_until_a_worker_is_idle() -> None:
    # a suspect is never held behind another task: queued at the head, the ordinary request
    # behind it is not held at the busy prefetching worker either, but only until that
    # worker has finished what it holds; then both go out, the ordinary one held behind it
    core = make()
    feed(core, W1, p.ready(SVC, {"pid": 1, "prefetch": 1, "checks": True}), 0.0)
    [(_, first)] = submit(core, C1, 1, 0.0)
    assert carried(core, C2, 2, 1, 0.1) == []  # the worker is busy: a suspect waits
    assert submit(core, C3, 3, 0.1) == []  # and so does the request behind it
    sent = feed(core, W1, p.reply(first.key, [b"r"]), 0.2)
    assert (C1, p.Result(SVC, [b"r"], 1)) in sent
    ask, suspect, held = to(W1, sent)
    assert isinstance(ask, p.BrokerAsk) and ask.key == suspect.key
    assert isinstance(held, p.BrokerTask) and held.key != suspect.key


@pytest.mark.parametrize("bad", [True, -1, p.MAX_LOSSES + 1, 2**64 - 1, 1.0, "1", None, [1]])
def test_a_malformed_count_is_refused_naming_it_and_the_broker_goes_on(bad: Any) -> None:
    core = make()
    checked(core, W1)
    meta: dict[str, Any] = {"id": 7, "ttl_ms": 1000, "losses": bad}
    sent = feed(core, C1, [b"", p.DIPS_CLIENT, p.SUBMIT, SVC, p.pack(meta), BODY], 0.0)
    assert error_of(to(C1, sent), 7) == "bad_request"
    assert "'losses'" in result_of(to(C1, sent))[7]["error"]["message"]
    [(peer, _)] = submit(core, C1, 8, 0.1)  # the next request is served as ever
    assert peer == W1


def test_a_hello_with_a_malformed_first_count_is_dropped_and_its_request_served_plain() -> None:
    core = make()
    checked(core, W1)
    hello = {"dips": 2, "first": {"id": 3, "ttl_ms": 1000, "losses": -2}}
    assert feed(core, C1, [b"", p.DIPS_CLIENT, p.HELLO, p.pack(hello)], 0.0) == []
    [(peer, task)] = feed(core, C1, p.client_request(SVC, [BODY]), 0.0)
    assert peer == W1 and isinstance(task, p.BrokerTask)
    sent = feed(core, W1, p.reply(task.key, [b"r"]), 0.1)
    assert sent == [(C1, p.Result(SVC, [b"r"], None))]  # a standard reply


def test_a_hellos_first_carries_the_count_of_the_request_behind_it() -> None:
    core = make()
    checked(core, W1)
    feed(core, C1, p.client_hello(p.First(3, 1000, 0, None, 1), losses=True), 0.0)
    sent = feed(core, C1, p.client_request(SVC, [POISON]), 0.0)
    started(core, W1, sent, 0.1)
    assert error_of(to(C1, lost(core, W1, 0.2)), 3) == "worker_lost"


def test_a_batched_submit_cannot_carry_a_count() -> None:
    core = make()
    checked(core, W1)
    meta = {"ids": [1, 2], "ttl_ms": 1000, "losses": 1}
    sent = feed(core, C1, [b"", p.DIPS_CLIENT, p.SUBMIT, SVC, p.pack(meta), BODY, BODY], 0.0)
    assert {rid: r["error"]["code"] for rid, r in result_of(to(C1, sent)).items()} \
        == {1: "bad_request", 2: "bad_request"}
