"""Real processes against a peer that does what no DIPS peer would: a client that queues
more bytes than a broker should hold, a worker that churns READY and DISCONNECT, a
client whose DIPS messages are malformed, and a broker that ignores the prefetch its
worker advertised. The process at risk must stay up, bounded in memory and in log lines,
and answer what it can with an error that names what was wrong.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from clusterkit import Cluster
from mdp import protocol as p
from testkit import rss_bytes, status_of, wait_for

pytestmark = pytest.mark.slow

MIB = 1 << 20


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def results(sock: zmq.Socket, count: int, timeout_s: float = 10.0) -> dict[int, dict]:
    """The next ``count`` RESULTs on a DIPS client socket, by request id (each receive
    waits at most ``timeout_s``)."""
    found: dict[int, dict] = {}
    while len(found) < count:
        if not sock.poll(int(timeout_s * 1000)):
            raise AssertionError(f"{len(found)} of {count} answers came: {sorted(found)}")
        message = p.parse_client_inbound(sock.recv_multipart())
        if isinstance(message, p.Result) and message.rid is not None:
            found[message.rid] = msgpack.unpackb(message.body[0])
    return found


# --- a client that queues more bytes than the broker should hold ----------------------------


def test_a_broker_refuses_requests_past_its_queued_bytes_and_stays_small(
        cluster: Cluster, ctx: zmq.Context, tmp_path: Path) -> None:
    """One worker busy with a long request; a client sends 48 requests of 1 MiB. With
    8 MiB allowed queued, most are answered ``overloaded`` naming the limit, the broker
    holds at most 8 MiB of them (it held all 48 before the bound), and the ones queued
    are served once the worker is free."""
    broker = cluster.broker(None, "--max-message-bytes", str(2 * MIB),
                            "--max-queue-bytes", "8MiB")
    cluster.worker([broker], "echo", "--prefetch", "0", faulty=True)
    gate = tmp_path / "gate"
    client = dealer(ctx, broker.endpoint)
    client.send_multipart(p.client_submit(b"echo", 0, 60_000, [msgpack.packb(
        {"gate_file": str(gate)})]))
    wait_for(lambda: status_of(broker.endpoint).workers("echo")[0].state == "busy", 10,
             "the worker busy with the gated request")
    rss_before = rss_bytes(broker.pid)
    blob = msgpack.packb({"blob": b"\x00" * MIB})
    for rid in range(1, 49):
        client.send_multipart(p.client_submit(b"echo", rid, 60_000, [blob]))
    fit = 8 * MIB // len(blob)  # 7: a body is a little over 1 MiB
    refused = results(client, 48 - fit)
    assert all(r["error"]["code"] == "overloaded" for r in refused.values())
    assert "--max-queue-bytes" in next(iter(refused.values()))["error"]["message"]
    queued = status_of(broker.endpoint).services["echo"]
    assert (queued.queue, queued.queue_bytes) == (fit, fit * len(blob))
    assert rss_bytes(broker.pid) - rss_before < 24 * MIB  # 48 MiB held without the bound
    gate.touch()
    served = results(client, fit + 1, timeout_s=20.0)
    assert set(served) == {0, *(set(range(1, 49)) - set(refused))}
    assert all("error" not in r for r in served.values())
    assert status_of(broker.endpoint).services["echo"].queue_bytes == 0


# --- a worker that churns READY and DISCONNECT --------------------------------------------


def test_one_peer_churning_ready_and_disconnect_cannot_flood_the_brokers_log(
        cluster: Cluster, ctx: zmq.Context) -> None:
    """3,000 READY and DISCONNECT from one DEALER as fast as it can send them (3,000 log
    lines before): the broker logs the first hundred, then a few a second, and says how
    many it did not log."""
    broker = cluster.broker()
    before = len(broker.output().splitlines())
    started = time.monotonic()
    sock = dealer(ctx, broker.endpoint)
    meta = {"dips": 2, "host": "churn", "pid": 1, "version": "x", "prefetch": 0}
    for _ in range(1500):
        sock.send_multipart(p.ready(b"churn", meta))
        sock.send_multipart(p.worker_command(b"", p.DISCONNECT)[1:])
    sock.send_multipart([b"", p.CLIENT, p.MMI_SERVICE, b"churn"])  # behind all of them
    while True:
        assert sock.poll(10_000), "the broker did not answer"
        frames = sock.recv_multipart()
        if frames[1] == p.CLIENT:
            break
    wait_for(lambda: "not logged" in broker.output(), 10, "the count of lines not logged")
    elapsed = time.monotonic() - started
    lines = broker.output().splitlines()[before:]
    assert len(lines) <= 100 + 3 * (elapsed + 1)
    said = sum(" ready for " in line or line.endswith(" left") for line in lines)
    unsaid = sum(int(line.split(" INFO ")[1].split()[0]) for line in lines
                 if "not logged" in line)
    assert said + unsaid <= 3000 and said < 3000


# --- a client whose SUBMIT is malformed ----------------------------------------------------


def test_a_malformed_submit_is_answered_at_once_rather_than_left_to_time_out(
        cluster: Cluster, ctx: zmq.Context) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo")
    client = dealer(ctx, broker.endpoint)
    meta = p.pack_meta({"id": 3, "ttl_ms": 5000, "ck": b"k" * 65})  # a key too long
    client.send_multipart([b"", p.DIPS_CLIENT, p.SUBMIT, b"echo", meta, msgpack.packb({})])
    [answer] = results(client, 1).values()
    assert answer["error"]["code"] == "bad_request" and "'ck'" in answer["error"]["message"]
    client.send_multipart(p.client_submit(b"echo", 4, 5000, [msgpack.packb({"a": 1})]))
    assert results(client, 1)[4] == {"result": {"a": 1}}  # and the broker serves on


# --- a broker that ignores the prefetch its worker advertised --------------------------------


class FakeBroker:
    """A ROUTER the test speaks for: it welcomes one DIPS worker and answers its
    heartbeats, so that the worker takes it for a live broker."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.worker = b""

    def next(self, timeout_s: float = 10.0) -> p.BrokerInbound:
        """The worker's next message but a heartbeat (answered)."""
        while True:
            if not self.sock.poll(int(timeout_s * 1000)):
                raise AssertionError("the worker said nothing")
            identity, *frames = self.sock.recv_multipart()
            message = p.parse_broker_inbound(frames)
            if isinstance(message, p.WorkerReady):
                self.worker = identity
                self.sock.send_multipart(p.worker_welcome(identity, {
                    "dips": 2, "broker": "fake", "instance": "f"}))
            if isinstance(message, p.WorkerSignal) and message.command == p.HEARTBEAT:
                self.sock.send_multipart(p.worker_command(identity, p.HEARTBEAT))
                continue
            return message

    def task(self, key: bytes, body: dict, hold: bool) -> None:
        self.sock.send_multipart(p.to_worker(self.worker, key, [msgpack.packb(body)], True,
                                             60_000, hold))


