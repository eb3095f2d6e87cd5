"""The HTTP API against real brokers, workers and mdp-http processes."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import msgpack
import pytest
from httpkit import Gateway, error_code, start_gateway

from clusterkit import Cluster
from mdp_http.signing import post_text, sign
from renderers import samples
from testkit import count_workers, wait_for

SERVICES = ("echo", "ecard", "thumbnail", "crop", "watermark", "convert", "image")
PHOTO = samples.photo_jpeg(64, 48)
REQUESTS = {
    "echo": {"hello": "world", "n": 3},
    "ecard": samples.seed_request(),
    "thumbnail": {"image": PHOTO, "width": 16, "format": "png"},
    "crop": {"image": PHOTO, "width": 10, "height": 10},
    "watermark": {"image": PHOTO, "text": "DIPS", "format": "webp"},
    "convert": {"image": PHOTO, "format": "png"},
    "image": {"image": PHOTO, "ops": [{"op": "thumbnail", "width": 20}], "format": "jpeg"},
}
TYPES = {"ecard": "image/png", "thumbnail": "image/png", "crop": "image/jpeg",
         "watermark": "image/webp", "convert": "image/png", "image": "image/jpeg"}
MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff", "image/webp": b"RIFF"}
KEYS = ((b"first key", b"first salt"), (b"second key", b"second salt"))


@dataclass
class Env:
    cluster: Cluster
    brokers: list[str]
    gateway: Gateway  # no signing, --max-body-bytes 200000, --timeout 5
    signed: Gateway  # signed GET only, with two keys


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("http-api")
    cluster = Cluster(root)
    try:
        # small queues, and a worker that holds one task behind the one it runs, so that a
        # handful of slow requests is enough to be overloaded
        brokers = [cluster.broker(None, "--unknown-grace", "0.3", "--max-queue", "2",
                                  "--max-prefetch", "1") for _ in range(2)]
        endpoints = [b.endpoint for b in brokers]
        for service in SERVICES:
            cluster.worker(brokers, service, wait=False)
        cluster.worker(brokers, "slow", faulty=True, wait=False)
        for service in (*SERVICES, "slow"):
            for endpoint in endpoints:
                wait_for(lambda e=endpoint, s=service: count_workers(e, s) >= 1, 30,
                         f"a {service} worker at {endpoint}")
        key_args: list[str] = []
        for i, (key, salt) in enumerate(KEYS):
            (root / f"key{i}").write_text(key.hex())
            (root / f"salt{i}").write_text(salt.hex())
            key_args += ["--sign-key", str(root / f"key{i}"), "--sign-salt", str(root / f"salt{i}")]
        gateway = start_gateway(cluster, endpoints, "--max-body-bytes", "200000", "--timeout", "5")
        signed = start_gateway(cluster, endpoints, *key_args)
        yield Env(cluster, endpoints, gateway, signed)
    finally:
        cluster.stop_all()


def slow_idle(env: Env) -> bool:
    return all(count_workers(e, "slow", "idle") == 1 for e in env.brokers)


def test_every_service_through_post(env: Env) -> None:
    for service, request in REQUESTS.items():
        body = msgpack.packb(request, use_bin_type=True)
        status, headers, reply = env.gateway.call(
            "POST", f"/v1/{service}", body, {"Content-Type": "application/msgpack"})
        assert status == 200, (service, reply[:300])
        if service == "echo":
            assert json.loads(reply) == request
            continue
        assert headers["Content-Type"] == TYPES[service], service
        assert reply.startswith(MAGIC[TYPES[service]]), service


def test_json_with_base64_and_multipart(env: Env) -> None:
    status, headers, reply = env.gateway.post_json(
        "thumbnail", {"image": base64.b64encode(PHOTO).decode(), "width": 16, "format": "png"})
    assert status == 200 and headers["Content-Type"] == "image/png", reply[:200]
    boundary = "dipsboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="width"\r\n\r\n16\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="format"\r\n\r\nwebp\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
         "Content-Type: image/jpeg\r\n\r\n").encode() + PHOTO + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    status, headers, reply = env.gateway.call(
        "POST", "/v1/thumbnail", b"".join(parts),
        {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and headers["Content-Type"] == "image/webp", reply[:200]
    status, _, reply = env.gateway.call("POST", "/v1/echo", b'{"a": [1, 2]}',
                                        {"Content-Type": "application/json",
                                         "Accept": "application/msgpack"})
    assert status == 200 and msgpack.unpackb(reply) == {"a": [1, 2]}


def test_bad_requests_are_400_or_415(env: Env) -> None:
    status, _, reply = env.gateway.post_json("ecard", {"pSN": "1"})
    assert status == 400 and json.loads(reply)["error"]["field"] == "pData"
    status, _, reply = env.gateway.call("POST", "/v1/ecard", b"{not json",
                                        {"Content-Type": "application/json"})
    assert status == 400 and "JSON" in json.loads(reply)["error"]["message"]
    status, _, reply = env.gateway.call("POST", "/v1/ecard", b"hi", {"Content-Type": "text/plain"})
    assert status == 415 and error_code(reply) == "unsupported_media_type"
    status, _, reply = env.gateway.post_json("mmi.service", {})
    assert status == 400


def test_json_nested_past_the_parser_s_depth_is_a_400_naming_it(env: Env) -> None:
    """Nesting deep enough to exhaust Python's recursion (a few KB) was a plain-text 500
    and a traceback in the log."""
    deep = b"[" * 5000 + b"]" * 5000
    status, headers, reply = env.gateway.call("POST", "/v1/echo", b'{"a": ' + deep + b"}",
                                              {"Content-Type": "application/json"})
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert "nested deeper" in json.loads(reply)["error"]["message"]
    query = "[" * 1500 + "]" * 1500
    status, headers, reply = env.gateway.call("GET", f"/v1/echo?a={query}")
    assert status == 400 and "nested deeper" in json.loads(reply)["error"]["message"]
    status, _, reply = env.gateway.post_json("echo", {"still": "served"})
    assert status == 200 and json.loads(reply) == {"still": "served"}


def test_unknown_service_is_404(env: Env) -> None:
    status, _, reply = env.gateway.post_json("nosuchservice", {"a": 1})
    assert status == 404 and error_code(reply) == "unknown_service"
    status, _, reply = env.gateway.call("GET", "/nothing/here")
    assert status == 404 and error_code(reply) == "not_found"


def test_mistakes_of_a_first_try_are_told_what_to_do_instead(env: Env) -> None:
    for method, path in (("GET", "/v1/"), ("GET", "/v1"), ("POST", "/v1/"),
                         ("GET", "/v1/a/b/c")):
        status, _, reply = env.gateway.call(method, path, b"{}" if method == "POST" else None)
        assert status == 404 and error_code(reply) == "not_found", (method, path)
        message = json.loads(reply)["error"]["message"]
        assert "/v1/{service}" in message and "/api/fleet" in message, message
        assert "image URL" not in message
    status, _, _ = env.gateway.call("OPTIONS", "/v1/echo")
    assert status == 204  # the preflight of the API is not caught by it
    card = json.dumps(samples.seed_request()).encode()  # curl --data @card.json
    status, _, reply = env.gateway.call("POST", "/v1/ecard", card, {
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "Content-Type: application/json" in json.loads(reply)["error"][
        "message"]
    status, _, reply = env.gateway.call("POST", "/v1/ecard", b"hi", {"Content-Type": "text/plain"})
    assert status == 415 and "application/x-www-form-urlencoded" in json.loads(reply)["error"][
        "message"]
    status, _, reply = env.gateway.call("GET", "/unsafe/rs:fill:300:200/local:///p1.jpg")
    assert status == 400 and "follows `plain/`" in json.loads(reply)["error"]["message"]


def test_too_large_is_413(env: Env) -> None:
    big = json.dumps({"image": "A" * 300_000}).encode()
    status, _, reply = env.gateway.call("POST", "/v1/echo", big,
                                        {"Content-Type": "application/json"})
    assert status == 413 and error_code(reply) == "too_large"
    with env.gateway.raw_socket() as sock:  # chunked: no Content-Length to refuse it by
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        chunk = b"A" * 100_000
        for _ in range(3):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        assert read_status(sock) == 413


def test_worker_failure_is_a_json_5xx(env: Env) -> None:
    status, _, reply = env.gateway.post_json("slow", {"fail": True})
    assert status == 500 and error_code(reply) == "internal"
    status, _, reply = env.gateway.post_json("slow", {"bad_field": "width"})
    assert status == 400 and json.loads(reply)["error"]["field"] == "width"


def test_overloaded_is_503_and_timeout_is_504(env: Env) -> None:
    wait_for(lambda: slow_idle(env), 15, "the slow worker to be idle")
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: env.gateway.post_json("slow", {"sleep": 0.5}),
                                range(10)))
    statuses = [r[0] for r in results]
    assert 503 in statuses and set(statuses) <= {200, 503, 504}, statuses
    refused = next(r for r in results if r[0] == 503)
    assert refused[1]["Retry-After"] == "1" and error_code(refused[2]) == "overloaded"
    wait_for(lambda: slow_idle(env), 15, "the slow worker to be idle")
    impatient = start_gateway(env.cluster, env.brokers, "--timeout", "0.5")
    status, _, reply = impatient.post_json("slow", {"sleep": 1.5})
    assert status == 504 and error_code(reply) in ("timeout", "expired")
    wait_for(lambda: slow_idle(env), 15, "the slow worker to be idle")


def test_concurrency_limit_is_429(env: Env) -> None:
    wait_for(lambda: slow_idle(env), 15, "the slow worker to be idle")
    narrow = start_gateway(env.cluster, env.brokers, "--max-concurrency", "1")
    holder = threading.Thread(target=narrow.post_json, args=("slow", {"sleep": 1.0}))
    holder.start()
    try:
        wait_for(lambda: narrow.get_json("/api/fleet")["gateway"]["in_flight"] == 1, 10,
                 "one request in flight")
        status, headers, reply = narrow.post_json("echo", {"a": 1})
        assert status == 429 and headers["Retry-After"] == "1"
        assert error_code(reply) == "overloaded"
    finally:
        holder.join(10)
    assert narrow.post_json("echo", {"a": 1})[0] == 200


def ecard_query() -> str:
    pdata = ",".join(f"{n:02d}" for n in range(80))
    return f"/ecard?pSN=0012345678&pData={pdata}"


def test_signed_get_accepted_tampered_refused(env: Env) -> None:
    path = ecard_query()
    for key, salt in KEYS:  # either key of the rotation
        status, headers, reply = env.signed.call("GET", f"/v1/{sign(key, salt, path)}{path}")
        assert status == 200 and headers["Content-Type"] == "image/png", reply[:200]
    good = sign(*KEYS[0], path)
    tampered = path.replace("0012345678", "0012345679")
    for url in (f"/v1/{good}{tampered}", f"/v1/x{good[1:]}{path}", f"/v1/{path[1:]}",
                f"/v1/{sign(b'other', b'salt', path)}{path}"):
        status, _, reply = env.signed.call("GET", url)
        assert status == 403 and error_code(reply) == "forbidden", url
    status, headers, _ = env.gateway.call("GET", f"/v1{path}")  # no keys: no signature needed
    assert status == 200 and headers["Content-Type"] == "image/png"


def test_signed_posts_cover_the_body_and_unsigned_ones_are_refused(env: Env) -> None:
    body = json.dumps({"pSN": "0012345678", "pData": ",".join(["61"] * 80)}).encode()
    headers = {"Content-Type": "application/json"}
    status, _, reply = env.signed.call("POST", "/v1/ecard", body, headers)
    assert status == 403 and error_code(reply) == "forbidden"
    signature = sign(*KEYS[0], post_text("/ecard", hashlib.sha256(body).digest()))
    status, got, reply = env.signed.call("POST", f"/v1/{signature}/ecard", body, headers)
    assert status == 200 and got["Content-Type"] == "image/png", reply[:200]
    other = body.replace(b"0012345678", b"0012345679")
    status, _, reply = env.signed.call("POST", f"/v1/{signature}/ecard", other, headers)
    assert status == 403 and error_code(reply) == "forbidden"


def test_a_msgpack_body_passes_through_and_the_service_is_named_before_a_poll(env: Env
                                                                                  ) -> None:
    fresh = start_gateway(env.cluster, env.brokers, "--poll-interval", "3600")
    request = {"a": 1, "blob": b"\x00" * 1000}
    status, _, reply = fresh.call("POST", "/v1/echo", msgpack.packb(request, use_bin_type=True),
                                  {"Content-Type": "application/msgpack",
                                   "Accept": "application/msgpack"})
    assert status == 200 and msgpack.unpackb(reply) == request
    status, _, reply = fresh.call("POST", "/v1/echo", b"\x93\x01\x02\x03",
                                  {"Content-Type": "application/msgpack"})
    assert status == 400 and "map" in json.loads(reply)["error"]["message"]
    _, _, metrics = fresh.call("GET", "/metrics")
    assert 'dips_http_requests_total{service="echo",status="200"} 1.0' in metrics.decode()


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else -1


def test_slow_and_vanishing_clients_do_not_hurt_others(env: Env) -> None:
    gateway = start_gateway(env.cluster, env.brokers, "--body-timeout", "1")
    head = (b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    stalled = gateway.raw_socket()
    stalled.sendall(head + b'{"a": ')  # ... and never the rest
    for _ in range(5):  # bodies cut off by a disconnect
        with gateway.raw_socket() as sock:
            sock.sendall(head + b'{"a"')
    for _ in range(3):  # callers that leave while their request runs
        with gateway.raw_socket() as sock:
            sock.sendall(b'POST /v1/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json'
                         b'\r\nContent-Length: 14\r\n\r\n{"sleep": 0.2}')
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: gateway.post_json("echo", {"i": i}), range(40)))
    assert all(r[0] == 200 and json.loads(r[2]) == {"i": i} for i, r in enumerate(results))
    stalled.settimeout(10)
    assert read_status(stalled) == 408  # the stalled body ran out of time
    stalled.close()
    assert gateway.call("GET", "/healthz")[0] == 200


def test_health(env: Env) -> None:
    health = env.gateway.get_json("/healthz")
    assert health["status"] == "ok" and sorted(health["brokers_up"]) == sorted(env.brokers)


def test_dashboard_data_lists_every_service_and_worker(env: Env) -> None:
    fleet = env.gateway.get_json("/api/fleet")
    assert {s["name"] for s in fleet["services"]} >= {*SERVICES, "slow"}
    workers = [w for h in fleet["hosts"] for w in h["workers"]]
    assert len(workers) == len(SERVICES) + 1
    assert all(set(w["brokers"]) == set(env.brokers) for w in workers)
    status, headers, page = env.gateway.call("GET", "/")
    assert status == 200 and b"/static/app.js" in page
    assert env.gateway.call("GET", "/static/app.js")[0] == 200
