"""Unit tests of the broker's bookkeeping: no sockets, time passed in."""

from __future__ import annotations

import random

import pytest

from mdp.dispatch import Dispatcher, Request, Service, Worker, WorkerState
from mdp.errors import Overloaded, UnknownService
from mdp.standing import (
    expired_workers,
    heard_from,
    quiet_holders,
    recalls,
    set_away,
    set_draining,
)
from mdp.sweeps import drop_all, drop_expired, drop_requests_of, unknown_requests


def make(max_queue: int = 100, grace: float = 1.0) -> Dispatcher:
    return Dispatcher(max_queue=max_queue, max_services=10, unknown_grace_s=grace,
                      worker_expiry_s=3.0)


def req(n: int, now: float = 0.0, service: bytes = b"echo", deadline: float | None = None,
        rid: int | None = None, priority: int = 0) -> Request:
    return Request(b"client%d" % n, service, [b"%d" % n], now, rid, deadline, priority)


def assign(d: Dispatcher, service: bytes = b"echo",
           now: float = 0.0) -> list[tuple[Worker, Request]]:
    return [(w, r) for w, r, _ in d.assignments(d.services[service], now)]


def only_key(w: Worker) -> bytes:
    [key] = w.tasks
    return key


def holding_first_of_two() -> tuple[Dispatcher, Worker, Service]:
    """One worker that holds request 1 while request 2 waits."""
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    d.enqueue(req(2), 0.0)
    service = d.services[b"echo"]
    assign(d)
    return d, w, service


def test_least_recently_used_idle_worker_gets_the_request() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0)
    b = d.add_worker(b"B", b"echo", True, {}, 0.1)
    d.enqueue(req(1), 1.0)
    [(worker, request)] = assign(d, now=1.0)
    assert worker is a and request.body == [b"1"]
    assert d.complete(a, request.key, 1.5) is request  # A is now the most recently used
    d.enqueue(req(2), 2.0)
    [(worker, _)] = assign(d, now=2.0)
    assert worker is b


def test_requests_queue_in_order_while_no_worker_is_idle() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", False, {}, 0.0)  # a standard worker: no prefetch
    for n in range(3):
        d.enqueue(req(n), 0.0)
    service = d.services[b"echo"]
    assert [r.body for _, r in assign(d)] == [[b"0"]]
    assert len(service.queue) == 2
    d.complete(w, only_key(w), 0.0)
    assert [r.body for _, r in assign(d)] == [[b"1"]]


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
    pairs = assign(d, now=5.0)
    assert [r.body for _, r in pairs] == [[b"2"]]
    assert d.counters.expired == 1
    assert not d.holds(b"client1", 1)


def test_drop_expired_sweeps_the_queue() -> None:
    d = make()
    d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1, deadline=1.0, rid=1), 0.0)
    d.enqueue(req(2, deadline=9.0, rid=2), 0.0)
    assert drop_expired(d, 2.0) == 1
    assert [r.body for r in d.services[b"echo"].queue] == [[b"2"]]


def test_unknown_service_after_grace() -> None:
    d = make(grace=1.0)
    d.enqueue(req(1, service=b"nobody"), 0.0)
    assert unknown_requests(d, 0.5) == []
    [request] = unknown_requests(d, 1.0)
    assert request.service == b"nobody"
    assert b"nobody" not in d.services  # forgotten once empty


def test_grace_counts_from_when_the_last_worker_left() -> None:
    d = make(grace=1.0)
    w = d.add_worker(b"W", b"echo", False, {}, 0.0)
    d.enqueue(req(1, now=0.5), 0.5)
    d.enqueue(req(2, now=0.5), 0.5)
    assign(d, now=0.5)
    d.remove_worker(w, 5.0)  # its task goes back; both wait for a worker again
    assert unknown_requests(d, 5.5) == []
    assert len(unknown_requests(d, 6.0)) == 2
    assert b"echo" not in d.services and d.queued == 0


