"""The worker as a real process: frozen, long-running, stuck, drained; real signals.

The client here is a bare DEALER that speaks the DIPS client wire (docs/PROTOCOL.md section
3) through ``mdp.protocol``, so these tests depend on the broker and the worker only.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from clusterkit import Cluster, Proc
from mdp import protocol as p
from testkit import free_port, wait_for

pytestmark = pytest.mark.slow
# the worker's transports (--transport): the tests of the sentinel's work and of leaving run
# on both, since a plain link is read by whoever holds the worker (tests/test_worker_plain.py)
both_transports = pytest.mark.parametrize("kind", ["zmq", "plain"])


class RawClient:
    """SUBMIT requests and collect RESULTs by id; every receive has a timeout."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.results: dict[int, Any] = {}

    def submit(self, rid: int, request: dict[str, Any], service: bytes = b"tester",
               ttl_ms: int = 30_000) -> None:
        self.sock.send_multipart(p.client_submit(service, rid, ttl_ms, [p.pack(request)]))

    def wait(self, rid: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while rid not in self.results:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise AssertionError(f"no reply to request {rid} in {timeout}s")
            message = p.parse_client_inbound(self.sock.recv_multipart())
            if isinstance(message, p.Result) and message.rid is not None:
                self.results[message.rid] = p.unpack(message.body[0])
        return self.results[rid]


def status(ctx: zmq.Context, endpoint: str) -> dict[str, Any] | None:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(p.client_request(p.MMI_STATUS, [b""]))
        if not sock.poll(1000):
            return None
        frames = sock.recv_multipart()
        return p.unpack(frames[3]) if len(frames) == 4 else None
    finally:
        sock.close()


def workers(ctx: zmq.Context, endpoint: str, service: str = "tester") -> list[dict[str, Any]]:
    found = status(ctx, endpoint) or {}
    return list(found.get("services", {}).get(service, {}).get("workers", []))


def start_broker(cluster: Cluster, ctx: zmq.Context, *extra: str) -> Proc:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = cluster._spawn(["-m", "mdp.broker", "--bind", endpoint, *extra], "broker", endpoint)
    wait_for(lambda: status(ctx, endpoint) is not None, 10, f"broker {endpoint}")
    return proc


def start_worker(cluster: Cluster, ctx: zmq.Context, brokers: list[Proc], *extra: str) -> Proc:
    from clusterkit import FAULTY_WORKER

    args = [str(FAULTY_WORKER), "--service", "tester", *extra]
    for broker in brokers:
        args += ["--broker", broker.endpoint]
    proc = cluster._spawn(args, "worker")
    for broker in brokers:
        wait_for(lambda b=broker: any(w["pid"] == proc.pid for w in workers(ctx, b.endpoint)),
                 10, f"worker {proc.pid} on {broker.endpoint}")
    return proc


def busy_pid(ctx: zmq.Context, endpoint: str) -> int | None:
    for entry in workers(ctx, endpoint):
        if entry["state"] == "busy":
            return int(entry["pid"])
    return None


@both_transports
def test_a_frozen_worker_holding_a_request_is_replaced_and_rejoins(
        cluster: Cluster, zctx: zmq.Context, kind: str) -> None:
    broker = start_broker(cluster, zctx)  # default heartbeats: 1 s, liveness 3
    first = start_worker(cluster, zctx, [broker], "--transport", kind)
    second = start_worker(cluster, zctx, [broker], "--transport", kind)
    client = RawClient(zctx, broker.endpoint)
    client.submit(1, {"sleep": 0.5, "tag": "frozen"})
    busy = wait_for(lambda: busy_pid(zctx, broker.endpoint), 10, "a busy worker")
    frozen, other = (first, second) if busy == first.pid else (second, first)
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        reply = client.wait(1, 10)
    finally:
        frozen.signal(signal.SIGCONT)
    # the other worker ran the request again from the start (0.5 s); the rest is detection
    detect_s = time.monotonic() - stopped_at - 0.5
    print(f"\nfrozen worker: its request was served by another after {detect_s:.2f} s "
          "(plus the 0.5 s re-run)")
    assert reply["result"]["tag"] == "frozen" and reply["result"]["pid"] == other.pid
    assert detect_s < 5.0  # generous: the MDP silence expiry alone would be 3 s
    # resumed, it re-registers and serves again
    wait_for(lambda: any(w["pid"] == frozen.pid for w in workers(zctx, broker.endpoint)),
             15, "the resumed worker to re-register")


@both_transports
def test_a_long_handler_keeps_the_worker_alive_and_busy_at_the_other_broker(
        cluster: Cluster, zctx: zmq.Context, kind: str) -> None:
    fast = ["--heartbeat-interval", "0.2"]  # MDP silence of 0.6 s would drop a worker
    a = start_broker(cluster, zctx, *fast)
    b = start_broker(cluster, zctx, *fast)
    slow = start_worker(cluster, zctx, [a, b], *fast, "--transport", kind)
    client_a, client_b = RawClient(zctx, a.endpoint), RawClient(zctx, b.endpoint)
    client_a.submit(1, {"sleep": 2.0, "tag": "long"})
    wait_for(lambda: [w["state"] for w in workers(zctx, b.endpoint)] == ["away"], 5,
             "BUSY to reach broker b")
    helper = start_worker(cluster, zctx, [b], *fast, "--transport", kind)
    client_b.submit(2, {"tag": "meanwhile"})
    meanwhile = client_b.wait(2, 5)
    assert meanwhile["result"]["pid"] == helper.pid  # not queued behind the long one
    reply = client_a.wait(1, 10)
    assert reply["result"]["pid"] == slow.pid  # never dropped while it worked
    assert "silent" not in a.output()
    wait_for(lambda: [w["state"] for w in workers(zctx, b.endpoint)
                      if w["pid"] == slow.pid] == ["idle"], 5, "FREE to reach broker b")


@both_transports
def test_a_task_held_behind_a_long_one_is_recalled_when_another_worker_comes(
        cluster: Cluster, zctx: zmq.Context, tmp_path: Path, kind: str) -> None:
    broker = start_broker(cluster, zctx)
    busy = start_worker(cluster, zctx, [broker], "--transport", kind)
    client = RawClient(zctx, broker.endpoint)
    started, gate = tmp_path / "started", tmp_path / "gate"
    client.submit(1, {"gate_file": str(gate), "started_file": str(started)})
    wait_for(started.exists, 10, "the long handler to start")
    client.submit(2, {"tag": "held"})  # no idle worker: held at the busy one (prefetch)
    wait_for(lambda: [w["queued"] for w in workers(zctx, broker.endpoint)] == [2], 5,
             "the second task to be held")
    fresh = start_worker(cluster, zctx, [broker], "--transport", kind)
    # the broker RECALLs the held task; the busy worker's sentinel hands it back
    held = client.wait(2, 10)
    assert held["result"]["pid"] == fresh.pid
    assert 1 not in client.results  # the long one is still running: it waits for the gate
    gate.touch()
    assert client.wait(1, 10)["result"]["pid"] == busy.pid


def test_a_request_with_a_str_that_is_not_utf8_is_answered_and_the_worker_lives(
        cluster: Cluster, zctx: zmq.Context) -> None:
    """msgpack str that is not UTF-8 (PHP's msgpack packs bytes so) decodes with surrogate
    escapes; echoed in a result, or named as the field of an error, it once made the reply
    impossible to encode, and the exception killed the worker (each such request cost a
    worker, as a poisoned request does)."""
    broker = start_broker(cluster, zctx)
    worker = start_worker(cluster, zctx, [broker])
    client = RawClient(zctx, broker.endpoint)
    key = b"\xa2\xff\xfe"  # a 2-byte msgpack str: not UTF-8
    echoed = b"\x81" + key + b"\x01"  # {key: 1}: the handler echoes the request back
    client.sock.send_multipart(p.client_submit(b"tester", 1, 30_000, [echoed]))
    reply = client.wait(1, 10)
    assert reply["result"]["\udcff\udcfe"] == 1 and reply["result"]["pid"] == worker.pid
    named = b"\x81\xa9bad_field" + key  # {"bad_field": key}: an error naming that field
    client.sock.send_multipart(p.client_submit(b"tester", 2, 30_000, [named]))
    error = client.wait(2, 10)["error"]
    assert error["code"] == "bad_request" and error["field"] == "\udcff\udcfe"
    assert worker.popen.poll() is None
    client.submit(3, {"tag": "after"})
    assert client.wait(3, 10)["result"]["pid"] == worker.pid


def test_an_error_reply_that_cannot_be_encoded_is_answered_internal_and_the_worker_lives(
        cluster: Cluster, zctx: zmq.Context) -> None:
    broker = start_broker(cluster, zctx)
    worker = start_worker(cluster, zctx, [broker])
    client = RawClient(zctx, broker.endpoint)
    client.submit(1, {"unencodable_error": True})
    error = client.wait(1, 10)["error"]
    assert error["code"] == "internal" and "could not be encoded" in error["message"]
    client.submit(2, {"tag": "after"})
    assert client.wait(2, 10)["result"]["pid"] == worker.pid
    assert "its error reply could not be encoded" in worker.output()


@both_transports
def test_the_time_limit_answers_and_recycles_the_process(
        cluster: Cluster, zctx: zmq.Context, kind: str) -> None:
    broker = start_broker(cluster, zctx)
    stuck = start_worker(cluster, zctx, [broker], "--time-limit", "0.5", "--transport", kind)
    client = RawClient(zctx, broker.endpoint)
    client.submit(1, {"sleep": 30})
    reply = client.wait(1, 10)
    assert reply["error"]["code"] == "worker_timeout"
    assert stuck.wait(10) == 3  # EXIT_STUCK
    wait_for(lambda: workers(zctx, broker.endpoint) == [], 5, "the broker to forget it")


@both_transports
def test_sigterm_during_a_long_request_finishes_it_and_exits_zero(
        cluster: Cluster, zctx: zmq.Context, tmp_path: Path, kind: str) -> None:
    broker = start_broker(cluster, zctx)
    worker = start_worker(cluster, zctx, [broker], "--transport", kind)
    client = RawClient(zctx, broker.endpoint)
    started = tmp_path / "started"
    client.submit(1, {"sleep": 1.0, "tag": "last", "started_file": str(started)})
    wait_for(started.exists, 10, "the handler to start")
    worker.signal(signal.SIGTERM)
    wait_for(lambda: [w["state"] for w in workers(zctx, broker.endpoint)] == ["draining"], 5,
             "the worker to show as draining")
    assert client.wait(1, 10)["result"]["tag"] == "last"
    assert worker.wait(10) == 0


def test_an_unknown_service_is_a_config_error_naming_the_known_ones(tmp_path: Any) -> None:
    import sys

    done = subprocess.run([sys.executable, "-m", "mdp.worker", "--broker", "tcp://127.0.0.1:1",
                           "--service", "no-such"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown service 'no-such'" in done.stderr and "ecard" in done.stderr


@both_transports
def test_a_standard_broker_gets_plain_mdp_and_its_requests_wait_their_turn(
        cluster: Cluster, zctx: zmq.Context, kind: str) -> None:
    """A 7/MDP broker written here from the RFC frames: it never answers READY's meta."""
    from clusterkit import FAULTY_WORKER

    router = zctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cluster._spawn([str(FAULTY_WORKER), "--broker", f"tcp://127.0.0.1:{port}", "--service",
                    "tester", "--heartbeat-interval", "0.2", "--transport", kind], "worker")

    def next_command(timeout_s: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if router.poll(100):
                frames = router.recv_multipart()
                assert frames[1:3] == [b"", p.WORKER]
                if frames[3] != p.HEARTBEAT:
                    return frames
        raise AssertionError("no worker command")

    ready = next_command()
    identity = ready[0]
    assert ready[3:5] == [p.READY, b"tester"]
    for key, request in ((b"c1", {"sleep": 0.3, "n": 1}), (b"c2", {"n": 2})):
        router.send_multipart([identity, b"", p.WORKER, p.REQUEST, key, b"", p.pack(request)])
    replies = [next_command(), next_command()]
    assert [r[3:6] for r in replies] == [[p.REPLY, b"c1", b""], [p.REPLY, b"c2", b""]]
    assert [p.unpack(r[6])["result"]["n"] for r in replies] == [1, 2]  # in order, no BOUNCE
