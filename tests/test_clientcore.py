"""ClientCore driven through every fault path with an explicit clock and no sockets.

The "broker" here is the test: it reads the core's SEND actions with the broker's own
parser (``parse_broker_inbound``) and answers with the broker's own builders.
"""

from __future__ import annotations

from typing import Any

import pytest

from mdp import protocol as p
from mdp.clientcore import CLOSE, OPEN, SEND, ClientCore, State
from mdp.errors import Timeout, UnknownService

SVC = b"echo"


def make(n: int = 1, **options: Any) -> ClientCore:
    return ClientCore([f"tcp://b{i}:5555" for i in range(n)], **options)


def actions(core: ClientCore) -> list[tuple[int, int, Any]]:
    """The core's actions, SEND frames parsed as the broker parses them; a batched SUBMIT
    is shown as the requests it carries, one by one (as the broker queues them)."""
    out = []
    for kind, index, frames in core.take_actions():
        message = p.parse_broker_inbound(frames) if kind == SEND else None  # type: ignore[arg-type]
        if isinstance(message, p.ClientBatch):
            out += [(kind, index, p.ClientRequest(message.service, [body], rid, message.ttl_ms,
                                                  message.priority))
                    for rid, body in zip(message.rids, message.bodies, strict=True)]
        else:
            out.append((kind, index, message))
    return out


def sent(core: ClientCore) -> list[tuple[int, Any]]:
    return [(i, m) for kind, i, m in actions(core) if kind == SEND]


def welcome(instance: str = "one") -> list[bytes]:
    return p.client_welcome(b"id", {"broker": "t", "instance": instance})[1:]


def result(rid: int | None, value: Any) -> list[bytes]:
    return p.to_client(b"id", SVC, [p.result_body(value)], rid)[1:]


def up(core: ClientCore, index: int, now: float, instance: str = "one") -> None:
    """Connection ``index`` comes up and its broker says WELCOME."""
    core.opened(index, now)
    core.received(index, welcome(instance), now)
    core.tick(now)


def submit(core: ClientCore, now: float, value: int = 0, **kw: Any):  # type: ignore[no-untyped-def]
    return core.submit(SVC, [p.pack({"v": value})], now, timeout=kw.pop("timeout", 10.0), **kw)


def test_first_request_rides_with_hello_and_needs_no_handshake() -> None:
    core = make()
    call = submit(core, 0.0)
    assert actions(core) == [(OPEN, 0, None)]
    core.opened(0, 0.01)
    [(_, hello), (_, request)] = sent(core)
    assert isinstance(hello, p.ClientHello) and hello.first == p.First(call.rid, 9990, 0)
    assert isinstance(request, p.ClientRequest) and request.rid is None  # plain MDPC01
    core.received(0, welcome(), 0.02)
    core.received(0, result(call.rid, {"v": 0}), 0.03)  # a DIPS broker answers with RESULT
    assert call.outcome == {"v": 0} and core.take_finished() == [call]
    second = submit(core, 0.04, 1, priority=1)
    [(_, submit_msg)] = sent(core)
    assert (submit_msg.rid, submit_msg.priority) == (second.rid, 1)  # SUBMIT, with id


def test_standard_broker_is_served_plain_one_at_a_time() -> None:
    core = make()
    first, second = submit(core, 0.0), submit(core, 0.0, 1)
    core.take_actions()
    core.opened(0, 0.0)
    assert len(sent(core)) == 2  # HELLO + the first request only
    core.received(0, result(None, {"v": 0}), 0.1)  # a standard reply, no WELCOME before
    core.tick(0.1)
    assert first.outcome == {"v": 0} and core.endpoints[0].state is State.STANDARD
    [(_, plain)] = sent(core)
    assert isinstance(plain, p.ClientRequest) and plain.rid is None
    core.received(0, result(None, {"v": 1}), 0.2)
    assert second.outcome == {"v": 1}