def test_a_service_whose_last_worker_left_with_nothing_queued_is_forgotten() -> None:
    d = make(grace=1.0)
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.remove_worker(w, 5.0)
    assert b"echo" not in d.services and b"echo" in d.offered


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
    set_away(w, True)
    d.enqueue(req(1), 0.0)
    assert assign(d) == []
    set_away(w, False)
    assert len(assign(d)) == 1


def test_bounce_requeues_at_head_and_marks_away() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0, prefetch=1)
    d.enqueue(req(1), 0.0)
    d.enqueue(req(2), 0.0)
    service = d.services[b"echo"]
    assign(d)
    keys = list(w.tasks)
    assert [r.body for r in w.tasks.values()] == [[b"1"], [b"2"]]  # the second held
    assert d.bounce(w, keys[1]) and d.bounce(w, keys[0])
    assert w.state is WorkerState.AWAY and not w.tasks and service.held == 0
    assert [r.body for r in service.queue] == [[b"1"], [b"2"]]
    assert not d.bounce(w, keys[0])


def test_reply_for_another_client_is_refused() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    assign(d)
    assert d.complete(w, b"someone-else", 0.0) is None
    assert len(w.tasks) == 1


@pytest.mark.parametrize("now,expected", [(2.9, 0), (3.0, 1)])
def test_worker_expiry(now: float, expected: int) -> None:
    d = make()
    d.add_worker(b"W", b"echo", True, {}, 0.0)
    assert len(expired_workers(d.workers.values(), now)) == expected


def test_a_draining_worker_finishes_but_gets_nothing_more() -> None:
    d, w, service = holding_first_of_two()
    set_draining(w)
    first = next(iter(w.tasks))
    assert d.complete(w, first, 0.0) is not None
    assert w.state is WorkerState.DRAINING
    assert assign(d) == []


def test_total_queue_is_bounded_and_counted() -> None:
    d = Dispatcher(max_queue=10, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_total_queue=3)
    w = d.add_worker(b"W", b"a", True, {}, 0.0)
    assert d.enqueue(req(1, service=b"a"), 0.0) is None
    assert d.enqueue(req(2, service=b"b"), 0.0) is None
    assert d.enqueue(req(3, service=b"b", deadline=1.0), 0.0) is None
    error = d.enqueue(req(4, service=b"a"), 0.0)
    assert isinstance(error, Overloaded) and "3 requests queued" in str(error)
    assign(d, b"a")
    assert d.queued == 2
    d.remove_worker(w, 0.5)  # its request goes back: 3 queued
    assert d.queued == 3
    assert drop_expired(d, 2.0) == 1 and d.queued == 2
    assert len(unknown_requests(d, 9.0)) == 2 and d.queued == 0


def test_expiry_scan_waits_for_the_earliest_deadline() -> None:
    d = make()
    d.enqueue(req(1, deadline=5.0, rid=1), 0.0)
    d.enqueue(req(2, deadline=9.0, rid=2), 0.0)
    assert drop_expired(d, 4.9) == 0
    assert drop_expired(d, 6.0) == 1
    assert drop_expired(d, 8.0) == 0
    d.enqueue(req(3, deadline=8.5, rid=3), 8.0)  # an earlier deadline arrives later
    assert drop_expired(d, 8.6) == 1
    assert drop_expired(d, 9.0) == 1 and d.queued == 0


def test_only_long_busy_workers_are_probed() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0)
    d.add_worker(b"B", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    assign(d, now=1.0)
    heard_from(a, d.worker_expiry_s, 1.0)

    def holders(now: float) -> tuple[list[Worker], list[Worker], float]:
        return quiet_holders(d.busy.values(), d.worker_expiry_s, 0.2, 0.8, now)

    assert holders(1.1)[:2] == ([], [])
    quiet, silent, due = holders(1.3)
    assert (quiet, silent) == ([a], []) and 1.8 <= due < 1.81  # silent at 1.8 if it stays so
    assert holders(1.9)[:2] == ([], [a])  # quiet since its task came at 1.0
    heard_from(a, d.worker_expiry_s, 1.95)  # its sentinel answered a probe
    assert holders(2.0)[:2] == ([], [])


def test_prefetch_only_when_no_worker_is_idle() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0, prefetch=1)
    b = d.add_worker(b"B", b"echo", True, {}, 0.0, prefetch=1)
    for n in range(5):
        d.enqueue(req(n), 0.0)
    service = d.services[b"echo"]
    pairs = list(d.assignments(service, 0.0))
    assert [(w, hold) for w, _, hold in pairs] == [(a, False), (b, False), (a, True), (b, True)]
    assert len(service.queue) == 1 and service.held == 2
    assert not service.idle and not service.open


