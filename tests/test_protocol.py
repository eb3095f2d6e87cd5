"""Unit tests of the wire format: parsing, building, and refusing malformed frames."""

from __future__ import annotations

import msgpack
import pytest

from mdp import protocol as p
from mdp.clock import Backoff, poll_timeout_ms
from mdp.errors import BadRequest, Overloaded, ProtocolError, WorkerError


def test_standard_client_request() -> None:
    msg = p.parse_broker_inbound([b"", b"MDPC01", b"echo", b"body"])
    assert msg == p.ClientRequest(b"echo", [b"body"])


def test_dips_client_request_round_trip() -> None:
    frames = p.client_xrequest(b"echo", 42, 1500, [b"body"])
    assert p.parse_broker_inbound(frames) == p.ClientRequest(b"echo", [b"body"], 42, 1500)


@pytest.mark.parametrize("extra", [[b"\xc1"], [msgpack.packb([1])], [b"a", b"b"]])
def test_ready_with_other_extra_frames_is_a_standard_worker(extra: list[bytes]) -> None:
    frames = [b"", b"MDPW01", b"\x01", b"svc", *extra]
    assert p.parse_broker_inbound(frames) == p.WorkerReady(b"svc", None)


def test_worker_commands() -> None:
    assert p.parse_broker_inbound(p.ready(b"echo", None)) == p.WorkerReady(b"echo", None)
    meta = {"pid": 1}
    assert p.parse_broker_inbound(p.ready(b"echo", meta)) == p.WorkerReady(b"echo", meta)
    assert p.parse_broker_inbound(p.reply(b"cli", [b"x"])) == p.WorkerReply(b"cli", [b"x"])
    assert p.parse_broker_inbound(p.signal(p.HEARTBEAT)) == p.WorkerSignal(p.HEARTBEAT)
    assert p.parse_broker_inbound(p.signal(p.BOUNCE, b"c")) == p.WorkerSignal(p.BOUNCE, b"c")


@pytest.mark.parametrize("frames", [
    [],
    [b"x"],
    [b"nonempty", b"MDPC01", b"echo"],
    [b"", b"MDPC02", b"echo"],
    [b"", b"MDPW01", b"\x01"],
    [b"", b"MDPW01", b"\x03", b"client"],  # REPLY without empty frame
    [b"", b"MDPW01", b"\x04", b"extra"],
    [b"", b"MDPW01", b"\x99"],
    [b"", b"DIPC01", b"\x01", b"\x92\x01"],  # PING frame is a truncated list
    [b"", b"DIPC01", b"\x01", msgpack.packb(["a"])],
    [b"", b"DIPC01", b"\x03", b"echo", msgpack.packb([1, -5]), b"b"],
    [b"", b"DIPC01", b"\x03", b"echo"],
    [b"", b"DIPC01", b"\x77"],
])
def test_malformed_broker_input_raises_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_broker_inbound(frames)


@pytest.mark.parametrize("frames", [
    [b"", b"MDPW01"],
    [b"", b"MDPC01", b"\x02"],
    [b"", b"MDPW01", b"\x02", b"client"],
    [b"", b"MDPW01", b"\x0a", b"client", b""],
    [b"", b"MDPW01", b"\x0a", b"client", b"", b"\xc1"],
    [b"", b"MDPW01", b"\x04", b"x"],
    [b"", b"MDPW01", b"\x42"],
])
def test_malformed_worker_input_raises_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_worker_inbound(frames)


def test_worker_request_forms() -> None:
    std = p.to_worker(b"w", b"cli", [b"body"], False)[1:]
    assert p.parse_worker_inbound(std) == p.BrokerRequest(b"cli", [b"body"], None)
    for ttl in (0, 5, 70_000, 2**40):
        ext = p.to_worker(b"w", b"cli", [b"body"], True, ttl)[1:]
        assert p.parse_worker_inbound(ext) == p.BrokerRequest(b"cli", [b"body"], {"ttl_ms": ttl})
    plain = p.to_worker(b"w", b"cli", [b"body"], True)[1:]
    assert p.parse_worker_inbound(plain) == p.BrokerRequest(b"cli", [b"body"], {})


def test_replies_round_trip() -> None:
    assert p.decode_reply([p.result_body({"a": [1, 2]})]) == {"a": [1, 2]}
    raw = p.pack({"x": b"\x00" * 10})
    assert p.decode_reply([p.raw_result_body(raw)]) == {"x": b"\x00" * 10}
    with pytest.raises(Overloaded) as info:
        p.decode_reply([p.error_body(Overloaded("full"))])
    assert info.value.message == "full"
    with pytest.raises(BadRequest) as bad:
        p.decode_reply([p.error_body(BadRequest("no", "pSN"))])
    assert bad.value.field == "pSN"
    with pytest.raises(WorkerError) as other:
        p.decode_reply([p.pack({"error": {"code": "render_failed", "message": "m"}})])
    assert other.value.code == "render_failed"
    for body in ([b"\xc1"], [p.pack([1])], [], [b"a", b"b"]):
        with pytest.raises(ProtocolError):
            p.decode_reply(body)


def test_decode_request_names_what_is_wrong() -> None:
    assert p.decode_request([p.pack({"a": 1})]) == {"a": 1}
    for body, words in (([b"\xc1"], "msgpack"), ([p.pack([1])], "map"), ([], "frame")):
        with pytest.raises(BadRequest, match=words):
            p.decode_request(body)


@pytest.mark.parametrize("name,ok", [
    (b"echo", True), (b"ecard", True), (b"a.b-c_d", True), (b"", False), (b"-x", False),
    (b"has space", False), (b"x" * 100, True), (b"x" * 101, False), ("é".encode(), False),
])
def test_service_names(name: bytes, ok: bool) -> None:
    assert p.valid_service(name) is ok


def test_poll_timeout_ms() -> None:
    assert poll_timeout_ms(10.0, 10.5) == 0
    assert poll_timeout_ms(10.0, 10.0) == 0
    assert poll_timeout_ms(10.0001, 10.0) == 1
    assert poll_timeout_ms(11.0, 10.0) == 1000


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next() == 0.1
