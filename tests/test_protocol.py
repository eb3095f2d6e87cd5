"""Unit tests of the wire format: parsing, building, and refusing malformed frames."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from mdp import protocol as p
from mdp.clock import Backoff, poll_timeout_ms
from mdp.errors import BadRequest, Overloaded, ProtocolError, WorkerError


def test_standard_client_request() -> None:
    msg = p.parse_broker_inbound([b"", b"MDPC01", b"echo", b"body"])
    assert msg == p.ClientRequest(b"echo", [b"body"])


def test_submit_round_trip() -> None:
    frames = p.client_submit(b"echo", 42, 1500, [b"body"], priority=1)
    assert p.parse_broker_inbound(frames) == p.ClientRequest(b"echo", [b"body"], 42, 1500, 1)
    assert p.parse_broker_inbound(p.client_submit(b"e", 1, 2, [b"b"])).priority == 0


def test_batched_submit_and_result_round_trip() -> None:
    frames = p.client_submit_batch(b"echo", [1, 2], 500, [b"a", b"b"], priority=-1)
    assert p.parse_broker_inbound(frames) == p.ClientBatch(b"echo", [1, 2], [b"a", b"b"], 500, -1)
    result = p.to_client_batch(b"c", b"echo", [1, 2], [b"x", b"y"])[1:]
    assert p.parse_client_inbound(result) == p.Results(b"echo", [1, 2], [b"x", b"y"])
    assert p.parse_broker_inbound(p.client_hello(batch=True)) == p.ClientHello(None, True)


def test_priorities_are_clamped() -> None:
    meta = msgpack.packb({"id": 1, "ttl_ms": 5, "pri": 99})
    assert p.parse_broker_inbound([b"", p.DIPS_CLIENT, p.SUBMIT, b"e", meta]).priority == 1


def test_hello_carries_the_version_and_the_first_request() -> None:
    assert p.parse_broker_inbound(p.client_hello()) == p.ClientHello(None)
    first = p.First(7, 900, -1)
    assert p.parse_broker_inbound(p.client_hello(first)) == p.ClientHello(first)
    old = [b"", p.DIPS_CLIENT, p.HELLO, msgpack.packb({"dips": 1})]
    with pytest.raises(ProtocolError, match="version"):
        p.parse_broker_inbound(old)


@pytest.mark.parametrize("extra", [[b"\xc1"], [msgpack.packb([1])], [b"a", b"b"],
                                   [msgpack.packb({"pid": 1})]])  # v1 metadata: no "dips"
def test_ready_without_v2_metadata_is_a_standard_worker(extra: list[bytes]) -> None:
    frames = [b"", b"MDPW01", b"\x01", b"svc", *extra]
    assert p.parse_broker_inbound(frames) == p.WorkerReady(b"svc", None)


def test_worker_commands() -> None:
    assert p.parse_broker_inbound(p.ready(b"echo", None)) == p.WorkerReady(b"echo", None)
    ready = p.parse_broker_inbound(p.ready(b"echo", {"pid": 1}))
    assert ready == p.WorkerReady(b"echo", {"dips": 2, "pid": 1})
    assert p.parse_broker_inbound(p.reply(b"key", [b"x"])) == p.WorkerReply(b"key", [b"x"])
    assert p.parse_broker_inbound(p.signal(p.HEARTBEAT)) == p.WorkerSignal(p.HEARTBEAT)
    assert p.parse_broker_inbound(p.bounce(b"k")) == p.WorkerSignal(p.BOUNCE, b"k")
    assert p.parse_broker_inbound(p.busy()) == p.WorkerSignal(p.BUSY)
    assert p.parse_broker_inbound(p.busy(True)) == p.WorkerSignal(p.BUSY, draining=True)
    assert p.parse_broker_inbound(p.signal(p.FREE)) == p.WorkerSignal(p.FREE)


def test_reply_without_the_empty_frame_is_accepted() -> None:
    """The ZeroMQ guide's PHP worker leaves the empty frame out."""
    frames = [b"", b"MDPW01", b"\x03", b"key", b"body"]
    assert p.parse_broker_inbound(frames) == p.WorkerReply(b"key", [b"body"])
    standard = [b"", b"MDPW01", b"\x03", b"key", b"", b"body"]
    assert p.parse_broker_inbound(standard) == p.WorkerReply(b"key", [b"body"])