def test_an_idle_worker_recalls_a_held_task() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0, prefetch=1)
    b = d.add_worker(b"B", b"echo", True, {}, 0.0, prefetch=1)
    for n in range(4):
        d.enqueue(req(n), 0.0)
    service = d.services[b"echo"]
    list(d.assignments(service, 0.0))
    first_b, held_b = list(b.tasks)
    d.complete(b, first_b, 1.0)
    d.complete(b, held_b, 1.1)  # B is idle; A still runs one task and holds another
    assert service.idle and service.held == 1
    [(worker, request)] = recalls(service)
    assert worker is a and request.body == [b"2"]
    assert recalls(service) == []  # asked once
    assert d.bounce(a, request.key)  # A gives it back: it is not away
    assert a.state is WorkerState.BUSY and not a.away
    assert [(w, r.body) for w, r in assign(d, now=1.2)] == [(b, [b"2"])]


def test_a_late_recall_is_answered_by_the_reply() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0, prefetch=1)
    d.add_worker(b"B", b"echo", False, {}, 0.0)
    for n in range(3):
        d.enqueue(req(n), 0.0)
    service = d.services[b"echo"]
    list(d.assignments(service, 0.0))
    b = service.workers[b"B"]
    d.complete(b, only_key(b), 0.5)
    [(_, request)] = recalls(service)
    first = next(iter(a.tasks))
    d.complete(a, first, 0.6)
    assert service.held == 0  # the recalled task now runs first
    assert d.complete(a, request.key, 0.7) is request


def test_higher_priority_first_fifo_within() -> None:
    d = make()
    d.enqueue(req(1, priority=0), 0.0)
    d.enqueue(req(2, priority=-1), 0.0)
    d.enqueue(req(3, priority=1), 0.0)
    d.enqueue(req(4, priority=1), 0.0)
    d.enqueue(req(5, priority=0), 0.0)
    w = d.add_worker(b"W", b"echo", False, {}, 0.0)
    order = []
    for _ in range(5):
        [(_, r)] = assign(d)
        order.append(r.body[0])
        d.complete(w, r.key, 0.0)
    assert order == [b"3", b"4", b"1", b"5", b"2"]


def test_low_priority_is_not_starved() -> None:
    d = make(max_queue=1000)
    d.enqueue(req(0, priority=-1), 0.0)
    for n in range(1, 100):
        d.enqueue(req(n, priority=1), 0.0)
    w = d.add_worker(b"W", b"echo", False, {}, 0.0)
    turns = 0
    while True:
        [(_, r)] = assign(d)
        d.complete(w, r.key, 0.0)
        turns += 1
        if r.body == [b"0"] or turns == 20:
            break
    assert r.body == [b"0"] and turns <= 10


def test_histograms_time_queue_and_work() -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1, now=1.0), 1.0)
    [(_, r)] = assign(d, now=1.5)
    d.complete(w, r.key, 1.6, error="bad_request")
    counters = d.services[b"echo"].counters
    assert counters.queue_time.count == 1 and abs(counters.queue_time.total - 0.5) < 1e-9
    assert abs(counters.work_time.total - 0.1) < 1e-9
    assert counters.errors == {"bad_request": 1} and w.failures == 0  # the caller's mistake


@pytest.mark.parametrize(("code", "failed"), [
    ("bad_request", False), ("source_not_found", False), ("source_timeout", False),
    ("source_error", False),
    ("worker_error", True), ("internal", True), ("worker_timeout", True),
    ("a_handlers_own_code", True),
])
def test_a_worker_fails_only_where_the_fault_is_the_fleets(code: str, failed: bool) -> None:
    d = make()
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    d.enqueue(req(1), 0.0)
    [(_, r)] = assign(d)
    d.complete(w, r.key, 0.1, error=code)
    assert w.failures == int(failed) and d.services[b"echo"].counters.errors == {code: 1}


