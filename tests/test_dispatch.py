"""Unit tests of the broker's bookkeeping: no sockets, time passed in."""

from __future__ import annotations

import pytest

from mdp.dispatch import Dispatcher, Request, Service, Worker, WorkerState
from mdp.errors import Overloaded, UnknownService


def make(max_queue: int = 100, grace: float = 1.0) -> Dispatcher:
    return Dispatcher(max_queue=max_queue, max_services=10, unknown_grace_s=grace,
                      worker_expiry_s=3.0)


def req(n: int, now: float = 0.0, service: bytes = b"echo", deadline: float | None = None,
        rid: int | None = None) -> Request:
    return Request(b"client%d" % n, service, [b"%d" % n], now, rid, deadline)


def holding_first_of_two() -> tuple[Dispatcher, Worker, Service]:
    """One worker that holds request 1 while request 2 waits."""
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    d.enqueue(req(2), 0.0)
    service = d.services[b"echo"]
    list(d.assignments(service, 0.0))
    return d, w, service


def test_least_recently_used_idle_worker_gets_the_request() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0)
    b = d.add_worker(b"B", b"echo", True, {}, 0.1)
    d.enqueue(req(1), 1.0)
    [(worker, request)] = list(d.assignments(d.services[b"echo"], 1.0))
    assert worker is a and request.body == [b"1"]
    assert d.complete(a, b"client1") is request  # A is now the most recently used
    d.enqueue(req(2), 2.0)
    [(worker, _)] = list(d.assignments(d.services[b"echo"], 2.0))
    assert worker is b


def test_requests_queue_in_order_while_no_worker_is_idle() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    for n in range(3):
        d.enqueue(req(n), 0.0)
    service = d.services[b"echo"]
    assert [r.body for _, r in d.assignments(service, 0.0)] == [[b"0"]]
    assert len(service.queue) == 2
    d.complete(w, b"client0")
    assert [r.body for _, r in d.assignments(service, 0.0)] == [[b"1"]]


def test_a_dead_workers_request_goes_back_to_the_head_of_the_queue() -> None:
    d, w, service = holding_first_of_two()
    d.remove_worker(w, 1.0)
    assert [r.body for r in service.queue] == [[b"1"], [b"2"]]
    assert d.counters.requeued == 1


def test_queue_is_bounded() -> None:
    d = make(max_queue=2)
    assert d.enqueue(req(1), 0.0) is None
    assert d.enqueue(req(2), 0.0) is None
    assert isinstance(d.enqueue(req(3), 0.0), Overloaded)


def test_expired_requests_are_never_dispatched() -> None:
    d = make()
    d.enqueue(req(1, deadline=1.0, rid=1), 0.0)
    d.enqueue(req(2, deadline=10.0, rid=2), 0.0)
    d.add_worker(b"W", b"echo", True, {}, 0.0)
    pairs = list(d.assignments(d.services[b"echo"], 5.0))
    assert [r.body for _, r in pairs] == [[b"2"]]
    assert d.counters.expired == 1
    assert not d.holds(b"client1", 1)


def test_drop_expired_sweeps_the_queue() -> None:
    d = make()
    d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1, deadline=1.0, rid=1), 0.0)
    d.enqueue(req(2, deadline=9.0, rid=2), 0.0)
    assert d.drop_expired(2.0) == 1
    assert [r.body for r in d.services[b"echo"].queue] == [[b"2"]]


def test_unknown_service_after_grace() -> None:
    d = make(grace=1.0)
    d.enqueue(req(1, service=b"nobody"), 0.0)
    assert d.unknown_requests(0.5) == []
    [request] = d.unknown_requests(1.0)
    assert request.service == b"nobody"
    assert b"nobody" not in d.services  # forgotten once empty


def test_grace_counts_from_when_the_last_worker_left() -> None:
    d = make(grace=1.0)
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.remove_worker(w, 5.0)
    d.enqueue(req(1), 4.5)
    assert d.unknown_requests(5.5) == []
    assert len(d.unknown_requests(6.0)) == 1