@pytest.mark.parametrize("frames", [
    [],
    [b"x"],
    [b"nonempty", b"MDPC01", b"echo"],
    [b"", b"MDPC02", b"echo"],
    [b"", b"MDPW01", b"\x01"],
    [b"", b"MDPW01", b"\x03", b"client"],  # REPLY without a body
    [b"", b"MDPW01", b"\x04", b"extra"],
    [b"", b"MDPW01", b"\x06"],  # BUSY without meta
    [b"", b"MDPW01", b"\x06", b"\x92\x01"],  # BUSY meta is not a map
    [b"", b"MDPW01", b"\x08"],  # BOUNCE without key
    [b"", b"MDPW01", b"\x99"],
    [b"", b"DIPC01", b"\x01", msgpack.packb([1])],  # version-1 PING: an unknown header
    [b"", b"DIPC02", b"\x05", b"\x92\x01"],  # PING meta truncated
    [b"", b"DIPC02", b"\x05", msgpack.packb({"ids": ["a"]})],
    [b"", b"DIPC02", b"\x03", b"echo", msgpack.packb({"id": 1, "ttl_ms": -5}), b"b"],
    [b"", b"DIPC02", b"\x03", b"echo", msgpack.packb({"id": 1}), b"b"],
    [b"", b"DIPC02", b"\x03", b"echo"],
    [b"", b"DIPC02", b"\x01", msgpack.packb({"dips": 2, "first": {"id": "x", "ttl_ms": 1}})],
    [b"", b"DIPC02", b"\x77", b"\x80"],
    [b"", b"DIPC02", b"\x08"],  # CANCEL without meta
    [b"", b"DIPC02", b"\x08", msgpack.packb({"ids": [1, -2]})],
    [b"", b"DIPC02", b"\x08", msgpack.packb({"ids": 1})],
    [b"", b"DIPC02", b"\x08", msgpack.packb({"ids": [True]})],
    [b"", b"DIPC02", b"\x08", msgpack.packb([1])],
    [b"", b"DIPC02", b"\x08", msgpack.packb({"ids": [1]}), b"extra"],
    [b"", b"DIPC02", b"\x03", b"e", msgpack.packb({"ids": [1, 2], "ttl_ms": 5}), b"one body"],
    [b"", b"DIPC02", b"\x03", b"e", msgpack.packb({"ids": [], "ttl_ms": 5})],
    [b"", b"MDPW01", b"\x0d"],  # REPLIES without meta
    [b"", b"MDPW01", b"\x0d", msgpack.packb({"keys": [b"k1", b"k2"]}), b"one body"],
    [b"", b"MDPW01", b"\x0d", msgpack.packb({"keys": []})],
    [b"", b"MDPW01", b"\x0d", msgpack.packb({"keys": ["str"]}), b"b"],
    [b"", b"MDPW01", b"\x0d", msgpack.packb({"keys": [b"k"] * 65}), *[b"b"] * 65],
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
    [b"", b"MDPW01", b"\x0a", b"client", b"", msgpack.packb({"ttl_ms": "x"})],
    [b"", b"MDPW01", b"\x04", b"x"],
    [b"", b"MDPW01", b"\x09", msgpack.packb({"dips": 1})],
    [b"", b"MDPW01", b"\x0b"],
    [b"", b"MDPW01", b"\x42"],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b"k"], "ttl_ms": [1], "hold": [False]})],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b"k"], "ttl_ms": [1]}), b"b"],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b"k"], "ttl_ms": [-1], "hold": [False]}),
     b"b"],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b"k"], "ttl_ms": [1], "hold": [1]}), b"b"],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b"k", b"l"], "ttl_ms": [1, 1],
                                             "hold": [False, True]}), b"one body"],
    [b"", b"MDPW01", b"\x0c", msgpack.packb({"keys": [b""], "ttl_ms": [1], "hold": [False]}),
     b"b"],
])
def test_malformed_worker_input_raises_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_worker_inbound(frames)


def test_worker_task_forms() -> None:
    std = p.to_worker(b"w", b"key", [b"body"], False)[1:]
    assert p.parse_worker_inbound(std) == p.BrokerTask(b"key", [b"body"])
    for ttl in (0, 5, 70_000, 2**40):
        ext = p.to_worker(b"w", b"key", [b"body"], True, ttl)[1:]
        assert p.parse_worker_inbound(ext) == p.BrokerTask(b"key", [b"body"], ttl, False, True)
    held = p.to_worker(b"w", b"key", [b"body"], True, None, hold=True)[1:]
    assert p.parse_worker_inbound(held) == p.BrokerTask(b"key", [b"body"], None, True, True)
    keyed = p.to_worker(b"w", b"key", [b"body"], True, 5, ck=b"job-42")[1:]
    assert p.parse_worker_inbound(keyed) == p.BrokerTask(b"key", [b"body"], 5, False, True,
                                                         b"job-42")
    assert p.parse_worker_inbound(p.recall(b"w", b"k")[1:]) == p.BrokerRecall(b"k")
    welcome = p.parse_worker_inbound(p.worker_welcome(b"w", {"instance": "i"})[1:])
    assert welcome == p.BrokerWelcome({"dips": 2, "instance": "i"})