def test_a_dips_worker_holding_a_task_is_not_expired_for_silence() -> None:
    d = make()
    dips = d.add_worker(b"D", b"echo", True, {}, 0.0)
    std = d.add_worker(b"S", b"echo", False, {}, 0.0)
    d.enqueue(req(1), 0.0)
    d.enqueue(req(2), 0.0)
    assign(d)
    assert dips.tasks and std.tasks
    assert expired_workers(d.workers.values(), 10.0) == [std]


def test_held_and_unrecalled_stay_true_through_random_traffic() -> None:
    """The books recalls() trusts (held, unrecalled) match the workers' tasks after
    any mix of requests, replies, bounces, recalls and workers leaving."""
    import random

    rng = random.Random(7)
    d = Dispatcher(max_queue=10_000, max_services=10, unknown_grace_s=1.0,
                   worker_expiry_s=3.0, max_prefetch=4)
    workers = [d.add_worker(b"W%d" % i, b"echo", True, {}, 0.0, prefetch=4) for i in range(5)]
    service = d.services[b"echo"]
    n = 0
    for step in range(5_000):
        now = step * 0.001
        action = rng.random()
        if action < 0.3:
            for _ in range(rng.randint(1, 3)):  # bursts: workers end up holding tasks
                n += 1
                d.enqueue(req(n, now), now)
            list(d.assignments(service, now))
        elif action < 0.7:
            busy = [w for w in service.workers.values() if w.tasks]
            if busy:
                w = rng.choice(busy)
                for key in list(w.tasks)[:1 if rng.random() < 0.6 else None]:
                    d.complete(w, key, now)  # its first task, or all it holds
                if rng.random() < 0.5:
                    list(d.assignments(service, now))
        elif action < 0.85:
            for w, r in recalls(service):
                if rng.random() < 0.7 and r.key in w.tasks:
                    d.bounce(w, r.key)  # the worker had not started it
            list(d.assignments(service, now))
        elif action < 0.9 and len(service.workers) > 1:
            d.remove_worker(rng.choice(list(service.workers.values())), now)
        elif action < 0.95:
            w = d.add_worker(b"N%d" % step, b"echo", True, {}, now, prefetch=4)
            workers.append(w)
        live = list(service.workers.values())
        assert service.held == sum(max(0, len(w.tasks) - 1) for w in live)
        assert service.unrecalled == {r: w for w in live for r in list(w.tasks.values())[1:]
                                      if not r.recalled}


def test_a_worker_holds_about_five_ms_of_work_behind_its_task() -> None:
    """Deep prefetch only for short tasks: a held task waits behind the ones before it."""
    d = Dispatcher(max_queue=100, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_prefetch=8)
    w = d.add_worker(b"W", b"echo", True, {}, 0.0, prefetch=8)
    service = d.services[b"echo"]
    assert service.hold_depth(w) == 1  # nothing timed yet
    now = 0.0
    for n in range(20):  # 50 ms tasks, one at a time
        d.enqueue(req(n, now), now)
        [(_, r)] = assign(d, now=now)
        now += 0.05
        d.complete(w, r.key, now)
    assert service.hold_depth(w) == 1
    for n in range(40):  # then 100 us tasks
        d.enqueue(req(100 + n, now), now)
        [(_, r)] = assign(d, now=now)
        now += 0.0001
        d.complete(w, r.key, now)
    assert service.hold_depth(w) == 8
    assert service.hold_depth(d.add_worker(b"S", b"echo", False, {}, now)) == 0  # standard


