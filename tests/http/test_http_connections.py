"""mdp-http's connection limit against real peers: a flood of idle connections cannot keep a
caller out, a door whose every connection has a request in hand answers 503 at once, and
the door fits its limit to the process's file descriptors (raising the soft limit first)."""

from __future__ import annotations

import json
import resource
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httpkit import LISTENING, Gateway, ask_for_blob, error_code, start_gateway

from clusterkit import Cluster, Proc
from testkit import broker_counter, wait_for

LIMIT = 16


@dataclass
class Env:
    cluster: Cluster
    broker: Proc
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("http-connections")
    cluster = Cluster(tmp)
    try:
        broker = cluster.broker()
        cluster.worker([broker], "echo")
        cluster.worker([broker], "slow", faulty=True)
        yield Env(cluster, broker, tmp)
    finally:
        cluster.stop_all()


def _closed_by_peer(sock: socket.socket) -> bool:
    """True if the door has closed this connection (after a refusal's 503, or nothing)."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if sock.recv(4096) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


@pytest.mark.slow
def test_a_flood_of_idle_connections_cannot_keep_a_caller_out(env: Env) -> None:
    """Without the limit the door held every idle connection until --header-timeout (60 s
    here) and, past its descriptors, accepted none: the caller's request waited for it."""
    gateway = start_gateway(env.cluster, [env.broker.endpoint], "--max-connections",
                            str(LIMIT), "--header-timeout", "60")
    idle = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            for _ in range(3 * LIMIT)]
    half = [socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
            for _ in range(LIMIT)]
    for sock in half:  # a head begun and never ended (a trickler)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answers: list[int] = []

    def served() -> bytes | None:
        """A caller's answer: 200, or (while the flood's last burst is still new to the door
        and none of it can be told idle) 503 with Retry-After; never a wait."""
        status, headers, body = gateway.post_json("echo", {"x": 1}, timeout=10)
        answers.append(status)
        assert status == 200 or (status == 503 and error_code(body) == "overloaded"
                                 and headers.get("Retry-After") == "1"), (status, body)
        return body if status == 200 else None

    try:
        assert json.loads(wait_for(served, 15, "a caller to be served"))["x"] == 1
        assert answers.count(503) <= 3, answers
        flood = idle + half
        closed = wait_for(lambda: (n := sum(_closed_by_peer(s) for s in flood)) >= len(flood)
                          - LIMIT and n, 10, "the door to close the idle connections")
        assert closed >= len(flood) - LIMIT
        assert (gateway.metric("dips_http_connections_evicted_total")
                + gateway.metric("dips_http_connections_refused_total")) >= len(flood) - LIMIT
        assert gateway.metric("dips_http_connections_max") == LIMIT
        assert gateway.metric("dips_http_connections") <= LIMIT
    finally:
        for sock in idle + half:
            sock.close()
    output = gateway.proc.output()
    assert "closed an idle connection to make room" in output
    assert "Too many open files" not in output
    assert len(output.splitlines()) < 100  # a flood of peers is a bounded number of lines


def _post_raw(port: int, request: dict[str, object]) -> socket.socket:
    body = json.dumps(request).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def _status_of(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.slow
def test_a_door_with_a_request_in_hand_on_every_connection_answers_503_at_once(
        env: Env) -> None:
    gateway = start_gateway(env.cluster, [env.broker.endpoint], "--max-connections",
                            str(LIMIT), "--max-concurrency", str(2 * LIMIT), "--timeout", "60")
    gate = env.tmp / f"gate-{uuid.uuid4().hex}"
    before = broker_counter(env.broker.endpoint, "requests")
    busy = [_post_raw(gateway.port, {"gate_file": str(gate)}) for _ in range(LIMIT)]

    def refused() -> bytes | None:
        """A new connection's answer if the door refused it unasked (the door is full);
        None if it was taken in (then its request is answered, and it closes)."""
        try:
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as probe:
                if not select.select([probe], [], [], 0.5)[0]:
                    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
                answer = b""
                while chunk := probe.recv(4096):
                    answer += chunk
        except ConnectionResetError:  # refused while its request was on the way: again
            return None
        return answer if answer.startswith(b"HTTP/1.1 503") else None

    try:  # every request in hand: the door has passed each to the broker
        wait_for(lambda: broker_counter(env.broker.endpoint, "requests") - before >= LIMIT, 15,
                 "the requests to reach the broker")
        answer = wait_for(refused, 15, "a connection past the limit to be refused")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Retry-After: 1" in head and error_code(body) == "overloaded"
        assert _metric_after_gate(gateway, gate, busy) >= 1
    finally:
        gate.touch()
        for sock in busy:
            sock.close()


def _metric_after_gate(gateway: Gateway, gate: Path, busy: list[socket.socket]) -> float:
    """Open the gate: every request in hand is answered, and the door serves again."""
    gate.touch()
    assert [_status_of(sock) for sock in busy] == [200] * len(busy)
    return gateway.metric("dips_http_connections_refused_total")


def _spawn_limited(env: Env, soft: int, hard: int, *extra: str) -> Proc:
    """mdp-http with RLIMIT_NOFILE (soft, hard), as a service manager would start it."""
    log = env.tmp / f"limited-{uuid.uuid4().hex[:8]}.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "mdp_http", "--listen", "127.0.0.1:0",
                                  "--broker", env.broker.endpoint, *extra],
                                 stdout=out, stderr=out, preexec_fn=limit)
    proc = Proc(popen, log)
    env.cluster.procs.append(proc)
    wait_for(lambda: popen.poll() is not None or LISTENING.search(proc.output()), 20,
             "mdp-http to listen or exit")
    return proc


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