def test_tasks_and_replies_round_trip() -> None:
    frames = p.to_worker_batch(b"w", [b"k1", b"k2"], [b"b1", b"b2"], [5, None], [False, True])
    assert frames[0] == b"w"
    assert p.parse_worker_inbound(frames[1:]) == p.BrokerTasks([
        p.BrokerTask(b"k1", [b"b1"], 5, False, True),
        p.BrokerTask(b"k2", [b"b2"], None, True, True)])
    replies = p.parse_broker_inbound(p.replies([b"k1", b"k2"], [b"r1", b"r2"]))
    assert replies == p.WorkerReplies([b"k1", b"k2"], [b"r1", b"r2"])
    keyed = p.to_worker_batch(b"w", [b"k1", b"k2"], [b"b1", b"b2"], [5, 5], [False, False],
                              [None, b"job-42"])
    assert [t.ck for t in p.parse_worker_inbound(keyed[1:]).tasks] == [None, b"job-42"]


@pytest.mark.parametrize("cks", [[b"a"], [b"a", b""], [b"a", "str"], [b"a", b"x" * 65], b"ab"])
def test_tasks_with_a_coalescing_key_list_that_does_not_fit_are_refused(cks: Any) -> None:
    meta = {"keys": [b"k1", b"k2"], "ttl_ms": [5, 5], "hold": [False, False], "ck": cks}
    frames = [b"", p.WORKER, p.TASKS, p.pack_meta(meta), b"b1", b"b2"]
    with pytest.raises(ProtocolError, match="'ck'"):
        p.parse_worker_inbound(frames)
    task = [b"", p.WORKER, p.TASK, b"key", b"", p.pack_meta({"ck": b"x" * 65}), b"body"]
    with pytest.raises(ProtocolError, match="'ck'"):
        p.parse_worker_inbound(task)


def test_client_inbound_forms() -> None:
    reply = p.to_client(b"c", b"echo", [b"body"], 9)[1:]
    assert p.parse_client_inbound(reply) == p.Result(b"echo", [b"body"], 9)
    assert p.parse_client_inbound(p.to_client(b"c", b"e", [b"b"], None)[1:]).rid is None
    assert p.parse_client_inbound(p.pong(b"c", [3], "inst")[1:]) == p.Pong([3], "inst")
    announced = p.parse_client_inbound(p.pong(b"c", [], "inst", 20_000_000)[1:])
    assert announced == p.Pong([], "inst", 20_000_000)
    welcome = p.parse_client_inbound(p.client_welcome(b"c", {"instance": "i"})[1:])
    assert welcome == p.Welcome({"dips": 2, "instance": "i"})


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
    assert p.is_error_body([p.error_body(Overloaded("x"))])
    assert p.error_code([p.error_body(Overloaded("x"))]) == "overloaded"


def test_a_standard_workers_plain_reply_is_handed_back_as_it_is() -> None:
    assert p.decode_reply([b"HELLO"]) == b"HELLO"
    assert p.decode_reply([b"\xc1"]) == b"\xc1"
    assert p.decode_reply([p.pack([1])]) == p.pack([1])
    assert p.decode_reply([b"a", b"b"]) == [b"a", b"b"]
    assert p.decode_reply([]) == []


def test_php_strings_holding_bytes_decode_without_loss() -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\xfe\x80"
    packed = b"\x81\xa5image" + bytes([0xA0 | len(jpeg)]) + jpeg  # bytes packed as a str
    request = p.decode_request([packed])
    assert p.as_bytes(request["image"]) == jpeg


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


# --- progress and coalescing keys (wire version 2, opt-in by handshake flags) -------------


def test_progress_round_trips_worker_to_broker_to_client() -> None:
    status = p.parse_broker_inbound(p.progress(b"k1", "status", 3, 10))
    assert status == p.WorkerProgress(b"k1", "status", 3, 10, None)
    data = p.parse_broker_inbound(p.progress(b"k1", "data", data=b"chunk"))
    assert data == p.WorkerProgress(b"k1", "data", None, None, b"chunk")
    relayed = p.to_client_progress(b"id", b"echo", 7, "warning", data=b"careful")[1:]
    assert p.parse_client_inbound(relayed) == p.RequestProgress(b"echo", 7, "warning", None, None,
                                                         b"careful")
    relayed = p.to_client_progress(b"id", b"echo", 7, "status", 1, 2)[1:]
    assert p.parse_client_inbound(relayed) == p.RequestProgress(b"echo", 7, "status", 1, 2)