def test_a_lone_request_goes_to_an_idle_worker_at_once_as_through_the_queue() -> None:
    d = make()
    a = d.add_worker(b"A", b"echo", True, {}, 0.0)
    b = d.add_worker(b"B", b"echo", True, {}, 0.1)
    service = d.services[b"echo"]
    first = req(1, 1.0, rid=7)
    assert d.dispatch_now(service, first, 1.0) is a  # least recently used, as assignments
    assert a.tasks == {first.key: first} and d.busy == {b"A": a} and d.holds(b"client1", 7)
    assert d.counters.requests == 1 and service.counters.requests == 1
    assert d.dispatch_now(service, req(1, 1.1, rid=7), 1.1) is None  # a resend: kept once
    keyed = req(2, 1.2, rid=8)
    keyed.ck = b"k"
    assert d.dispatch_now(service, keyed, 1.2) is None  # coalescing: the usual way
    d.enqueue(req(3, 1.3), 1.3)
    assert d.dispatch_now(service, req(4, 1.3), 1.3) is None  # a queue: it goes behind
    [(worker, _)] = assign(d, now=1.3)
    assert worker is b and d.dispatch_now(service, req(5, 1.4), 1.4) is None  # none idle
    assert d.complete(a, first.key, 2.0) is first and not d.holds(b"client1", 7)


def keyed(n: int, body: bytes, ck: bytes = b"k", now: float = 0.0) -> Request:
    request = Request(b"client%d" % n, b"echo", [body], now, n, None, 0)
    request.ck = ck
    return request


def test_a_coalescing_key_shares_only_a_request_with_the_same_body() -> None:
    """A key is the caller's claim that two requests are the same; the broker believes it
    only for the same bytes: another body under the key (a forged one, say) is worked on
    its own and never given the first request's reply, nor the first its."""
    d = make()
    first = keyed(1, b"cat.jpg 300px")
    assert d.enqueue(first, 0.0) is None
    assert d.enqueue(keyed(2, b"cat.jpg 300px"), 0.1) is None  # same bytes: shared
    forged = keyed(3, b"dog.jpg 300px")
    assert d.enqueue(forged, 0.2) is None
    assert d.counters.coalesced == 1 and len(d.services[b"echo"].queue) == 2
    assert [c.client for c in first.answered_to()] == [b"client1", b"client2"]
    assert forged.callers is None and list(forged.answered_to()) == [forged]
    assert d.shared[(b"echo", b"k", 0)] is first  # the forgery did not take the key over


def test_callers_of_one_shared_request_are_bounded() -> None:
    """As many callers as a service's queue may hold, and no more: past that, overloaded
    (attaching costs no queue place, so a client could otherwise grow it for ever)."""
    d = make(max_queue=3)
    first = keyed(0, b"same")
    assert d.enqueue(first, 0.0) is None
    answers = [d.enqueue(keyed(n, b"same"), 0.0) for n in range(1, 8)]
    assert answers[:2] == [None] * 2 and first.callers is not None and len(first.callers) == 3
    assert all(isinstance(a, Overloaded) for a in answers[2:])
    assert "3 callers wait for one request" in str(answers[2])


def test_callers_of_shared_requests_count_toward_the_brokers_total_bound() -> None:
    """Attaching costs no queue place but holds a caller: callers and queued requests
    together stay within --max-total-queue, and every way a caller leaves gives its place
    back (answered, expired, retried)."""
    d = Dispatcher(max_queue=100, max_services=10, unknown_grace_s=1.0,
                   worker_expiry_s=3.0, max_total_queue=4)
    first = keyed(0, b"same")
    assert d.enqueue(first, 0.0) is None
    assert [d.enqueue(keyed(n, b"same"), 0.0) for n in (1, 2)] == [None, None]
    assert d.queued == 1 and d.attached == 3  # the first's own copy and two callers
    refused = d.enqueue(keyed(3, b"same"), 0.0)
    assert isinstance(refused, Overloaded) and "callers of shared ones" in str(refused)
    assert isinstance(d.enqueue(req(9), 0.0), Overloaded)  # the plain queue is bounded too
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    [(_, r)] = assign(d)
    assert r is first and all(c.body == [] for c in first.callers[1:])  # one copy of it
    d.complete(w, r.key, 0.1)
    assert d.attached == 0 and d.queued == 0
    assert d.enqueue(keyed(4, b"same"), 0.2) is None  # room again


# --- the bytes of queued requests ------------------------------------------------------------


