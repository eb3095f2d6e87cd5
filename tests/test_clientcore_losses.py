"""The client core keeps the workers each request has cost, as its brokers tell (LOSSES),
and carries the count when it sends the request to another broker (docs/PROTOCOL.md,
"Poisoned requests"). Explicit clock, no sockets; the helpers are test_clientcore's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from test_clientcore import SVC, make, result, sent, submit, up

from mdp import protocol as p
from mdp.actions import Opened, Received, Tick
from mdp.clientcore import ClientCore
from mdp.errors import WorkerLost


def note(rid: int, losses: Any) -> list[bytes]:
    """LOSSES as a broker sends it (``losses`` as it is on the wire)."""
    meta = {"id": rid, "losses": losses}
    return [b"", p.DIPS_CLIENT, p.LOSSES, SVC, p.pack(meta)]


def submit_meta(frames: list[bytes]) -> dict[str, Any]:
    meta = p.unpack_meta(frames[4], "SUBMIT")
    assert isinstance(meta, dict)
    return meta


def fail_over(core: ClientCore, quiet_since: float) -> list[Any]:
    """Broker 0 answers no PING: the core gives it up; what it sent (raw frames)."""
    core.handle(Tick(), quiet_since + 0.25)  # the PING
    core.take_actions()
    core.handle(Tick(), quiet_since + 0.76)  # no PONG within broker_timeout
    return [a.frames for a in core.take_actions() if hasattr(a, "frames")]


def on_broker_0(core: ClientCore) -> Any:
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0, cancel=True)
    up(core, 1, 0.0)
    [(where, request)] = [(i, m) for i, m in sent(core) if isinstance(m, p.ClientRequest)]
    assert where == 0 and request.losses == 0
    return call


def test_hello_asks_for_losses() -> None:
    core = make()
    submit(core, 0.0)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    [(_, hello), _] = sent(core)
    assert isinstance(hello, p.ClientHello) and hello.losses is True


def test_a_request_told_of_a_loss_carries_the_count_to_the_broker_it_fails_over_to() -> None:
    core = make(2, start=0)
    call = on_broker_0(core)
    core.handle(Received(0, note(call.rid, 1)), 0.1)
    frames = fail_over(core, 0.1)
    [submitted] = [f for f in frames if f[2] == p.SUBMIT]
    assert submit_meta(submitted) == {"id": call.rid, "ttl_ms": submit_meta(submitted)["ttl_ms"],
                                      "losses": 1}
    answer = p.to_client(b"id", SVC, [p.error_body(WorkerLost("2 workers lost"))], call.rid)
    core.handle(Received(1, answer[1:]), 1.0)
    assert isinstance(call.outcome, WorkerLost)


def test_a_request_never_told_of_a_loss_is_sent_again_as_ever() -> None:
    core = make(2, start=0)
    call = on_broker_0(core)
    frames = fail_over(core, 0.0)
    [submitted] = [f for f in frames if f[2] == p.SUBMIT]
    assert "losses" not in submit_meta(submitted) and call.sends == 2


def test_the_highest_count_told_is_kept() -> None:
    core = make(2, start=0)
    call = on_broker_0(core)
    core.handle(Received(0, note(call.rid, 3)), 0.1)
    core.handle(Received(0, note(call.rid, 1)), 0.1)  # a lower one, later: kept at 3
    [submitted] = [f for f in fail_over(core, 0.1) if f[2] == p.SUBMIT]
    assert submit_meta(submitted)["losses"] == 3


def test_a_pong_that_lost_it_sends_it_again_with_its_count() -> None:
    core = make(1)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    sent(core)
    core.handle(Received(0, note(call.rid, 1)), 0.1)
    core.handle(Received(0, p.pong(b"id", [call.rid], "one")[1:]), 0.2)
    core.handle(Tick(), 0.2)
    [(_, again)] = sent(core)
    assert isinstance(again, p.ClientRequest) and again.losses == 1


def test_a_broker_not_yet_welcoming_gets_the_count_in_hellos_first() -> None:
    core = make(2, start=0)
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Opened(1), 0.0)  # up, HELLO sent, no WELCOME yet
    core.take_actions()
    core.handle(Received(0, note(call.rid, 1)), 0.1)
    frames = fail_over(core, 0.1)
    hellos = [p.parse_broker_inbound(f) for f in frames if f[1] == p.DIPS_CLIENT
              and f[2] == p.HELLO]
    assert [h.first for h in hellos if isinstance(h, p.ClientHello)] == [
        p.First(call.rid, hellos[0].first.ttl_ms, 0, None, 1)]  # type: ignore[union-attr]


def test_a_count_for_a_request_not_outstanding_is_ignored() -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    core.handle(Received(0, note(call.rid + 100, 1)), 0.1)
    core.handle(Received(0, result(call.rid, {"v": 1})), 0.2)
    core.handle(Received(0, note(call.rid, 1)), 0.3)  # after its reply
    assert core.losses == {}


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", p.MAX_LOSSES + 1, None])
def test_a_malformed_count_is_dropped_with_a_warning(bad: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    core = make()
    call = submit(core, 0.0)
    core.take_actions()
    up(core, 0, 0.0)
    with caplog.at_level(logging.WARNING, logger="mdp.clientcore"):
        core.handle(Received(0, note(call.rid, bad)), 0.1)
    assert core.losses == {} and "'losses'" in caplog.text
    core.handle(Received(0, result(call.rid, {"v": 1})), 0.2)
    assert call.outcome == {"v": 1}