def test_hello_asks_for_progress_and_carries_a_first_key() -> None:
    hello = p.parse_broker_inbound(p.client_hello(p.First(5, 100, 0, b"key"), progress=True))
    assert hello == p.ClientHello(p.First(5, 100, 0, b"key"), False, True)


def test_a_coalescing_key_rides_on_submit() -> None:
    frames = p.client_submit(b"thumb", 3, 900, [b"body"], ck=b"\x01" * 20)
    assert p.parse_broker_inbound(frames).ck == b"\x01" * 20  # type: ignore[union-attr]
    assert p.parse_broker_inbound(p.client_submit(b"t", 3, 9, [b"b"])).ck is None  # type: ignore[union-attr]


def _submit_meta(meta: dict[str, object], bodies: int = 1) -> list[bytes]:
    return [b"", p.DIPS_CLIENT, p.SUBMIT, b"svc", msgpack.packb(meta), *[b"b"] * bodies]


@pytest.mark.parametrize("frames", [
    [b"", p.WORKER, p.PROGRESS, b"k"],  # no meta
    [b"", p.WORKER, p.PROGRESS, b"k", msgpack.packb({"kind": "status"})],  # no num/den
    [b"", p.WORKER, p.PROGRESS, b"k", msgpack.packb({"kind": "shout"}), b"x"],
    [b"", p.WORKER, p.PROGRESS, b"k", msgpack.packb({"kind": "data"})],  # no data frame
    [b"", p.WORKER, p.PROGRESS, b"k", msgpack.packb({"kind": "status", "num": 1, "den": 2}),
     b"unexpected"],
    [b"", p.WORKER, p.PROGRESS, b"k", msgpack.packb({"kind": "status", "num": -1, "den": 2})],
    _submit_meta({"id": 1, "ttl_ms": 5, "ck": "text, not bin"}),
    _submit_meta({"id": 1, "ttl_ms": 5, "ck": b""}),
    _submit_meta({"id": 1, "ttl_ms": 5, "ck": b"x" * 65}),
    _submit_meta({"ids": [1, 2], "ttl_ms": 5, "ck": b"x"}, bodies=2),
])
def test_malformed_progress_and_keys_are_protocol_errors(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_broker_inbound(frames)


@pytest.mark.parametrize("frames", [
    [b"", p.DIPS_CLIENT, p.CPROGRESS, b"svc", msgpack.packb({"kind": "data"}), b"x"],  # no id
    [b"", p.DIPS_CLIENT, p.CPROGRESS, b"svc", msgpack.packb({"id": 1, "kind": "status"})],
    [b"", p.DIPS_CLIENT, p.CPROGRESS, b"svc"],
])
def test_malformed_client_progress_is_a_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_client_inbound(frames)


def test_a_heartbeat_may_announce_a_reply_or_a_task() -> None:
    assert p.parse_broker_inbound(p.signal(p.HEARTBEAT)) == p.WorkerSignal(p.HEARTBEAT)
    announced = p.parse_broker_inbound(p.sending(3_000_000))
    assert announced == p.WorkerSignal(p.HEARTBEAT, sending=3_000_000)
    task = p.parse_worker_inbound(p.sending_to_worker(b"w", 3_000_000)[1:])
    assert task == p.BrokerSignal(p.HEARTBEAT, 3_000_000)
    with pytest.raises(ProtocolError, match="HEARTBEAT 'sending'"):
        p.parse_worker_inbound([b"", p.WORKER, p.HEARTBEAT, msgpack.packb({"sending": -1})])


@pytest.mark.parametrize("sending", [-1, True, 1.5, "20", 1 << 41, None])
def test_an_announcement_of_anything_but_a_byte_count_is_a_protocol_error(sending: Any) -> None:
    meta = msgpack.packb({"lost": [], "instance": "i", "sending": sending})
    with pytest.raises(ProtocolError, match="PONG 'sending'"):
        p.parse_client_inbound([b"", p.DIPS_CLIENT, p.PONG, meta])
    with pytest.raises(ProtocolError, match="HEARTBEAT 'sending'"):
        p.parse_broker_inbound([b"", p.WORKER, p.HEARTBEAT, msgpack.packb({"sending": sending})])


def test_cancel_round_trips_and_names_only_ids() -> None:
    frames = p.client_cancel([3, 1, 2])
    assert frames[:3] == [b"", p.DIPS_CLIENT, p.CANCEL]
    assert p.parse_broker_inbound(frames) == p.ClientCancel([3, 1, 2])
    assert p.parse_broker_inbound(p.client_cancel([])) == p.ClientCancel([])
    # the broker's WELCOME offers it; a client reads the flag from the meta map
    welcome = p.parse_client_inbound(p.client_welcome(b"c", {"instance": "i", "cancel": True})[1:])
    assert isinstance(welcome, p.Welcome) and welcome.meta["cancel"] is True