def test_a_worker_hands_back_the_tasks_a_broker_sends_past_its_prefetch(
        cluster: Cluster, ctx: zmq.Context, tmp_path: Path) -> None:
    """A worker that advertised prefetch 1 runs a long task; the broker sends it 60 more
    to hold. It keeps 3 (what a broker that took tasks back from it while it was silent
    may give it), hands the other 57 back at once unrun, and then answers the 4 it kept."""
    broker = FakeBroker(ctx)
    worker = cluster.worker([broker.endpoint], "echo", "--prefetch", "1", faulty=True,
                            wait=False, fast=False)
    assert isinstance(broker.next(), p.WorkerReady)
    gate = tmp_path / "gate"
    broker.task(b"run", {"gate_file": str(gate)}, hold=False)
    for n in range(60):
        broker.task(b"held%02d" % n, {"n": n, "pad": b"\x00" * 100_000}, hold=True)
    bounced = []
    while len(bounced) < 57:
        message = broker.next()
        if isinstance(message, p.WorkerSignal) and message.command == p.BOUNCE:
            bounced.append(message.key)
    assert bounced == [b"held%02d" % n for n in range(3, 60)]
    gate.touch()
    replied = []
    while len(replied) < 4:
        message = broker.next()
        if isinstance(message, p.WorkerReply):
            replied.append(message.key)
        elif isinstance(message, p.WorkerReplies):
            replied += message.keys
    assert replied == [b"run", b"held00", b"held01", b"held02"]
    assert worker.popen.poll() is None
    assert "past the 4 this worker holds" in worker.output()


def test_failed_handshakes_from_a_peer_cannot_flood_the_log(
        ctx: zmq.Context, caplog: pytest.LogCaptureFixture) -> None:
    """A plaintext peer reconnecting to a CURVE socket fails its handshake each time; the
    broker's monitor reports every failure, and at most 10 a second are logged."""
    from mdp.auth import HANDSHAKE_FAILURES, log_handshake_failures
    from mdp.logs import RateLimitedLog

    class Counting(RateLimitedLog):
        calls = 0

        def __call__(self, now: float, msg: str, *args: object) -> None:
            self.calls += 1
            super().__call__(now, msg, *args)

    public, secret = zmq.curve_keypair()
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    server.curve_server = True
    server.curve_secretkey = secret
    server.curve_publickey = public
    server.bind("tcp://127.0.0.1:*")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    monitor = server.get_monitor_socket(HANDSHAKE_FAILURES)
    try:
        for _ in range(30):
            sock = dealer(ctx, endpoint)
            sock.send_multipart([b"", b"hello"])
            sock.close(linger=100)
        caplog.set_level("WARNING", logger="mdp.auth")
        warn = Counting(logging.getLogger("mdp.auth"))
        while warn.calls < 30:
            assert monitor.poll(10_000), f"{warn.calls} of 30 failures reported"
            log_handshake_failures(monitor, warn, 0.0)  # all in one second of the broker's
    finally:
        server.disable_monitor()
        monitor.close(linger=0)
        server.close(linger=0)
    assert sum("handshake refused" in r.getMessage() for r in caplog.records) == 10