def sized(n: int, size: int, service: bytes = b"echo", deadline: float | None = None,
          rid: int | None = None) -> Request:
    return Request(b"client%d" % n, service, [b"x" * size], 0.0, rid, deadline, 0)


def bytes_of_queues(d: Dispatcher) -> int:
    """What the queues hold, counted the slow way."""
    return sum(len(frame) for s in d.services.values() for r in s.queue for frame in r.body)


def test_queued_bytes_are_bounded_over_all_services_and_the_refusal_names_the_limit() -> None:
    d = Dispatcher(max_queue=100, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_queue_bytes=1000)
    assert d.enqueue(sized(1, 600, b"a"), 0.0) is None
    assert d.enqueue(sized(2, 400, b"b"), 0.0) is None  # exactly at the limit: queued
    refused = d.enqueue(sized(3, 1, b"a"), 0.0)
    assert isinstance(refused, Overloaded)
    assert "--max-queue-bytes" in str(refused) and "1000" in str(refused)
    assert d.queued_bytes == 1000 and d.queued == 2  # the refused one holds nothing
    w = d.add_worker(b"W", b"a", True, {}, 0.0)
    [(_, r)] = assign(d, b"a")
    assert d.queued_bytes == 400  # given to a worker: no longer queued
    assert d.enqueue(sized(4, 600, b"a"), 0.0) is None
    d.complete(w, r.key, 0.1)


def test_the_queued_bytes_go_back_to_zero_by_every_way_out_of_a_queue() -> None:
    """Dispatched, expired (swept, and found at dispatch), revoked, a service no worker
    came to, coalesced, bounced, taken back from a silent worker, requeued after a lost
    worker, poisoned, and dropped when the broker stops: each gives its bytes back."""
    d = Dispatcher(max_queue=100, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_worker_losses=2)
    d.enqueue(sized(8, 30, deadline=0.5), 0.0)
    d.enqueue(sized(9, 50, deadline=1.0), 0.0)
    for n in range(4):
        d.enqueue(sized(n, 100), 0.0)
    assert d.queued_bytes == 480 == bytes_of_queues(d)
    assert drop_expired(d, 0.5) == 1 and d.queued_bytes == 450  # expired, swept
    a = d.add_worker(b"A", b"echo", True, {}, 1.0, prefetch=1)
    b = d.add_worker(b"B", b"echo", True, {}, 1.0, prefetch=1)
    assert len(assign(d, now=1.0)) == 4  # dispatched (two run, two held) and one expired
    assert d.counters.expired == 2 and d.queued_bytes == 0 == bytes_of_queues(d)
    d.bounce(a, list(a.tasks)[1])  # bounced: back in the queue
    assert d.queued_bytes == 100
    d.take_back_from_silent(b)  # silent: both its tasks back in the queue
    assert d.queued_bytes == 300 == bytes_of_queues(d)
    assert assign(d, now=2.5) == []  # A is away now (it bounced), B silent
    d.remove_worker(a, 2.5, lost=lambda r: True)  # lost: its task waits to go out again
    assert d.queued_bytes == 300 and d.retries
    assert d.due_retries(3.0) and d.queued_bytes == 400 == bytes_of_queues(d)  # re-entered
    c = d.add_worker(b"C", b"echo", True, {}, 3.0)
    [(_, running)] = assign(d, now=3.0)
    assert d.queued_bytes == 300
    assert d.remove_worker(c, 3.1, lost=lambda r: True) == [running]  # poisoned: given up
    assert d.queued_bytes == 300 == bytes_of_queues(d)
    d.enqueue(keyed(20, b"y" * 70), 3.1)
    d.enqueue(keyed(21, b"y" * 70), 3.1)  # coalesced: one body queued, not two
    assert d.queued_bytes == 370 == bytes_of_queues(d)
    d.enqueue(Request(b"revoked", b"echo", [b"z" * 5], 3.1, 30, None, 0), 3.1)
    assert drop_requests_of(d, lambda r: r.client == b"revoked") == 1  # revoked
    assert d.queued_bytes == 370
    d.enqueue(sized(40, 8, b"nobody"), 3.1)
    assert [r.body for r in unknown_requests(d, 9.0)] == [[b"x" * 8]]  # no worker came
    assert d.queued_bytes == 370 == bytes_of_queues(d)
    assert drop_all(d) == 4  # the broker stops: what is still queued is dropped
    assert d.queued_bytes == 0 == bytes_of_queues(d) and d.queued == 0 and not d.retries


