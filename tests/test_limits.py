"""Every limit on what a peer controls, crossed once, with its error checked."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

from clusterkit import Cluster
from mdp import protocol as p
from mdp.client import MDPClient
from mdp.errors import BadRequest, Overloaded, Timeout, WorkerError
from testkit import broker_status, wait_for

pytestmark = pytest.mark.slow


def raw_request(ctx: zmq.Context, endpoint: str, frames: list[bytes]) -> list[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(5000), "no answer"
        return sock.recv_multipart()
    finally:
        sock.close()


def error_of(reply: list[bytes]) -> dict:
    return msgpack.unpackb(reply[-1])["error"]


def test_message_size(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--max-message-bytes", "20000")
    cluster.worker([broker])
    with MDPClient([broker.endpoint], max_request_bytes=10_000) as client:
        with pytest.raises(BadRequest, match="limit is 10000"):
            client.send("echo", {"blob": b"x" * 10_001})
    with MDPClient([broker.endpoint], timeout=1.5, retries=0) as client:
        with pytest.raises(Timeout):  # the broker drops a peer whose message is too large
            client.send("echo", {"blob": b"x" * 30_000})
    with MDPClient([broker.endpoint]) as client:  # and goes on serving everyone else
        assert client.send("echo", {"blob": b"x" * 9_000}) == {"blob": b"x" * 9_000}


def test_frames_per_message(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker(None, "--max-frames", "8")
    reply = raw_request(zctx, broker.endpoint, [b"", p.CLIENT, b"echo"] + [b"x"] * 6)
    error = error_of(reply)
    assert error["code"] == "bad_request" and "limit is 8" in error["message"]


def test_service_name(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker()
    reply = raw_request(zctx, broker.endpoint, [b"", p.CLIENT, b"x" * 101, msgpack.packb({})])
    assert error_of(reply) == {"code": "bad_request", "field": "service",
                               "message": "service names are 1-100 letters, digits, '.', '_' "
                                          "or '-'"}
    with MDPClient([broker.endpoint]) as client, pytest.raises(BadRequest, match="service"):
        client.send("bad/name", {})


def test_request_nesting_depth_and_length(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo", "--max-depth", "8", "--max-items", "10")
    with MDPClient([broker.endpoint]) as client:
        nested: dict = {"leaf": 1}
        for _ in range(8):
            nested = {"n": nested}
        with pytest.raises(BadRequest, match="deeper than 8"):
            client.send("echo", nested)
        with pytest.raises(BadRequest, match="at most 10 entries"):
            client.send("echo", {"list": list(range(11))})
        assert client.send("echo", {"list": list(range(10))}) == {"list": list(range(10))}


def test_total_queue(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--max-total-queue", "2", "--unknown-grace", "10")
    with MDPClient([broker.endpoint], timeout=3) as client:
        outcomes = client.send_many("nobody-yet", [{}] * 3, return_exceptions=True)
    assert isinstance(outcomes[2], Overloaded)
    assert "2 requests queued" in outcomes[2].message


def test_number_of_services(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker(None, "--max-services", "2", "--unknown-grace", "30")
    cluster.worker([broker], "echo")
    sock = zctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(broker.endpoint)
    try:
        sock.send_multipart([b"", p.CLIENT, b"second", msgpack.packb({})])  # waits: grace
        sock.send_multipart([b"", p.CLIENT, b"third", msgpack.packb({})])  # one too many
        assert sock.poll(5000)
        reply = sock.recv_multipart()
    finally:
        sock.close()
    assert reply[2] == b"third"
    error = error_of(reply)
    assert error["code"] == "unknown_service" and "no such service" in error["message"]


def test_number_of_workers(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--max-workers", "1")
    cluster.worker([broker])
    second = cluster.worker([broker], wait=False)
    wait_for(lambda: "--max-workers" in broker.output(), 10, "the refusal")
    first_refusal = time.monotonic()
    wait_for(lambda: broker.output().count("--max-workers") >= 4, 10, "three more tries")
    assert time.monotonic() - first_refusal >= 0.6  # backoff 0.1 + 0.2 + 0.4 s, no flood
    status = broker_status(broker.endpoint)
    assert status is not None
    pids = [w.pid for w in status.all_workers()]
    assert second.pid not in pids and len(pids) == 1


def test_a_worker_of_one_service_too_many_is_refused(cluster: Cluster) -> None:
    """Workers made services without limit (only requests checked --max-services): a
    Gearman door's peers, each offering 64 names, grew mmi.status to 353 KB."""
    broker = cluster.broker(None, "--max-services", "2")
    kept = [cluster.worker([broker], name) for name in ("echo", "info")]
    extra = cluster.worker([broker], "ecard", wait=False)
    wait_for(lambda: "--max-services" in broker.output(), 10, "the refusal")
    cluster.worker([broker], "info")  # a known service takes more workers
    status = broker_status(broker.endpoint)
    assert status is not None and sorted(status.services) == ["echo", "info"]
    pids = {w.pid for w in status.all_workers()}
    assert extra.pid not in pids and {k.pid for k in kept} <= pids


def test_memory_limit(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker], "tester", "--max-memory-mb", "400", faulty=True)
    with MDPClient([broker.endpoint]) as client:
        assert client.send("tester", {"allocate_mb": 50})["pid"] == worker.pid
        with pytest.raises(WorkerError) as info:
            client.send("tester", {"allocate_mb": 1000})
    assert info.value.code == "out_of_memory"
    assert worker.wait(10) == 4  # recycled
