"""Interop with standard 7/MDP peers written here straight from the RFC frames.

* A minimal client (REQ) and a minimal worker (DEALER) work through our broker, and see
  exactly the standard frames, none of the DIPS extensions.
* Our client and worker work through a minimal standard broker.
* Quirks of peers nobody here wrote, found by running the ZeroMQ guide's Majordomo
  examples against DIPS (``/work/peers/README.md``), each reproduced by a peer of our own
  (``interop_peers.py``): a REPLY without the empty frame after the client address, a
  reply body that is plain bytes, image bytes sent as msgpack str, and a broker that never
  answers the DIPS client's opening PING.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from PIL import Image

from clusterkit import Cluster
from interop_peers import (
    DISCONNECT,
    HEARTBEAT,
    MDPC,
    MDPW,
    READY,
    REPLY,
    REQUEST,
    MinimalBroker,
    MinimalWorker,
    php_style_pack,
)
from mdp.client import MDPClient
from mdp.protocol import DIPS_CLIENT
from renderers.samples import photo_jpeg
from testkit import wait_for


@pytest.fixture
def minimal_broker(zctx: zmq.Context) -> Iterator[MinimalBroker]:
    broker = MinimalBroker(zctx)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop.set()
        broker.join(5)


def test_standard_client_and_worker_through_our_broker(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker()
    worker = MinimalWorker(zctx, broker.endpoint, b"upper")
    worker.start()
    try:
        with MDPClient([broker.endpoint]) as probe:
            wait_for(lambda: probe.mmi_service("upper") == "200", 5, "minimal worker to register")
        client = zctx.socket(zmq.REQ)
        client.linger = 0
        client.connect(broker.endpoint)
        for word in (b"hello", b"majordomo"):
            client.send_multipart([MDPC, b"upper", word])
            assert client.poll(5000), "no reply through our broker"
            assert client.recv_multipart() == [MDPC, b"upper", word.upper()]
        client.send_multipart([MDPC, b"mmi.service", b"upper"])
        assert client.poll(5000)
        assert client.recv_multipart() == [MDPC, b"mmi.service", b"200"]
        client.close()
    finally:
        worker.stop.set()
        worker.join(5)
    requests = [f for f in worker.received if f[2] == REQUEST]
    assert len(requests) == 2
    assert all(len(f) == 6 and f[:3] == [b"", MDPW, REQUEST] and f[4] == b"" for f in requests)
    assert {f[2] for f in worker.received} <= {REQUEST, HEARTBEAT}  # no DIPS commands


def test_our_client_and_worker_through_a_standard_broker(
    cluster: Cluster, minimal_broker: MinimalBroker
) -> None:
    cluster.worker([minimal_broker.endpoint], "echo", wait=False)
    wait_for(lambda: READY in minimal_broker.worker_commands_seen, 10, "READY")
    with MDPClient([minimal_broker.endpoint], timeout=5, shuffle=False) as client:
        assert client.send("echo", {"plain": True}) == {"plain": True}
        requests = [{"i": i} for i in range(20)]
        assert client.send_many("echo", requests) == requests
    assert minimal_broker.headers_seen <= {MDPC, MDPW, DIPS_CLIENT}
    assert minimal_broker.dropped >= 1  # our client's opening PING, dropped as unknown
    assert minimal_broker.worker_commands_seen <= {READY, REPLY, HEARTBEAT, DISCONNECT}


def test_standard_client_gets_a_msgpack_error_for_unknown_service(
    cluster: Cluster, zctx: zmq.Context
) -> None:
    broker = cluster.broker(None, "--unknown-grace", "0.2")
    client = zctx.socket(zmq.REQ)
    client.linger = 0
    client.connect(broker.endpoint)
    client.send_multipart([MDPC, b"nobody", msgpack.packb({})])
    assert client.poll(5000)
    header, service, body = client.recv_multipart()
    assert (header, service) == (MDPC, b"nobody")
    assert msgpack.unpackb(body)["error"]["code"] == "unknown_service"


# --- quirks of other people's peers, reproduced from the RFC frames ----------------------


def _upper_or_result(body: list[bytes]) -> list[bytes]:
    """A msgpack map comes back as ``{"result": map}``; anything else upper-cased."""
    try:
        request = msgpack.unpackb(body[0]) if len(body) == 1 else None
    except ValueError:
        request = None
    if isinstance(request, dict):
        return [msgpack.packb({"result": request})]
    return [frame.upper() for frame in body]


def _registered(endpoint: str, service: str) -> None:
    with MDPClient([endpoint], shuffle=False) as probe:
        wait_for(lambda: probe.mmi_service(service) == "200", 5, f"worker for {service!r}")


def test_reply_without_empty_frame_after_client_address(
    cluster: Cluster, zctx: zmq.Context
) -> None:
    broker = cluster.broker()
    worker = MinimalWorker(zctx, broker.endpoint, b"upper", answer=_upper_or_result,
                           empty_after_client=False)
    worker.start()
    try:
        _registered(broker.endpoint, "upper")
        client = zctx.socket(zmq.REQ)
        client.linger = 0
        client.connect(broker.endpoint)
        for word in (b"hello", b"majordomo"):  # the worker is served again after its reply
            client.send_multipart([MDPC, b"upper", word])
            assert client.poll(3000), "our broker dropped the worker's REPLY"
            assert client.recv_multipart() == [MDPC, b"upper", word.upper()]
        client.close()
        with MDPClient([broker.endpoint], timeout=5) as ours:
            assert ours.send("upper", {"card": 1}) == {"card": 1}
    finally:
        worker.stop.set()
        worker.join(5)
    requests = [f for f in worker.received if f[2] == REQUEST]
    assert len(requests) == 3


def _plain(body: list[bytes]) -> list[bytes]:
    return [b"\xc1plain reply"]  # 0xc1 is never valid msgpack: these are plain bytes


def _frames(body: list[bytes]) -> list[bytes]:
    return [b"\xc1one", b"\xc1two"]


@pytest.mark.parametrize("broker_kind", ["dips", "standard"])
def test_our_client_gets_a_standard_workers_plain_bytes(
    broker_kind: str, cluster: Cluster, minimal_broker: MinimalBroker, zctx: zmq.Context
) -> None:
    endpoint = cluster.broker().endpoint if broker_kind == "dips" else minimal_broker.endpoint
    workers = [MinimalWorker(zctx, endpoint, b"plain", answer=_plain),
               MinimalWorker(zctx, endpoint, b"frames", answer=_frames)]
    for worker in workers:
        worker.start()
    try:
        if broker_kind == "dips":
            _registered(endpoint, "plain")
            _registered(endpoint, "frames")
        else:
            wait_for(lambda: minimal_broker.worker_commands_seen >= {READY}
                     and len(minimal_broker.arrivals) >= 2, 5, "both workers' READY")
        with MDPClient([endpoint], timeout=5, shuffle=False) as client:
            assert client.send("plain", {"n": 1}) == b"\xc1plain reply"
            assert client.send("frames", {"n": 2}) == [b"\xc1one", b"\xc1two"]
    finally:
        for worker in workers:
            worker.stop.set()
            worker.join(5)


def test_image_bytes_sent_as_msgpack_str_get_a_thumbnail(
    cluster: Cluster, zctx: zmq.Context
) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "thumbnail")
    jpeg = photo_jpeg(320, 240)
    body = php_style_pack({"image": jpeg, "width": 64, "height": 64})
    with pytest.raises(UnicodeDecodeError):  # str, and not UTF-8: what a PHP client sends
        msgpack.unpackb(body, raw=False)
    client = zctx.socket(zmq.REQ)
    client.linger = 0
    client.connect(broker.endpoint)
    client.send_multipart([MDPC, b"thumbnail", body])
    assert client.poll(10_000), "no reply to the thumbnail request"
    header, service, reply = client.recv_multipart()
    client.close()
    assert (header, service) == (MDPC, b"thumbnail")
    decoded = msgpack.unpackb(reply)
    assert "result" in decoded, f"error reply: {decoded.get('error')}"
    thumbnail = Image.open(io.BytesIO(decoded["result"]))
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (64, 48)


_FIRST_REQUEST = """
import sys
from mdp.client import MDPClient
with MDPClient([sys.argv[1]], connect_timeout=60, timeout=60, shuffle=False) as client:
    print(client.send("echo", {"n": 1}), flush=True)