def test_too_many_services() -> None:
    d = Dispatcher(max_queue=10, max_services=1, unknown_grace_s=1, worker_expiry_s=1)
    assert d.enqueue(req(1, service=b"a"), 0.0) is None
    assert isinstance(d.enqueue(req(2, service=b"b"), 0.0), UnknownService)


def test_a_resent_request_is_held_once() -> None:
    d = make()
    assert d.enqueue(req(1, rid=7), 0.0) is None
    assert d.enqueue(req(1, rid=7), 0.1) is None
    assert len(d.services[b"echo"].queue) == 1


def test_away_worker_gets_nothing_until_free() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.set_unavailable(w, WorkerState.AWAY)
    d.enqueue(req(1), 0.0)
    service = d.services[b"echo"]
    assert list(d.assignments(service, 0.0)) == []
    d.set_idle(w)
    assert len(list(d.assignments(service, 0.0))) == 1


def test_bounce_requeues_at_head_and_marks_away() -> None:
    d, w, service = holding_first_of_two()
    assert d.bounce(w)
    assert w.state is WorkerState.AWAY and w.current is None
    assert [r.body for r in service.queue] == [[b"1"], [b"2"]]
    assert not d.bounce(w)


def test_reply_for_another_client_is_refused() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    list(d.assignments(d.services[b"echo"], 0.0))
    assert d.complete(w, b"someone-else") is None
    assert w.current is not None


@pytest.mark.parametrize("now,expected", [(2.9, 0), (3.0, 1)])
def test_worker_expiry(now: float, expected: int) -> None:
    d = make()
    d.add_worker(b"W", b"echo", True, {}, 0.0)
    assert len(d.expired_workers(now)) == expected


def test_a_draining_worker_finishes_but_gets_nothing_more() -> None:
    d, w, service = holding_first_of_two()
    d.set_unavailable(w, WorkerState.DRAINING)
    assert d.complete(w, b"client1") is not None
    assert w.state is WorkerState.DRAINING
    assert list(d.assignments(service, 0.0)) == []


def test_total_queue_is_bounded_and_counted() -> None:
    d = Dispatcher(max_queue=10, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_total_queue=3)
    w = d.add_worker(b"W", b"a", True, {}, 0.0)
    assert d.enqueue(req(1, service=b"a"), 0.0) is None
    assert d.enqueue(req(2, service=b"b"), 0.0) is None
    assert d.enqueue(req(3, service=b"b", deadline=1.0), 0.0) is None
    error = d.enqueue(req(4, service=b"a"), 0.0)
    assert isinstance(error, Overloaded) and "3 requests queued" in str(error)
    list(d.assignments(d.services[b"a"], 0.0))
    assert d.queued == 2
    d.remove_worker(w, 0.5)  # its request goes back: 3 queued
    assert d.queued == 3
    assert d.drop_expired(2.0) == 1 and d.queued == 2
    assert len(d.unknown_requests(9.0)) == 2 and d.queued == 0


def test_expiry_scan_waits_for_the_earliest_deadline() -> None:
    d = make()
    d.enqueue(req(1, deadline=5.0, rid=1), 0.0)
    d.enqueue(req(2, deadline=9.0, rid=2), 0.0)
    assert d.drop_expired(4.9) == 0
    assert d.drop_expired(6.0) == 1
    assert d.drop_expired(8.0) == 0
    d.enqueue(req(3, deadline=8.5, rid=3), 8.0)  # an earlier deadline arrives later
    assert d.drop_expired(8.6) == 1
    assert d.drop_expired(9.0) == 1 and d.queued == 0


def test_only_long_busy_workers_are_probed() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0)
    d.add_worker(b"B", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    list(d.assignments(d.services[b"echo"], 1.0))
    assert d.busy_longer_than(0.2, 1.1) == []
    assert d.busy_longer_than(0.2, 1.3) == [a]