@pytest.mark.parametrize("seed", range(20))
def test_random_operations_keep_the_queued_bytes_equal_to_what_the_queues_hold(
        seed: int) -> None:
    rng = random.Random(seed)
    d = Dispatcher(max_queue=30, max_services=10, unknown_grace_s=0.5, worker_expiry_s=3.0,
                   max_total_queue=60, max_queue_bytes=1500, max_prefetch=2,
                   max_worker_losses=2)
    services = [b"a", b"b"]
    now, n = 0.0, 0

    def check() -> None:
        assert d.queued_bytes == bytes_of_queues(d)
        assert d.queued == sum(len(s.queue) for s in d.services.values())
        assert d.queued_bytes <= 1500 + sum(  # only requests taken back may pass the limit
            r.size for s in d.services.values() for r in s.queue if r.dispatched_at)

    for _ in range(400):
        now += rng.uniform(0.0, 0.3)
        op = rng.randrange(9)
        workers = list(d.workers.values())
        if op <= 2:
            n += 1
            request = sized(n, rng.randrange(0, 400), rng.choice(services),
                            deadline=now + rng.uniform(0.1, 3.0), rid=n)
            if rng.random() < 0.3:
                request.ck = b"k%d" % rng.randrange(3)
                request.body = [b"same"]
            d.enqueue(request, now)
        elif op == 3 and len(workers) < 6:
            d.add_worker(b"w%d" % n, rng.choice(services), True, {}, now,
                         prefetch=rng.randrange(3))
            n += 1
        elif op == 4:
            for name in services:
                if name in d.services:
                    list(d.assignments(d.services[name], now))
        elif op == 5 and workers:
            w = rng.choice(workers)
            if w.tasks:
                key = rng.choice(list(w.tasks))
                if rng.random() < 0.5:
                    d.complete(w, key, now)
                else:
                    d.bounce(w, key)
        elif op == 6 and workers:
            w = rng.choice(workers)
            d.remove_worker(w, now, lost=(lambda r: True) if rng.random() < 0.5 else None)
        elif op == 7 and workers:
            w = rng.choice(workers)
            if w.tasks and not w.silent:
                d.take_back_from_silent(w)
        else:
            d.due_retries(now)
            drop_expired(d, now)
            unknown_requests(d, now)
        check()
    drop_all(d)
    check()
    assert d.queued_bytes == 0 and d.queued == 0


def test_a_lost_worker_costs_an_asked_task_a_loss_only_if_it_checked_it() -> None:
    """A suspect task given with ASK (``worker.asked``) that the worker never CHECKed (it
    waited behind another broker's task that killed it) goes back at once, free; one it
    CHECKed (it started it) costs a loss like any other; a task given without ASK too."""
    d = Dispatcher(max_queue=10, max_services=10, unknown_grace_s=1.0, worker_expiry_s=3.0,
                   max_worker_losses=2)
    w = d.add_worker(b"W", b"echo", True, {}, 0.0)
    w.checks = True
    suspect = req(1)
    suspect.losses = 1
    d.enqueue(suspect, 0.0)
    [(_, given)] = assign(d)
    w.asked[given.key] = False  # ASKed, no CHECK: it never started here
    assert d.remove_worker(w, 1.0, lost=lambda r: True) == []
    assert suspect.losses == 1 and list(d.services[b"echo"].queue) == [suspect]
    assert d.retries == []  # no pause: it never met what killed the worker

    w2 = d.add_worker(b"W2", b"echo", True, {}, 1.0)
    [(_, given)] = assign(d, now=1.0)
    w2.asked[given.key] = True  # its CHECK came: it started there
    assert d.remove_worker(w2, 2.0, lost=lambda r: True) == [suspect]  # given up
    assert suspect.losses == 2