def test_lazy_pirate_closes_and_a_late_reply_is_not_taken_for_the_next() -> None:
    core = make(2, attempt_timeout=2.5, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    core.opened(0, 0.0)
    core.received(0, result(None, {"v": 0}), 0.01)  # b0 is a standard broker
    core.opened(1, 0.0)
    core.received(1, result(None, {}), 0.01)  # b1 too (a stale reply, dropped)
    core.take_actions()
    call = submit(core, 1.0, 7)
    [(where, _)] = sent(core)
    core.tick(3.6)  # no reply within attempt_timeout
    kinds = actions(core)
    assert (CLOSE, where, None) in kinds  # that socket is gone: its late reply cannot arrive
    resend = [i for kind, i, m in kinds if kind == SEND and isinstance(m, p.ClientRequest)]
    assert resend == [1 - where] and call.sends == 2
    core.received(1 - where, result(None, {"v": 7}), 3.7)
    assert call.outcome == {"v": 7}


def test_silent_broker_is_pinged_then_failed_over() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    [(where, _)] = [(i, m) for i, m in sent(core) if isinstance(m, p.ClientRequest)]
    assert core.next_deadline() == pytest.approx(0.25)
    core.tick(0.25)
    [(_, ping)] = sent(core)
    assert isinstance(ping, p.ClientPing) and ping.rids == [call.rid] and where == 0
    core.tick(0.76)  # no PONG within broker_timeout
    moved = sent(core)
    assert [i for i, m in moved if isinstance(m, p.ClientRequest)] == [1]
    assert core.endpoints[0].state is State.DOWN and call.sends == 2
    core.received(1, result(call.rid, {"v": 0}), 0.8)
    assert call.outcome == {"v": 0}


def test_a_long_request_on_a_live_broker_is_never_resent() -> None:
    core = make()
    call = submit(core, 0.0, timeout=60)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    now = 0.0
    for _ in range(100):  # 100 pings over ~30 s, each answered: nothing lost
        now = core.next_deadline()
        core.tick(now)
        [(_, ping)] = sent(core)
        core.received(0, p.pong(b"", [], "one")[1:], now + 0.01)
    assert call.sends == 1 and not call.done


def test_lost_ids_are_sent_again() -> None:
    core = make()
    a, b = submit(core, 0.0), submit(core, 0.0, 1)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    core.tick(0.3)
    sent(core)
    core.received(0, p.pong(b"", [b.rid], "one")[1:], 0.31)
    core.tick(0.31)
    [(_, again)] = sent(core)
    assert again.rid == b.rid and b.sends == 2 and a.sends == 1


def test_a_restarted_broker_gets_everything_outstanding_again() -> None:
    core = make()
    calls = [submit(core, 0.0, i) for i in range(3)]
    core.take_actions()
    up(core, 0, 0.0, instance="one")
    sent(core)
    core.tick(0.3)
    sent(core)
    core.received(0, p.pong(b"", [], "two")[1:], 0.31)  # nothing "lost", but a new process
    core.tick(0.31)
    assert sorted(m.rid for _, m in sent(core)) == [c.rid for c in calls]


def test_stale_and_duplicate_replies_are_dropped() -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.received(0, result(999, {"not": "ours"}), 0.1)
    assert not call.done
    core.received(0, result(call.rid, {"v": 0}), 0.1)
    core.received(0, result(call.rid, {"v": "again"}), 0.1)
    assert call.outcome == {"v": 0} and core.take_finished() == [call]
    core.received(0, [b"", b"garbage"], 0.1)  # malformed: logged, dropped


def test_unknown_service_is_tried_on_the_other_brokers() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    [(first, _)] = [(i, m) for i, m in sent(core) if isinstance(m, p.ClientRequest)]
    unknown = p.error_body(UnknownService("no such service"))
    core.received(first, p.to_client(b"", SVC, [unknown], call.rid)[1:], 0.1)
    core.tick(0.1)
    [(second, _)] = sent(core)
    assert second != first and not call.done
    core.received(second, p.to_client(b"", SVC, [unknown], call.rid)[1:], 0.2)
    assert isinstance(call.outcome, UnknownService)


def test_deadline_passing_is_a_timeout() -> None:
    core = make()
    call = submit(core, 0.0, timeout=0.5)
    core.take_actions()
    up(core, 0, 0.0)
    core.tick(0.25)
    core.received(0, p.pong(b"", [], "one")[1:], 0.26)
    core.tick(0.5)
    assert isinstance(call.outcome, Timeout) and "within 0.5s" in str(call.outcome)
    core.received(0, result(call.rid, {"late": 1}), 0.6)  # the late reply is dropped
    assert isinstance(call.outcome, Timeout)


def test_no_broker_reachable_times_out_and_brokers_are_retried() -> None:
    core = make(1, connect_timeout=0.5, down_for=1.0)
    call = submit(core, 0.0, timeout=2.0)
    assert actions(core) == [(OPEN, 0, None)]
    core.tick(0.5)
    assert actions(core) == [(CLOSE, 0, None)]
    assert core.next_deadline() == 1.5
    core.tick(1.5)
    assert actions(core) == [(OPEN, 0, None)]
    core.tick(2.0)
    assert isinstance(call.outcome, Timeout) and "could be reached" in str(call.outcome)


def test_retries_budget() -> None:
    core = make(2, retries=0, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    core.take_actions()
    core.send_failed(0, 0.1)
    assert isinstance(call.outcome, Timeout)


def test_window_limits_calls_in_flight() -> None:
    core = make()
    core.window = 2
    calls = [submit(core, 0.0, i) for i in range(5)]
    core.take_actions()
    up(core, 0, 0.0)
    assert len([m for _, m in sent(core) if isinstance(m, p.ClientRequest)]) == 2
    assert calls[2].deadline == float("inf")  # not started: its clock is not running
    core.received(0, result(calls[0].rid, 0), 0.1)
    core.tick(0.1)
    [(_, third)] = sent(core)
    assert third.rid == calls[2].rid and calls[3].deadline == float("inf")


def test_new_requests_spread_round_robin_over_live_brokers() -> None:
    core = make(3, start=1)
    core.take_actions()
    submit(core, 0.0)
    core.take_actions()
    for i in range(3):
        up(core, i, 0.0)
    core.take_actions()
    for i in range(6):
        submit(core, 0.1, i)
    where = [i for i, _ in sent(core)]
    assert sorted(where) == [0, 0, 1, 1, 2, 2]


def test_cancel_forgets_a_call_and_closes_a_plain_connection() -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    core.opened(0, 0.0)
    core.take_actions()
    core.cancel(call, 0.1)
    assert (CLOSE, 0, None) in actions(core) and core.take_finished() == []
    assert core.pending == {}


def test_requests_placed_together_travel_in_one_submit_and_come_back_in_one_result() -> None:
    core = make(1)
    core.submit(SVC, [p.pack({"i": 0})], 0.0, timeout=5.0)
    core.tick(0.0)
    actions(core)
    up(core, 0, 0.01)
    for i in range(1, 6):
        core.submit(SVC, [p.pack({"i": i})], 0.02, timeout=5.0)
    core.tick(0.02)
    batches = [frames for kind, _, frames in core.take_actions() if kind == SEND]
    parsed = [p.parse_broker_inbound(frames) for frames in batches]
    batch = [m for m in parsed if isinstance(m, p.ClientBatch)]
    assert len(batch) == 1 and len(batch[0].rids) == 5
    replies = p.to_client_batch(b"id", SVC, batch[0].rids,
                                [p.result_body(rid) for rid in batch[0].rids])[1:]
    core.received(0, replies, 0.03)
    done = {call.rid: call.outcome for call in core.take_finished()}
    assert done == {rid: rid for rid in batch[0].rids}