@pytest.mark.slow
def test_the_door_fits_its_connections_to_the_descriptor_limit(env: Env) -> None:
    raised = _spawn_limited(env, 512, 8192)  # a service manager's usual soft limit
    assert raised.popen.poll() is None, raised.output()
    assert _soft_limit(raised.pid) == 4096 + 256  # the default's connections and the reserve

    cut = _spawn_limited(env, 300, 300)  # a hard limit it may not pass
    assert cut.popen.poll() is None, cut.output()
    assert "the file-descriptor limit is 300" in cut.output()
    assert "at most 44 connections" in cut.output()

    refused = _spawn_limited(env, 200, 200)
    assert refused.wait(10) == 2
    assert "fewer than 16 connections would fit" in refused.output()


def _open_stream(port: int) -> socket.socket:
    """A live event stream, read up to its first event."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
    seen = b""
    while b"data: {" not in seen:
        chunk = sock.recv(65536)
        assert chunk, f"the stream ended: {seen[:300]!r}"
        seen += chunk
        if b"\r\n\r\n" in seen and not seen.startswith(b"HTTP/1.1 200"):
            sock.close()
            raise AssertionError(f"no stream: {seen[:300]!r}")
    return sock


@pytest.mark.slow
def test_live_event_streams_cannot_take_every_connection(env: Env) -> None:
    """A stream is never idle, so streams alone could hold every connection: at most one
    connection in eight streams; the next is told to poll /api/fleet instead."""
    gateway = start_gateway(env.cluster, [env.broker.endpoint], "--max-connections",
                            str(LIMIT))
    streams = [_open_stream(gateway.port) for _ in range(LIMIT // 8)]
    try:
        status, headers, body = gateway.call("GET", "/api/events", timeout=10)
        assert status == 503 and error_code(body) == "overloaded", (status, body)
        assert "/api/fleet" in json.loads(body)["error"]["message"]
        status, _, _ = gateway.call("GET", "/api/fleet", timeout=10)
        assert status == 200
        streams.pop().close()
        streams.append(wait_for(lambda: _try_stream(gateway.port), 15,
                                "a stream to be taken once another closed"))
    finally:
        for sock in streams:
            sock.close()


def _try_stream(port: int) -> socket.socket | None:
    try:
        return _open_stream(port)
    except AssertionError:  # still refused: the door has not yet seen the other one close
        return None


@pytest.mark.slow
def test_a_peer_that_stops_reading_its_reply_is_cut_off_and_a_slow_one_is_not(
        env: Env) -> None:
    """aiohttp has no send timeout: a peer that never read a 20 MB reply held it, its
    connection and its handler for as long as it stayed connected."""
    gateway = start_gateway(env.cluster, [env.broker.endpoint], "--send-timeout", "2")
    stopped = ask_for_blob(gateway.port, 20_000_000)
    slow = ask_for_blob(gateway.port, 2_000_000)
    try:
        received = 0
        while True:  # 64 KiB every 0.1 s: slow, never stopped (a pace, not a wait)
            chunk = slow.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            if received >= 2_000_000:
                break
            time.sleep(0.1)
        assert received >= 2_000_000, received
        wait_for(lambda: gateway.metric("dips_http_send_timeouts_total") >= 1, 20,
                 "the door to cut off the peer that stopped reading")
        assert gateway.metric("dips_http_send_timeouts_total") == 1  # not the slow one
        with pytest.raises(OSError):  # reset: what it had not read is gone with it
            while stopped.recv(1 << 20):
                pass
        assert "took no byte of its reply for 2s" in gateway.proc.output()
    finally:
        stopped.close()
        slow.close()
