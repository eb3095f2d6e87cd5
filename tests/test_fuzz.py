"""Fuzzing with hypothesis: the parsers in-process, then a real broker and a real worker.

Whatever arrives, parsers raise only ProtocolError/BadRequest, and the processes go on
serving a well-behaved client with correct replies, with bounded memory.
"""

from __future__ import annotations

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterkit import Cluster
from mdp import protocol as p
from mdp.errors import BadRequest, ProtocolError
from testkit import BrokerLoad, broker_status, rss_bytes, wait_for

HEADERS = [b"", p.CLIENT, p.WORKER, p.DIPS_CLIENT, b"DIPC01", b"MDPC02"]
COMMANDS = [bytes([i]) for i in range(12)]
VALID = [
    p.client_request(b"echo", [msgpack.packb({"x": 1})]),
    p.client_submit(b"echo", 7, 1000, [msgpack.packb({})]),
    p.client_hello(p.First(8, 1000, 0)),
    p.client_ping([1, 2, 3]),
    p.ready(b"fuzzed", {"pid": 1, "host": "h"}),
    p.signal(p.HEARTBEAT),
    p.bounce(b"client"),
    p.busy(True),
    p.reply(b"client", [b"body"]),
    p.signal(p.DISCONNECT),
]

frame = st.one_of(st.sampled_from(HEADERS + COMMANDS), st.binary(max_size=64))
random_message = st.lists(frame, min_size=1, max_size=10)


@st.composite
def mutated_message(draw: st.DrawFn) -> list[bytes]:
    frames = list(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(frames) - 1))
        action = draw(st.sampled_from(["replace", "truncate", "drop", "insert", "flip"]))
        if action == "replace":
            frames[i] = draw(frame)
        elif action == "truncate":
            frames[i] = frames[i][: draw(st.integers(0, max(0, len(frames[i]) - 1)))]
        elif action == "drop" and len(frames) > 1:
            del frames[i]
        elif action == "insert":
            frames.insert(i, draw(frame))
        elif frames[i]:
            j = draw(st.integers(0, len(frames[i]) - 1))
            frames[i] = frames[i][:j] + bytes([frames[i][j] ^ 0xFF]) + frames[i][j + 1:]
    return frames


any_message = st.one_of(random_message, mutated_message())


@settings(max_examples=400, deadline=None)
@given(any_message)
def test_broker_parser_raises_only_protocol_error(frames: list[bytes]) -> None:
    try:
        p.parse_broker_inbound(frames)
    except ProtocolError:
        pass


@settings(max_examples=400, deadline=None)
@given(any_message)
def test_worker_parser_raises_only_protocol_error(frames: list[bytes]) -> None:
    try:
        p.parse_worker_inbound(frames)
    except ProtocolError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4),
                                                                       children, max_size=4),
    max_leaves=30,
)
body = st.one_of(st.binary(max_size=200), json_like.map(lambda v: msgpack.packb(v)))


@settings(max_examples=400, deadline=None)
@given(st.lists(body, min_size=0, max_size=3))
def test_request_decoding_raises_only_bad_request(frames: list[bytes]) -> None:
    try:
        request = p.decode_request(frames)
    except BadRequest:
        return
    assert isinstance(request, dict)


@pytest.mark.slow
@settings(max_examples=600, deadline=None,  # 3,000 messages
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_a_live_broker(data: st.DataObject, fuzz_target: dict) -> None:
    sock = fuzz_target["sock"]
    for _ in range(5):
        sock.send_multipart(data.draw(any_message))
    fuzz_target["sent"] += 5


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = Cluster(tmp_path_factory.mktemp("fuzz"))
    ctx = zmq.Context()
    try:
        broker = cluster.broker()
        worker = cluster.worker([broker])
        good = BrokerLoad([broker.endpoint], threads=1, client={"timeout": 15.0}).start()
        wait_for(lambda: good.ok >= 10 or good.failures, 10, "the good client")
        yield {"broker": broker, "worker": worker, "good": good, "ctx": ctx,
               "rss_before": rss_bytes(broker.pid)}
        good.stop(20)
    finally:
        cluster.stop_all()
        ctx.destroy(linger=0)


@pytest.fixture
def fuzz_target(live: dict) -> dict:
    if "sock" not in live:
        sock = live["ctx"].socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 0
        sock.connect(live["broker"].endpoint)
        live["sock"] = sock
        live["sent"] = 0
    return live


@pytest.mark.slow
def test_after_the_fuzz_the_broker_serves_with_bounded_memory(live: dict) -> None:
    good = live["good"]
    served = good.ok
    wait_for(lambda: good.ok >= served + 50 or good.failures, 30, "service to go on")
    assert good.failures == []
    assert live.get("sent", 0) >= 1000, "the fuzz test did not run first"
    status = broker_status(live["broker"].endpoint)
    assert status is not None and status.counters.dropped > 100
    growth_mb = (rss_bytes(live["broker"].pid) - live["rss_before"]) / 2**20
    print(f"\nbroker after {live['sent']} fuzzed messages: {status.counters.dropped} "
          f"dropped, RSS grew {growth_mb:.1f} MB; good client served {good.ok}")
    assert growth_mb < 50


@pytest.mark.slow
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(body, min_size=1, max_size=3))
def test_fuzz_a_live_worker_through_the_broker(frames: list[bytes], live: dict) -> None:
    sock = live.setdefault("client_sock", _client_socket(live))
    sock.send_multipart([b"", p.CLIENT, b"echo", *frames])
    assert sock.poll(10_000), "the worker stopped answering"
    header, service, *reply = sock.recv_multipart()[1:]
    assert (header, service) == (p.CLIENT, b"echo")
    decoded = msgpack.unpackb(reply[0])
    assert "result" in decoded or decoded["error"]["code"] == "bad_request"
    assert live["worker"].popen.poll() is None


def _client_socket(live: dict) -> zmq.Socket:
    sock = live["ctx"].socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(live["broker"].endpoint)
    return sock
