"""Peers that mean harm, or merely speak oddly, against a real mdp-http: results that are
not valid Unicode, floods of malformed requests, request heads that never end."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway

from clusterkit import FAST_HEARTBEAT, Cluster, Proc
from testkit import count_workers, wait_for

# the doors' shared test worker that answers as a PHP msgpack worker would
ODD_WORKER = Path(__file__).resolve().parents[1] / "gearman" / "odd_worker.py"
ODD = b"\xff\xfe\xfd"


@dataclass
class Env:
    cluster: Cluster
    brokers: list[Proc]
    gateway: Gateway


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    cluster = Cluster(tmp_path_factory.mktemp("http-peers"))
    try:
        brokers = [cluster.broker()]
        cluster._spawn([str(ODD_WORKER), "--broker", brokers[0].endpoint, "--service", "odd",
                        *FAST_HEARTBEAT], "odd-worker")
        wait_for(lambda: count_workers(brokers[0].endpoint, "odd") == 1, 20, "the odd worker")
        yield Env(cluster, brokers, start_gateway(cluster, [brokers[0].endpoint]))
    finally:
        cluster.stop_all()


def _get(gateway: Gateway, odd: str, accept: str) -> tuple[int, bytes]:
    status, headers, body = gateway.call("GET", f"/v1/odd?odd={odd}", headers={"Accept": accept})
    return status, body


def test_a_str_that_is_not_utf8_is_bytes_in_json_and_exact_in_msgpack(env: Env) -> None:
    """JSON carries it as the door carries bytes, ``{"base64": ...}`` (it gave lone
    surrogates, which are no Unicode); msgpack as the very str its worker sent."""
    for odd, as_json, as_msgpack in [
            ("str", {"base64": "//79"}, b"\xa3" + ODD),
            ("nested", {"k": {"base64": "//79"}}, b"\x81\xa1k\xa3" + ODD),
            ("key", {"\ufffd\ufffd\ufffd": 1}, b"\x81\xa3" + ODD + b"\x01")]:
        status, body = _get(env.gateway, odd, "application/json")
        assert status == 200 and json.loads(body.decode("utf-8", "strict")) == as_json, body
        assert "\\ud" not in body.decode()  # no surrogate escapes in the text
        status, body = _get(env.gateway, odd, "application/msgpack")
        assert (status, body) == (200, as_msgpack)


def test_an_error_message_that_is_not_utf8_is_valid_json_text(env: Env) -> None:
    status, body = _get(env.gateway, "error", "application/json")
    assert status == 400 and "\\ud" not in body.decode("utf-8", "strict"), body
    assert json.loads(body)["error"]["message"] == "cannot read \ufffd\ufffd\ufffd"


BAD_REQUESTS = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nG\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
]


def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data``; everything the door answers until it closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def test_a_flood_of_malformed_requests_logs_a_bounded_number_of_lines(env: Env) -> None:
    """Each malformed request made aiohttp log an ERROR and a traceback (11 lines): 300 of
    them now give the first few lines and a count of the rest, each one line."""
    gateway = start_gateway(env.cluster, [env.brokers[0].endpoint])
    for i in range(300):
        assert b" 400 " in _exchange(gateway.port, BAD_REQUESTS[i % len(BAD_REQUESTS)])

    def told_suppressed() -> bool:  # a later line reports how many were left out
        _exchange(gateway.port, BAD_REQUESTS[0])
        return "similar lines suppressed" in gateway.proc.output()

    wait_for(told_suppressed, 15, "the count of the lines left out")
    lines = gateway.proc.output().splitlines()
    errors = sum("Error handling request" in line for line in lines)
    assert 1 <= errors < 100, errors
    assert not any("Traceback" in line for line in lines)  # a peer's mistake is no bug
    status, _, _ = gateway.call("GET", "/healthz")
    assert status == 200


def test_a_request_head_that_trickles_is_cut_at_the_header_timeout(env: Env) -> None:
    gateway = start_gateway(env.cluster, [env.brokers[0].endpoint], "--header-timeout", "2")
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=0.2) as sock:
        closed = False
        for i in range(150):  # a byte every 0.2 s: 30 s at most
            try:
                sock.send(head[i:i + 1])
                closed = sock.recv(100) == b""
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if closed:
                break
        assert closed, "a trickled request head was kept 30 s"
    status, _, _ = gateway.call("GET", "/healthz")  # a whole head in time is served
    assert status == 200
