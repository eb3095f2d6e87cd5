"""ClientCore driven through every fault path with an explicit clock and no sockets.

The "broker" here is the test: it reads the core's Send actions with the broker's own
parser (``parse_broker_inbound``) and answers with the broker's own builders.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, NamedTuple

import pytest

from mdp import protocol as p
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.clientcore import COMPLAIN_EVERY_S, ClientCore
from mdp.clientplacement import BATCH_MAX, REFILL_PART, REFILL_WAIT_S
from mdp.clientrecords import State, home_order
from mdp.errors import Timeout, UnknownService, WorkerLost

SVC = b"echo"


def make(n: int = 1, **options: Any) -> ClientCore:
    return ClientCore([f"tcp://b{i}:5555" for i in range(n)], **options)


class Sent(NamedTuple):
    """A Send action, its frames parsed as the broker parses them."""

    link: int
    message: Any


def actions(core: ClientCore) -> list[Open | Close | Sent]:
    """The core's actions, sends parsed; a batched SUBMIT is shown as the requests it
    carries, one by one (as the broker queues them)."""
    out: list[Open | Close | Sent] = []
    for action in core.take_actions():
        match action:
            case Send(index, frames):
                match p.parse_broker_inbound(frames):
                    case p.ClientBatch(service, rids, bodies, ttl_ms, priority):
                        out += [Sent(index, p.ClientRequest(service, [body], rid, ttl_ms,
                                                            priority))
                                for rid, body in zip(rids, bodies, strict=True)]
                    case message:
                        out.append(Sent(index, message))
            case Open() | Close():
                out.append(action)
    return out


def sent(core: ClientCore) -> list[Sent]:
    return [a for a in actions(core) if isinstance(a, Sent)]


def welcome(instance: str = "one", cancel: bool = False) -> list[bytes]:
    meta: dict[str, Any] = {"broker": "t", "instance": instance}
    if cancel:
        meta["cancel"] = True
    return p.client_welcome(b"id", meta)[1:]


def result(rid: int | None, value: Any) -> list[bytes]:
    return p.to_client(b"id", SVC, [p.result_body(value)], rid)[1:]


def up(core: ClientCore, index: int, now: float, instance: str = "one",
       cancel: bool = False) -> None:
    """Connection ``index`` comes up and its broker says WELCOME (``cancel``: it takes
    CANCEL)."""
    core.handle(Opened(index), now)
    core.handle(Received(index, welcome(instance, cancel)), now)
    core.handle(Tick(), now)


def submit(core: ClientCore, now: float, value: int = 0, **kw: Any):  # type: ignore[no-untyped-def]
    return core.submit(SVC, [p.pack({"v": value})], now, timeout=kw.pop("timeout", 10.0), **kw)


def test_first_request_rides_with_hello_and_needs_no_handshake() -> None:
    core = make()
    call = submit(core, 0.0)
    assert actions(core) == [Open(0)]
    core.handle(Opened(0), 0.01)
    [(_, hello), (_, request)] = sent(core)
    assert isinstance(hello, p.ClientHello) and hello.first == p.First(call.rid, 9990, 0)
    assert isinstance(request, p.ClientRequest) and request.rid is None  # plain MDPC01
    core.handle(Received(0, welcome()), 0.02)
    core.handle(Received(0, result(call.rid, {"v": 0})), 0.03)  # a DIPS broker answers with RESULT
    assert call.outcome == {"v": 0} and core.take_finished() == [call]
    second = submit(core, 0.04, 1, priority=1)
    [(_, submit_msg)] = sent(core)
    assert (submit_msg.rid, submit_msg.priority) == (second.rid, 1)  # SUBMIT, with id


def test_standard_broker_is_served_plain_one_at_a_time() -> None:
    core = make()
    first, second = submit(core, 0.0), submit(core, 0.0, 1)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    assert len(sent(core)) == 2  # HELLO + the first request only
    core.handle(Received(0, result(None, {"v": 0})), 0.1)  # a standard reply, no WELCOME before
    core.handle(Tick(), 0.1)
    assert first.outcome == {"v": 0} and core.endpoints[0].state is State.STANDARD
    [(_, plain)] = sent(core)
    assert isinstance(plain, p.ClientRequest) and plain.rid is None
    core.handle(Received(0, result(None, {"v": 1})), 0.2)
    assert second.outcome == {"v": 1}


def test_lazy_pirate_closes_and_a_late_reply_is_not_taken_for_the_next() -> None:
    core = make(2, attempt_timeout=2.5, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    core.handle(Received(0, result(None, {"v": 0})), 0.01)  # b0 is a standard broker
    core.handle(Opened(1), 0.0)
    core.handle(Received(1, result(None, {})), 0.01)  # b1 too (a stale reply, dropped)
    core.take_actions()
    call = submit(core, 1.0, 7)
    [(where, _)] = sent(core)
    core.handle(Tick(), 3.6)  # no reply within attempt_timeout
    kinds = actions(core)
    assert Close(where) in kinds  # that socket is gone: its late reply cannot arrive
    resend = [a.link for a in kinds if isinstance(a, Sent)
              and isinstance(a.message, p.ClientRequest)]
    assert resend == [1 - where] and call.sends == 2
    core.handle(Received(1 - where, result(None, {"v": 7})), 3.7)
    assert call.outcome == {"v": 7}


def test_silent_broker_is_pinged_then_failed_over() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    [(where, _)] = [(i, m) for i, m in sent(core) if isinstance(m, p.ClientRequest)]
    assert core.next_deadline() == pytest.approx(0.25)
    core.handle(Tick(), 0.25)
    [(_, ping)] = sent(core)
    assert isinstance(ping, p.ClientPing) and ping.rids == [call.rid] and where == 0
    core.handle(Tick(), 0.76)  # no PONG within broker_timeout
    moved = sent(core)
    assert [i for i, m in moved if isinstance(m, p.ClientRequest)] == [1]
    assert core.endpoints[0].state is State.DOWN and call.sends == 2
    core.handle(Received(1, result(call.rid, {"v": 0})), 0.8)
    assert call.outcome == {"v": 0}


def test_a_broker_failed_over_for_silence_is_told_first_which_requests_it_must_not_run(
) -> None:
    core = make(2, start=0)
    calls = [submit(core, 0.0, i) for i in range(3)]
    core.take_actions()
    up(core, 0, 0.0, cancel=True)
    up(core, 1, 0.0, cancel=True)
    assert {i for i, m in sent(core) if isinstance(m, p.ClientRequest)} == {0}
    core.handle(Tick(), 0.25)
    sent(core)  # the PING
    core.handle(Tick(), 0.76)  # no PONG within broker_timeout
    moved = actions(core)
    # CANCEL on the old connection, then it is closed, then the requests go to the other
    assert moved[0] == Sent(0, p.ClientCancel([c.rid for c in calls]))
    assert moved[1] == Close(0)
    assert [i for i, m in moved[2:] if isinstance(m, p.ClientRequest)] == [1, 1, 1]
    assert not [m for _, m in moved[2:] if isinstance(m, p.ClientCancel)]


def test_cancel_goes_only_to_a_broker_whose_welcome_offered_it() -> None:
    core = make(2, start=0)
    submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)  # an older DIPS broker: its WELCOME says nothing of CANCEL
    up(core, 1, 0.0, cancel=True)
    sent(core)
    core.handle(Tick(), 0.25)
    sent(core)
    core.handle(Tick(), 0.76)
    moved = actions(core)
    assert Close(0) in moved
    assert not [m for _, m in (a for a in moved if isinstance(a, Sent))
                if isinstance(m, p.ClientCancel)]


def test_a_lost_connection_and_an_idle_one_send_no_cancel() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0, cancel=True)
    up(core, 1, 0.0, cancel=True)
    sent(core)
    core.handle(Lost(0), 0.1)  # the connection is gone: nothing can go on it
    moved = actions(core)
    assert not [m for _, m in (a for a in moved if isinstance(a, Sent))
                if isinstance(m, p.ClientCancel)]
    core.handle(Received(1, result(call.rid, {"v": 0})), 0.2)
    core.handle(Tick(), 0.2)
    assert call.outcome == {"v": 0}
    core.handle(Tick(), 5.0)  # nothing outstanding: no ping, no failover, no CANCEL
    assert not [m for _, m in sent(core) if isinstance(m, p.ClientCancel)]


def test_a_restarted_brokers_welcome_says_whether_it_takes_cancel() -> None:
    core = make()
    submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0, instance="one", cancel=True)
    sent(core)
    core.handle(Tick(), 0.3)
    sent(core)
    core.handle(Received(0, p.pong(b"", [], "two")[1:]), 0.31)  # restarted: HELLO again
    core.handle(Received(0, welcome("two", cancel=False)), 0.32)  # an older version now
    assert core.endpoints[0].takes_cancel is False


FLOORS = [p.DEFAULT_LINK_FLOOR, 1_000_000, 500_000]  # 10 MB/s (the default), 1 MB/s, 500 KB/s


@pytest.mark.parametrize("floor", FLOORS)
def test_a_big_body_holds_the_ping_that_would_queue_behind_it(floor: int) -> None:
    """A ping goes on the same connection as the request and waits behind its bytes: a
    broker still taking a 20 MB body is not pinged (nor failed over) before the body may
    have gone at the link floor (2 s at the default 10 MB/s, 40 s at 500 KB/s); then it is
    pinged as usual, and a silent one failed over."""
    core = make(2, start=0, link_floor=floor)
    big = core.submit(SVC, [p.pack({"image": bytes(20_000_000)})], 0.0, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    assert [i for i, m in sent(core) if isinstance(m, p.ClientRequest)] == [0]
    due = 20_000_000 / floor
    assert core.next_deadline() == pytest.approx(due, abs=0.01)
    core.handle(Tick(), 1.0)  # past ping_interval + broker_timeout, still sending
    assert sent(core) == [] and core.endpoints[0].state is State.DIPS and big.sends == 1
    core.handle(Tick(), due - 0.01)
    assert sent(core) == [] and core.endpoints[0].state is State.DIPS
    core.handle(Tick(), due + 0.01)
    [(where, ping)] = sent(core)
    assert where == 0 and isinstance(ping, p.ClientPing)
    core.handle(Tick(), due + 0.6)  # no PONG: failed over as any silent broker
    assert core.endpoints[0].state is State.DOWN and big.sends == 2


@pytest.mark.parametrize("floor", FLOORS)
def test_a_big_reply_announced_holds_the_ping_whose_pong_would_queue_behind_it(
        floor: int) -> None:
    """The broker announces a 20 MB reply with a PONG just before it: a PONG to a ping sent
    meanwhile would come behind its bytes, so none is sent before they may have arrived (at
    the link floor); then pings go as usual, and a broker that answers none is failed over."""
    core = make(2, start=0, link_floor=floor)
    call = submit(core, 0.0, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    sent(core)
    core.handle(Received(0, p.pong(b"", [], "one", 20_000_000)[1:]), 0.1)
    due = 0.1 + 20_000_000 / floor
    assert core.next_deadline() == pytest.approx(due, abs=0.01)
    core.handle(Tick(), 1.5)  # past ping_interval + broker_timeout: still arriving
    assert sent(core) == [] and core.endpoints[0].state is State.DIPS and call.sends == 1
    core.handle(Tick(), due - 0.01)
    assert sent(core) == [] and core.endpoints[0].state is State.DIPS
    core.handle(Tick(), due + 0.01)
    [(where, ping)] = sent(core)
    assert where == 0 and isinstance(ping, p.ClientPing)
    core.handle(Tick(), due + 0.6)  # no PONG, no reply: failed over as any silent broker
    assert core.endpoints[0].state is State.DOWN and call.sends == 2


@pytest.mark.parametrize("floor", FLOORS)
def test_a_reply_leaves_what_was_sent_after_its_request_held_at_the_link_floor(
        floor: int) -> None:
    """5 MB, a small request, 5 MB (one SUBMIT each): the small one's reply says the first
    5 MB have arrived; the last may still be on their way, at the floor."""
    core = make(2, start=0, link_floor=floor)
    body = p.pack({"image": bytes(5_000_000)})
    core.submit(b"a", [p.pack({"i": 0})], 0.0, timeout=60.0)  # rides with HELLO
    core.submit(b"b", [body], 0.0, timeout=60.0)
    small = core.submit(b"c", [p.pack({"i": 0})], 0.0, timeout=60.0)
    core.submit(b"d", [body], 0.0, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    sent(core)
    assert core.next_deadline() > 2 * len(body) / floor
    core.handle(Received(0, result(small.rid, {"v": 0})), 0.05)
    assert core.next_deadline() == pytest.approx(0.05 + len(body) / floor)

def test_an_announced_reply_that_came_ends_the_hold_at_once() -> None:
    """Thirty announced 20 MB replies over a fast link: each hold ends when its reply
    comes, so a broker that hangs after them is pinged and failed over as ever."""
    core = make(2, start=0)
    calls = [submit(core, 0.0, n, timeout=60.0) for n in range(31)]
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    sent(core)
    now = 0.0
    for call in calls[:30]:
        now += 0.02
        core.handle(Received(0, p.pong(b"", [], "one", 20_000_000)[1:]), now)
        core.handle(Received(0, result(call.rid, {"v": 0})), now + 0.01)
    now += 0.01
    assert core.next_deadline() == pytest.approx(now + 0.25)  # the ping is due as ever
    core.handle(Tick(), now + 0.25)
    [(_, ping)] = sent(core)
    assert isinstance(ping, p.ClientPing)
    core.handle(Tick(), now + 0.8)  # no PONG: failed over
    assert core.endpoints[0].state is State.DOWN and calls[30].sends == 2


def test_a_reply_shortens_the_upload_hold_to_what_was_sent_after_its_request() -> None:
    core = make(2, start=0)
    big = core.submit(SVC, [p.pack({"image": bytes(20_000_000)})], 0.0, timeout=60.0)
    small = submit(core, 0.0, 1, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    sent(core)
    core.handle(Received(0, result(small.rid, {"v": 0})), 0.05)  # a fast link: all there
    assert core.next_deadline() == pytest.approx(0.05 + 0.25)
    assert not big.done


def test_many_requests_under_a_mebibyte_hold_the_ping_as_one_big_one() -> None:
    """Requests of 900 KB, none big, many at once (about 20 MB to each broker): the ping
    waits behind them all, whether they go as batched SUBMITs or one SUBMIT each
    (coalescing keys)."""
    body = p.pack({"image": bytes(900_000)})
    for keyed in (False, True):
        core = make(2, start=0)
        calls = [core.submit(SVC, [body], 0.0, timeout=60.0,
                             key=(b"k%d" % n if keyed else None)) for n in range(64)]
        core.take_actions()
        up(core, 0, 0.0)
        up(core, 1, 0.0)
        sent(core)
        core.handle(Tick(), 0.8)  # past ping_interval + broker_timeout
        assert all(c.sends <= 1 for c in calls)
        loads = [(ep, sum(len(body) for c in calls if ep in c.at)) for ep in core.endpoints]
        assert max(load for _, load in loads) > 10 * p.BIG_BODY
        for ep, load in loads:
            assert ep.state is State.DIPS
            assert ep.ping_due(0.25) >= load / p.DEFAULT_LINK_FLOOR * 0.99


def test_the_upload_hold_follows_the_order_on_the_wire_not_the_order_of_calls() -> None:
    """Batches go one SUBMIT per service: R1 and R3 (service a) go before R2 (service b),
    so R3's reply says nothing of R2's 20 MB, and the hold for them stands."""
    core = make(2, start=0)
    small_a, big_b = p.pack({"i": bytes(2_000_000)}), p.pack({"i": bytes(20_000_000)})
    r0 = core.submit(b"a", [p.pack({"i": 0})], 0.0, timeout=60.0)  # rides with HELLO
    r1 = core.submit(b"a", [small_a], 0.0, timeout=60.0)
    r2 = core.submit(b"b", [big_b], 0.0, timeout=60.0)
    r3 = core.submit(b"a", [small_a], 0.0, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    sent(core)
    core.handle(Received(0, result(r3.rid, {"v": 0})), 0.45)
    assert core.next_deadline() >= (2 * len(small_a) + len(big_b)) / p.DEFAULT_LINK_FLOOR * 0.99
    core.handle(Tick(), 1.21)
    assert core.endpoints[0].state is State.DIPS and r2.sends == 1
    assert not r0.done and not r1.done


def test_an_announcement_is_held_for_at_most_the_largest_reply() -> None:
    core = make(max_reply_bytes=5_000_000)
    call = submit(core, 0.0, timeout=60.0)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    core.handle(Received(0, p.pong(b"", [], "one", p.MAX_ANNOUNCED)[1:]), 0.1)
    assert core.next_deadline() == pytest.approx(0.1 + 5_000_000 / p.DEFAULT_LINK_FLOOR)
    assert not call.done


def test_a_long_request_on_a_live_broker_is_never_resent() -> None:
    core = make()
    call = submit(core, 0.0, timeout=60)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    now = 0.0
    for _ in range(100):  # 100 pings over ~30 s, each answered: nothing lost
        now = core.next_deadline()
        core.handle(Tick(), now)
        [(_, ping)] = sent(core)
        core.handle(Received(0, p.pong(b"", [], "one")[1:]), now + 0.01)
    assert call.sends == 1 and not call.done


def test_lost_ids_are_sent_again() -> None:
    core = make()
    a, b = submit(core, 0.0), submit(core, 0.0, 1)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    core.handle(Tick(), 0.3)
    sent(core)
    core.handle(Received(0, p.pong(b"", [b.rid], "one")[1:]), 0.31)
    core.handle(Tick(), 0.31)
    [(_, again)] = sent(core)
    assert again.rid == b.rid and b.sends == 2 and a.sends == 1


def test_a_restarted_broker_gets_again_only_what_it_lost_and_a_hello() -> None:
    core = make()
    calls = [submit(core, 0.0, i) for i in range(3)]
    core.take_actions()
    up(core, 0, 0.0, instance="one")
    sent(core)
    core.handle(Tick(), 0.3)
    sent(core)
    # a new process (libzmq connected the DEALER to it by itself): it holds what reached it
    core.handle(Received(0, p.pong(b"", [calls[0].rid], "two")[1:]), 0.31)
    core.handle(Tick(), 0.31)
    again = sent(core)
    assert [type(m) for _, m in again] == [p.ClientHello, p.ClientRequest]
    assert again[1].message.rid == calls[0].rid


def test_stale_and_duplicate_replies_are_dropped() -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Received(0, result(999, {"not": "ours"})), 0.1)
    assert not call.done
    core.handle(Received(0, result(call.rid, {"v": 0})), 0.1)
    core.handle(Received(0, result(call.rid, {"v": "again"})), 0.1)
    assert call.outcome == {"v": 0} and core.take_finished() == [call]
    core.handle(Received(0, [b"", b"garbage"]), 0.1)  # malformed: logged, dropped


def test_unknown_service_is_tried_on_the_other_brokers() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    [(first, _)] = [(i, m) for i, m in sent(core) if isinstance(m, p.ClientRequest)]
    unknown = p.error_body(UnknownService("no such service"))
    core.handle(Received(first, p.to_client(b"", SVC, [unknown], call.rid)[1:]), 0.1)
    core.handle(Tick(), 0.1)
    [(second, _)] = sent(core)
    assert second != first and not call.done
    core.handle(Received(second, p.to_client(b"", SVC, [unknown], call.rid)[1:]), 0.2)
    assert isinstance(call.outcome, UnknownService)


def test_deadline_passing_is_a_timeout() -> None:
    core = make()
    call = submit(core, 0.0, timeout=0.5)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Tick(), 0.25)
    core.handle(Received(0, p.pong(b"", [], "one")[1:]), 0.26)
    core.handle(Tick(), 0.5)
    assert isinstance(call.outcome, Timeout) and "within 0.5s" in str(call.outcome)
    core.handle(Received(0, result(call.rid, {"late": 1})), 0.6)  # the late reply is dropped
    assert isinstance(call.outcome, Timeout)


def test_no_broker_reachable_times_out_and_brokers_are_retried() -> None:
    core = make(1, connect_timeout=0.5, down_for=1.0)
    call = submit(core, 0.0, timeout=2.0)
    assert actions(core) == [Open(0)]
    core.handle(Tick(), 0.5)
    assert actions(core) == [Close(0)]
    assert core.next_deadline() == 1.5
    core.handle(Tick(), 1.5)
    assert actions(core) == [Open(0)]
    core.handle(Tick(), 2.0)
    assert isinstance(call.outcome, Timeout) and "could be reached" in str(call.outcome)


def test_retries_budget() -> None:
    core = make(2, retries=0, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    core.take_actions()
    core.handle(Lost(0), 0.1)
    assert isinstance(call.outcome, Timeout)
    assert "sent 1 time(s) (retries=0), and each time its broker failed" in str(call.outcome)


def test_window_limits_calls_in_flight() -> None:
    core = make()
    core.window = 2
    calls = [submit(core, 0.0, i) for i in range(5)]
    core.take_actions()
    up(core, 0, 0.0)
    assert len([m for _, m in sent(core) if isinstance(m, p.ClientRequest)]) == 2
    assert calls[2].deadline == float("inf")  # not started: its clock is not running
    core.handle(Received(0, result(calls[0].rid, 0)), 0.1)
    core.handle(Tick(), 0.1)
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


def test_requests_started_together_go_to_one_broker_and_the_next_pass_to_the_next() -> None:
    core = make(2, start=0)
    submit(core, 0.0)  # to broker 0 (the round-robin moves on to 1)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    core.take_actions()

    def one_pass(count: int, now: float) -> list[tuple[int, int]]:
        """``count`` calls started in one pass: (broker, requests) of each message sent."""
        core.window = 0  # held in the backlog...
        for i in range(count):
            core.submit(SVC, [p.pack({"i": i})], now, timeout=5.0)
        core.window = float("inf")  # ...and started together
        core.handle(Tick(), now)
        out = []
        for action in core.take_actions():
            if isinstance(action, Send):
                message = p.parse_broker_inbound(action.frames)
                if isinstance(message, p.ClientPing):
                    continue  # (the calls of earlier passes are still out)
                assert isinstance(message, p.ClientBatch)
                out.append((action.link, len(message.rids)))
        return out

    assert one_pass(5, 0.1) == [(1, 5)]
    assert one_pass(5, 0.2) == [(0, 5)]
    assert one_pass(5, 0.3) == [(1, 5)]
    # a pass bigger than one SUBMIT's worth moves on to the next broker with each SUBMIT
    assert one_pass(BATCH_MAX + 3, 0.4) == [(0, BATCH_MAX), (1, 3)]


def connected() -> ClientCore:
    """A core with one broker whose connection is up (DIPS), its first call answered."""
    core = make()
    opening = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Received(0, result(opening.rid, 0)), 0.0)
    core.take_actions()
    return core


def test_a_full_window_refills_in_steps_each_in_one_submit() -> None:
    core = connected()
    core.window = 32
    step = 32 // REFILL_PART
    assert step > 2
    calls = [submit(core, 0.0, i) for i in range(80)]
    assert [m.rid for _, m in sent(core)] == [c.rid for c in calls[:32]]
    for n in range(step - 1):  # fewer answers than a step: nothing new starts
        core.handle(Received(0, result(calls[n].rid, n)), 0.1)
        core.handle(Tick(), 0.1)
        assert sent(core) == [] and calls[32].deadline == float("inf")
    core.handle(Received(0, result(calls[step - 1].rid, 0)), 0.2)
    core.handle(Tick(), 0.2)
    [send] = [a for a in core.take_actions() if isinstance(a, Send)]
    message = p.parse_broker_inbound(send.frames)
    assert isinstance(message, p.ClientBatch)
    assert list(message.rids) == [c.rid for c in calls[32:32 + step]]
    # the window never holds more than 32, and every call is answered in the end
    while not all(c.done for c in calls):
        live = [c for c in calls if c.deadline != float("inf") and not c.done]
        assert 0 < len(live) <= 32
        core.handle(Received(0, result(live[0].rid, 0)), 0.3)
        core.handle(Tick(), 0.3)
        core.take_actions()


def test_places_freed_below_a_step_are_taken_after_a_short_wait_or_by_the_last_calls() -> None:
    core = connected()
    core.window = 64  # steps of 8
    calls = [submit(core, 0.0, i, timeout=30.0) for i in range(70)]
    core.take_actions()
    for n in range(5):  # 5 places free, 6 calls wait: less than a step, fewer than waiting
        core.handle(Received(0, result(calls[n].rid, n)), 0.1)
    core.handle(Tick(), 0.1)
    assert sent(core) == [] and core.next_deadline() == pytest.approx(0.1 + REFILL_WAIT_S)
    core.handle(Tick(), 0.1 + REFILL_WAIT_S / 2)
    assert sent(core) == []
    core.handle(Tick(), 0.1 + REFILL_WAIT_S)  # the long calls run on: the places are taken
    assert [m.rid for _, m in sent(core)] == [c.rid for c in calls[64:69]]
    assert calls[69].deadline == float("inf") and core.next_deadline() > 0.1 + REFILL_WAIT_S
    # one answer more: a place for every call left, so the last one starts at once
    core.handle(Received(0, result(calls[5].rid, 5)), 0.2)
    core.handle(Tick(), 0.2)
    assert [m.rid for _, m in sent(core)] == [calls[69].rid]


def test_cancel_forgets_a_call_and_closes_a_plain_connection() -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    core.take_actions()
    core.cancel(call, 0.1)
    assert Close(0) in actions(core) and core.take_finished() == []
    assert core.pending == {}


def test_requests_placed_together_travel_in_one_submit_and_come_back_in_one_result() -> None:
    core = make(1)
    core.submit(SVC, [p.pack({"i": 0})], 0.0, timeout=5.0)
    core.handle(Tick(), 0.0)
    actions(core)
    up(core, 0, 0.01)
    for i in range(1, 6):
        core.submit(SVC, [p.pack({"i": i})], 0.02, timeout=5.0)
    core.handle(Tick(), 0.02)
    batches = [a.frames for a in core.take_actions() if isinstance(a, Send)]
    parsed = [p.parse_broker_inbound(frames) for frames in batches]
    batch = [m for m in parsed if isinstance(m, p.ClientBatch)]
    assert len(batch) == 1 and len(batch[0].rids) == 5
    replies = p.to_client_batch(b"id", SVC, batch[0].rids,
                                [p.result_body(rid) for rid in batch[0].rids])[1:]
    core.handle(Received(0, replies), 0.03)
    done = {call.rid: call.outcome for call in core.take_finished()}
    assert done == {rid: rid for rid in batch[0].rids}


# --- coalescing keys, progress, refusals, complaints ---------------------------------------


def home(key: bytes, n: int) -> list[int]:
    """The order the protocol gives: highest sha1(key + endpoint) first."""
    endpoints = [f"tcp://b{i}:5555" for i in range(n)]
    return sorted(range(n), key=lambda i: hashlib.sha1(key + endpoints[i].encode()).digest(),
                  reverse=True)


def test_a_keyed_request_goes_alone_to_its_home_broker_with_its_key() -> None:
    core = make(3, start=0)
    submit(core, 0.0)
    core.take_actions()
    for i in range(3):
        up(core, i, 0.0)
    core.take_actions()
    key = b"card:42"
    [first, *_] = home(key, 3)
    calls = [submit(core, 0.1, i, key=key) for i in range(3)]
    requests = [(a.link, a.message) for a in sent(core)]
    assert [where for where, _ in requests] == [first] * 3
    assert [m.ck for _, m in requests] == [key] * 3  # each in a SUBMIT of its own
    assert [m.rid for _, m in requests] == [c.rid for c in calls]


def test_every_client_with_the_same_brokers_picks_the_same_home_whatever_their_order() -> None:
    ours = ClientCore(["tcp://a:1", "tcp://b:1", "tcp://c:1"])
    theirs = ClientCore(["tcp://c:1", "tcp://a:1", "tcp://b:1"])
    for key in (b"x", b"y", b"card:1", bytes(64)):
        mine = [ours.brokers[i] for i in home_order(key, ours.brokers)]
        yours = [theirs.brokers[i] for i in home_order(key, theirs.brokers)]
        assert mine == yours


def test_a_keyed_request_waits_for_its_home_to_connect_then_fails_over_in_home_order() -> None:
    core = make(3)
    key = b"k"
    order = home(key, 3)
    call = submit(core, 0.0, key=key)
    assert sorted(a.link for a in actions(core)) == [0, 1, 2]  # every broker opens
    for i in order[1:]:
        up(core, i, 0.01)
    assert [a for a in sent(core) if isinstance(a.message, p.ClientRequest)] == []
    core.handle(Opened(order[0]), 0.02)  # home is up: HELLO carries the key in `first`
    [hello, request] = sent(core)
    assert hello.link == order[0] and hello.message.first.ck == key
    assert request.link == order[0] and request.message.rid is None
    core.handle(Lost(order[0]), 0.03)  # home fails: the next in the order, not any
    [again] = sent(core)
    assert again.link == order[1] and again.message.ck == key and call.sends == 2


def test_progress_reaches_the_call_that_asked_and_its_hello_asks_for_it() -> None:
    core = make()
    reports: list[Any] = []
    call = submit(core, 0.0, on_progress=lambda *a: reports.append(a))
    other = submit(core, 0.0, 1)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    [hello, _] = sent(core)
    assert hello.message.progress is True
    core.handle(Received(0, welcome()), 0.0)
    core.handle(Tick(), 0.0)
    sent(core)
    for rid in (call.rid, other.rid, 999):
        core.handle(Received(0, p.to_client_progress(b"id", SVC, rid, "status", 1, 4)[1:]), 0.1)
    core.handle(Received(0, p.to_client_progress(b"id", SVC, call.rid, "data",
                                                 data=b"part")[1:]), 0.1)
    got = [(c.rid, m.kind, m.num, m.den, m.data) for c, m in core.take_progress()]
    assert got == [(call.rid, "status", 1, 4, None), (call.rid, "data", None, None, b"part")]
    core.handle(Received(0, result(call.rid, 1)), 0.2)
    core.handle(Received(0, p.to_client_progress(b"id", SVC, call.rid, "status", 4, 4)[1:]),
                0.2)
    assert core.take_progress() == []  # after the reply: nothing


def test_unknown_service_asks_every_other_broker_at_once() -> None:
    core = make(3, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    for i in range(3):
        up(core, i, 0.0)
    [first] = [a.link for a in sent(core) if isinstance(a.message, p.ClientRequest)]
    unknown = p.error_body(UnknownService("no such service"))
    core.handle(Received(first, p.to_client(b"", SVC, [unknown], call.rid)[1:]), 0.1)
    core.handle(Tick(), 0.1)
    asked = sorted(a.link for a in sent(core))
    assert asked == sorted({0, 1, 2} - {first}) and call.sends == 2  # both at once
    core.handle(Received(asked[0], p.to_client(b"", SVC, [unknown], call.rid)[1:]), 0.2)
    assert not call.done  # the other may still have it
    core.handle(Received(asked[1], result(call.rid, {"v": 1})), 0.2)
    assert call.outcome == {"v": 1}


def test_unknown_service_is_the_answer_at_once_when_the_other_brokers_are_down() -> None:
    core = make(2, start=0, connect_timeout=0.5, down_for=5.0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Tick(), 0.5)  # broker 1 never came up: down for 5 s
    assert core.endpoints[1].state is State.DOWN
    unknown = p.error_body(UnknownService("no such service"))
    core.handle(Received(0, p.to_client(b"", SVC, [unknown], call.rid)[1:]), 0.6)
    core.handle(Tick(), 0.6)
    assert isinstance(call.outcome, UnknownService)


def test_a_worker_lost_answer_is_never_sent_to_another_broker() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    up(core, 1, 0.0)
    [where] = [a.link for a in sent(core) if isinstance(a.message, p.ClientRequest)]
    lost = p.error_body(WorkerLost("service 'echo': 2 workers were lost"))
    core.handle(Received(where, p.to_client(b"", SVC, [lost], call.rid)[1:]), 0.1)
    core.handle(Tick(), 0.1)
    assert isinstance(call.outcome, WorkerLost) and call.sends == 1 and sent(core) == []


def test_a_broker_that_keeps_failing_is_complained_of_once_per_few_seconds(
        caplog: pytest.LogCaptureFixture) -> None:
    core = make(1, connect_timeout=0.5, down_for=0.5)
    submit(core, 0.0, timeout=60.0)
    now = 0.0
    with caplog.at_level(logging.DEBUG, logger="mdp.clientcore"):
        while now < 20.0:
            now = core.next_deadline()
            core.handle(Tick(), now)
            core.take_actions()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 20 / COMPLAIN_EVERY_S <= len(warnings) <= 20 / COMPLAIN_EVERY_S + 1
    assert "more failure(s)" in warnings[-1].getMessage()


def test_with_every_broker_down_the_next_deadline_is_never_now() -> None:
    core = make(2, connect_timeout=0.5, down_for=1.0)
    submit(core, 0.0, timeout=10.0)
    now, ticks = 0.0, 0
    while now < 9.9:
        deadline = core.next_deadline()
        assert deadline > now
        now = deadline
        core.handle(Tick(), now)
        core.take_actions()
        ticks += 1
    assert ticks < 40  # a few wake-ups a second at most: the shell sleeps in between


def test_a_lone_call_may_skip_the_core_only_on_a_dips_broker_with_nothing_outstanding() -> None:
    core = make(2)
    assert core.lone_start() is None  # nothing is up yet
    call = submit(core, 0.0)
    actions(core)
    up(core, 0, 0.01)
    up(core, 1, 0.01)
    core.handle(Received(0, result(call.rid, 1)), 0.02)
    assert call.done
    actions(core)
    started = core.lone_start()
    assert started is not None
    rid, ep = started
    assert rid > call.rid
    second = core.lone_start()  # the round-robin moved on, as for any call
    assert second is not None and second[1] is not ep
    # the shell hands a lone call to the core when anything but its RESULT came: it is then
    # an ordinary call, sent once to that broker at its start
    adopted = core.adopt(rid, SVC, [p.pack({"v": 1})], 1.0, timeout=5.0, priority=0, ep=ep)
    assert core.lone_start() is None  # something is outstanding now
    assert adopted.sends == 1 and core.next_deadline() == 1.0 + core.ping_interval
    core.handle(Received(ep.index, result(rid, 2)), 1.1)
    assert adopted.outcome == 2 and adopted in core.take_finished()
    core.tick(1.2)
    assert not core.pending and core.lone_start() is not None


def test_a_call_on_a_connection_whose_bare_hello_went_first_is_held_by_its_id() -> None:
    """Two brokers' cores, wired to the client core without sockets. Broker 1's connection
    came up (a bare HELLO went) while the call was at broker 0; broker 0 has no such
    service, so the call goes to broker 1 before its WELCOME has arrived. Broker 1 must hold
    it by its id: a ping then finds it there, and it is not sent (and run) a second time."""
    from mdp.brokercore import BrokerCore
    from mdp.config import BrokerConfig

    brokers = [BrokerCore(BrokerConfig(bind=["inproc://core"], unknown_grace_s=grace), 0.0,
                          instance=f"b{i}") for i, grace in enumerate((0.0, 2.0))]
    client = make(2, start=0)
    inbox: list[list[list[bytes]]] = [[], []]  # what each broker has sent, not yet read

    def carry(now: float) -> None:
        """The client's sends reach their brokers; the brokers' sends are held back."""
        for action in client.take_actions():
            if isinstance(action, Send):
                brokers[action.link].receive([b"\x00client", *action.frames], "", now)
        for i, broker in enumerate(brokers):
            broker.flush(now)
            inbox[i] += [a.frames[1:] for a in broker.take_actions()]

    def deliver(index: int, now: float) -> None:
        for frames in inbox[index]:
            client.handle(Received(index, frames), now)
        inbox[index].clear()
        client.handle(Tick(), now)

    call = client.submit(b"thumb", [p.pack({})], 0.0, timeout=10.0)
    client.handle(Opened(0), 0.0)
    client.handle(Opened(1), 0.0)
    carry(0.0)
    deliver(0, 0.01)  # WELCOME, then unknown_service: the call goes to broker 1
    carry(0.01)
    deliver(1, 0.02)  # broker 1's WELCOME: its connection speaks DIPS now
    assert not call.done
    client.handle(Tick(), 0.02 + client.ping_interval)  # quiet for a while: a ping
    carry(0.02 + client.ping_interval)
    deliver(1, 0.03 + client.ping_interval)
    assert not call.done and call.sends == 2  # broker 0, then broker 1, once
    assert brokers[1].dispatcher.counters.requests == 1