"""


def test_first_request_to_a_standard_broker_does_not_wait_for_a_pong(
    minimal_broker: MinimalBroker, zctx: zmq.Context
) -> None:
    def result(body: list[bytes]) -> list[bytes]:
        return [msgpack.packb({"result": msgpack.unpackb(body[0])})]

    worker = MinimalWorker(zctx, minimal_broker.endpoint, b"echo", answer=result)
    worker.start()
    # connect_timeout (60 s) is far beyond this test's own waits (10 s): a client that
    # waits for the handshake to time out before it sends cannot pass.
    proc = subprocess.Popen([sys.executable, "-c", _FIRST_REQUEST, minimal_broker.endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: READY in minimal_broker.worker_commands_seen, 5, "worker READY")
        wait_for(lambda: minimal_broker.requests_arrived() >= 1, 10,
                 "the client's request, though its PING went unanswered")
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out.decode(errors="replace")
        assert out.decode().strip() == "{'n': 1}"
    finally:
        proc.kill()
        proc.wait(10)
        worker.stop.set()
        worker.join(5)
    pings = [a for a in minimal_broker.arrivals if a[0] != MDPC and a[0] != MDPW]
    assert minimal_broker.dropped == len(pings)  # every handshake went unanswered


@pytest.mark.slow
def test_our_worker_stays_with_a_standard_broker_that_heartbeats_slowly(
    cluster: Cluster, zctx: zmq.Context
) -> None:
    # The guide's brokers heartbeat on a 2.5 s timer checked after a 2.5 s poll, so 3-5 s
    # pass between heartbeats; within 7/MDP's 3 x 2.5 s. A worker that gives up sooner
    # reconnects under a new identity while the broker still dispatches to the old one.
    broker = MinimalBroker(zctx, heartbeat_interval=4.0)
    broker.start()
    try:
        cluster.worker([broker.endpoint], "echo", wait=False, fast=False)  # default timing
        wait_for(lambda: broker.readies() >= 1, 10, "the worker's READY")
        wait_for(lambda: broker.heartbeats_sent >= 1, 10, "the broker's first heartbeat")
        with MDPClient([broker.endpoint], timeout=5, shuffle=False) as client:
            assert client.send("echo", {"n": 1}) == {"n": 1}
        assert broker.readies() == 1, "the worker reconnected between two heartbeats"
    finally:
        broker.stop.set()
        broker.join(5)
