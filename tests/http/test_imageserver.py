"""The image server end to end: real brokers, image workers, gateways, an origin server on
loopback and a real redis-server. Every request is signed in imgproxy's scheme."""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import shutil
import signal
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway
from imagekit import (
    REDIS_SERVER,
    SIGNER,
    Origin,
    image_workers,
    make_photos,
    redis_server,
    served,
    signed,
    write_keys,
)
from PIL import Image

from clusterkit import Cluster, Proc, needs
from mdp.status import WorkerStatus
from mdp_http.signing import post_text
from testkit import broker_counter, broker_status, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def decode(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def metric(gateway: Gateway, name: str) -> float:
    _, _, body = gateway.call("GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_signed_url_renders_once_then_comes_from_the_cache_or_304(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url)
    gateway = start_gateway(cluster, [broker.endpoint], *write_keys(tmp_path),
                            "--cache-control", "public, max-age=60")
    url = signed(["rs:fit:200:200"], f"{origin.url}/a.jpg")
    status, headers, body = gateway.call("GET", url)
    assert status == 200, body[:300]
    assert decode(body).size == (200, 150)
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Control"] == "public, max-age=60"
    assert headers["ETag"].startswith('"') and headers["X-Cache"] == "MISS"
    assert "Last-Modified" in headers  # from the origin's file
    status, again, body2 = gateway.call("GET", url)
    assert (status, again["X-Cache"], again["ETag"], body2) == (200, "HIT", headers["ETag"], body)
    status, not_modified, body3 = gateway.call("GET", url,
                                               headers={"If-None-Match": headers["ETag"]})
    assert (status, body3, not_modified["ETag"]) == (304, b"", headers["ETag"])
    assert served([broker]) == 1
    assert metric(gateway, "dips_http_cache_hits_total") == 1
    assert metric(gateway, "dips_http_not_modified_total") == 1
    assert metric(gateway, 'dips_http_requests_total{service="imgproxy",status="200"}') == 2
    assert metric(gateway, 'dips_http_requests_total{service="imgproxy",status="304"}') == 1
    # the base64 spelling of the same request is the same request
    status, encoded, _ = gateway.call("GET", signed(["rs:fit:200:200"], f"{origin.url}/a.jpg",
                                                    encoded=True))
    assert (status, encoded["ETag"], encoded["X-Cache"]) == (200, headers["ETag"], "HIT")


def test_a_result_past_its_ttl_is_revalidated_and_rendered_again_only_if_its_source_changed(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    """--cache-ttl passes: the door sends the source's validators; an unchanged source (a
    remote one answering 304, a local file as it was) keeps the result and its ETag without
    a render; a file changed in place is rendered again, with a new ETag."""
    roots = tmp_path / "roots"
    make_photos(roots)
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url, roots=roots,
                  env={"DIPS_SOURCE_CACHE_TTL": "0"})  # the worker asks the origin each time
    gateway = start_gateway(cluster, [broker.endpoint], *write_keys(tmp_path),
                            "--cache-ttl", "0.2")

    def past_ttl(url: str) -> tuple[int, dict[str, str], bytes]:
        """The first answer that did not come fresh from the cache."""
        return wait_for(lambda: (got := gateway.call("GET", url))[1].get("X-Cache") != "HIT"
                        and got, 20, "the result's TTL to pass")

    for source in (f"{origin.url}/a.jpg", "local:///a.jpg"):
        url = signed(["rs:fit:200:200"], source)
        status, first, body = gateway.call("GET", url)
        assert (status, first["X-Cache"]) == (200, "MISS"), body[:300]
        status, again, body2 = past_ttl(url)
        assert (status, again["X-Cache"], again["ETag"], body2) == (
            200, "REVALIDATED", first["ETag"], body)
    assert origin.hits["/a.jpg"] == 2  # the render's GET, then one conditional GET (a 304)
    assert metric(gateway, 'dips_http_revalidated_total{outcome="unchanged"}') == 2
    url = signed(["rs:fit:200:200"], "local:///a.jpg")
    _, before, old = gateway.call("GET", url)
    (roots / "a.jpg").write_bytes((roots / "c.jpg").read_bytes())  # changed in place
    status, after, new = past_ttl(url)
    assert (status, after["X-Cache"]) == (200, "MISS")
    assert after["ETag"] != before["ETag"] and decode(new).size == (150, 200) != decode(old).size
    assert metric(gateway, 'dips_http_revalidated_total{outcome="changed"}') == 1
    status, _, _ = gateway.call("GET", url, headers={"If-None-Match": before["ETag"]})
    assert status == 200  # the old ETag no longer names what the URL gives
    status, _, none = gateway.call("GET", url, headers={"If-None-Match": after["ETag"]})
    assert (status, none) == (304, b"")


def door_sees(gateway: Gateway, service: str) -> list[int]:
    """The pids of the workers of ``service`` in the door's latest poll of the fleet."""
    hosts = gateway.get_json("/api/fleet")["hosts"]
    return [w["pid"] for host in hosts for w in host["workers"] if w["service"] == service]


def code_tree(root: Path, changed: str) -> dict[str, str]:
    """A copy of the workers' code with a comment added to ``changed`` (a path in the tree):
    a new code version, and a new output version where it is the renderers' code. The
    environment runs a worker from it."""
    for package in ("mdp", "renderers"):
        shutil.copytree(REPO / package, root / package)  # with its compiled modules
    with (root / changed).open("a", encoding="utf-8") as f:
        f.write("\n# changed by a test\n")
    return {"PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}  # (not the working directory's)


def test_an_upgrade_keeps_cached_images_unless_what_draws_them_changed(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    """The image cache is keyed by the workers' output version: new core code (a new code
    version) keeps every cached image; new renderer code renders anew."""
    broker = cluster.broker()
    gateway = start_gateway(cluster, [broker.endpoint], *write_keys(tmp_path))
    url = signed(["rs:fit:200:200"], f"{origin.url}/a.jpg")
    previous: Proc | None = None
    seen: list[WorkerStatus] = []
    for env, expected in ((None, "MISS"),
                          (code_tree(tmp_path / "core", "mdp/worker.py"), "HIT"),
                          (code_tree(tmp_path / "draw", "renderers/ops.py"), "MISS")):
        [worker] = image_workers(cluster, [broker], 1, allow=origin.url, env=env)
        if previous is not None:
            previous.signal(signal.SIGTERM)
            assert previous.wait() == 0
        previous = worker
        wait_for(lambda w=worker: door_sees(gateway, "imgproxy") == [w.pid],
                 20, f"the door to see worker {worker.pid} alone")
        status_code, headers, body = gateway.call("GET", url)
        assert (status_code, headers["X-Cache"]) == (200, expected), body[:300]
        status = broker_status(broker.endpoint)
        found = status.find("imgproxy", worker.pid) if status else None
        assert found is not None and found.served == (expected == "MISS")
        seen.append(found)
    first, core, draw = seen
    assert len({first.version, core.version, draw.version}) == 3  # three code versions
    assert first.output == core.output != draw.output and len(first.output) == 16


def test_signatures_are_required_for_every_request_that_names_a_source(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url)
    gateway = start_gateway(cluster, [broker.endpoint], *write_keys(tmp_path))
    good = signed(["w:50"], f"{origin.url}/b.jpg")
    unsigned = signed(["w:50"], f"{origin.url}/b.jpg", signer=None)
    tampered = good.replace("w:50", "w:51")
    for path in (unsigned, tampered):
        status, _, body = gateway.call("GET", path)
        assert status == 403, body[:200]
        assert json.loads(body)["error"]["code"] == "forbidden"
    status, _, _ = gateway.call("POST", "/v1/imgproxy",
                                json.dumps({"source": f"{origin.url}/b.jpg"}).encode(),
                                {"Content-Type": "application/json"})
    assert status == 403
    photo = (origin.root / "b.jpg").read_bytes()
    path = "/w:40/upload.png"
    signature = SIGNER.sign(post_text(path, hashlib.sha256(photo).digest()))
    status, _, body = gateway.call("POST", "/" + signature + path, photo,
                                   {"Content-Type": "image/jpeg"})
    assert status == 200, body[:300]
    assert decode(body).size == (40, 30) and decode(body).format == "PNG"
    status, _, _ = gateway.call("POST", "/" + signature + path, photo + b"x",
                                {"Content-Type": "image/jpeg"})
    assert status == 403
    assert origin.hits["/b.jpg"] == 0  # nothing unsigned reached the origin
    status, _, body = gateway.call("GET", good)
    assert status == 200 and decode(body).size == (50, 38)
    assert origin.hits["/b.jpg"] == 1


def test_the_format_left_open_is_negotiated_and_varies_by_accept(
        cluster: Cluster, origin: Origin) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url)
    gateway = start_gateway(cluster, [broker.endpoint], "--auto-webp",
                            "--cors-origin", "https://site.example")
    url = signed(["w:100"], f"{origin.url}/alpha.png", signer=None)
    status, headers, body = gateway.call("GET", url, headers={"Accept": "image/*"})
    assert (status, headers["Content-Type"], decode(body).format) == (200, "image/png", "PNG")
    assert decode(body).mode == "RGBA" and "Accept" in headers["Vary"]
    status, webp, body = gateway.call("GET", url, headers={
        "Accept": "image/avif,image/webp,*/*", "Origin": "https://site.example"})
    assert (status, webp["Content-Type"], decode(body).format) == (200, "image/webp", "WEBP")
    assert webp["ETag"] != headers["ETag"]
    assert webp["Access-Control-Allow-Origin"] == "https://site.example"
    status, fixed, _ = gateway.call("GET", signed(["w:100"], f"{origin.url}/alpha.png", "jpg",
                                                  signer=None),
                                    headers={"Accept": "image/webp"})
    assert (status, fixed["Content-Type"]) == (200, "image/jpeg") and "Vary" not in fixed
    status, preflight, _ = gateway.call("OPTIONS", url, headers={
        "Origin": "https://site.example", "Access-Control-Request-Method": "GET"})
    assert status == 204 and "GET" in preflight["Access-Control-Allow-Methods"]


def test_the_info_endpoint_answers_the_sources_facts(cluster: Cluster, origin: Origin) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url, service="info")
    gateway = start_gateway(cluster, [broker.endpoint])
    path = "/info" + signed([], f"{origin.url}/c.jpg", signer=None)
    status, headers, body = gateway.call("GET", path)
    assert status == 200, body[:300]
    facts = json.loads(body)
    assert (facts["width"], facts["height"], facts["format"]) == (480, 640, "jpeg")
    assert headers["Content-Type"].startswith("application/json")


def test_options_the_server_does_not_do_get_a_400_naming_them(cluster: Cluster) -> None:
    broker = cluster.broker()
    gateway = start_gateway(cluster, [broker.endpoint])
    for option, named in (("trim:10", "trim"), ("zz:1", "zz"), ("w:x", "w")):
        status, _, body = gateway.call("GET", f"/unsafe/{option}/plain/http://127.0.0.1/a.jpg")
        assert status == 400
        assert named in json.loads(body)["error"]["message"]


def test_hostile_sources_each_get_a_clear_4xx(cluster: Cluster, origin: Origin,
                                              tmp_path: Path) -> None:
    other = Origin(origin.root).start()  # a loopback server that is not allow-listed
    try:
        broker = cluster.broker()
        # localhost is an allowed origin, but only 127.0.0.1 may be internal: a name that
        # resolves to a loopback address is refused before any connection
        by_name = origin.url.replace("127.0.0.1", "localhost")
        image_workers(cluster, [broker], 1, allow=f"{origin.url},{by_name}", roots=origin.root,
                      env={"DIPS_SOURCES_INTERNAL": origin.url})
        gateway = start_gateway(cluster, [broker.endpoint], "--timeout", "20")
        cases = [
            (f"{other.url}/a.jpg", 403, "source_forbidden"),
            (f"{by_name}/c.jpg", 403, "source_forbidden"),
            (f"{origin.url}/redirect?to={other.url}/a.jpg", 403, "source_forbidden"),
            (f"{origin.url}/missing.jpg", 404, "source_not_found"),
            (f"{origin.url}/not-an-image.jpg", 422, "source_not_image"),
            (f"{origin.url}/big.jpg", 413, "source_too_large"),
            (f"{origin.url}/trickle.jpg", 504, "source_timeout"),
            ("local:///../etc/passwd", 403, "source_forbidden"),
        ]
        for source, status_wanted, code in cases:
            status, headers, body = gateway.call("GET", signed(["w:10"], source, signer=None))
            assert (status, json.loads(body)["error"]["code"]) == (status_wanted, code), source
            assert headers["Cache-Control"] == "no-store"
        assert sum(other.hits.values()) == 0  # never contacted
        assert origin.hits["/c.jpg"] == 0  # the name's address was refused before connecting
    finally:
        other.stop()


def test_identical_requests_at_one_door_render_once(cluster: Cluster, origin: Origin) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow=origin.url,
                  env={"DIPS_TEST_RENDER_DELAY": "0.5"})
    gateway = start_gateway(cluster, [broker.endpoint])
    url = signed(["rs:fill:64:64"], f"{origin.url}/d.jpg", signer=None)
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: gateway.call("GET", url), range(50)))
    assert all(status == 200 for status, _, _ in results)
    assert len({body for _, _, body in results}) == 1
    assert served([broker]) == 1
    # the counters say so: one render, every other request waited for it here or came after
    # it from the cache
    assert metric(gateway, 'dips_http_renders_total{service="imgproxy"}') == 1
    assert (metric(gateway, "dips_http_coalesced_total")
            + metric(gateway, "dips_http_cache_hits_total")) == 49


def test_five_sizes_of_one_source_fetch_it_once_per_worker(cluster: Cluster,
                                                           origin: Origin) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow=origin.url)
    gateway = start_gateway(cluster, [broker.endpoint])
    urls = [signed([f"w:{20 + 10 * (i % 5)}"], f"{origin.url}/d.jpg", signer=None)
            for i in range(100)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda u: gateway.call("GET", u), urls))
    assert all(status == 200 for status, _, _ in results)
    assert served([broker]) == 5
    assert 1 <= origin.hits["/d.jpg"] <= 2


@needs(REDIS_SERVER is not None, "redis-server")
def test_redis_killed_under_load_fails_no_request_and_hits_come_back(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow=origin.url)
    with redis_server(tmp_path) as redis:
        doors = [start_gateway(cluster, [broker.endpoint], "--redis", redis.url,
                               "--cache-bytes", "0") for _ in range(2)]
        urls = [signed([f"w:{16 + i}"], f"{origin.url}/a.jpg", signer=None) for i in range(8)]
        status, _, _ = doors[0].call("GET", urls[0])
        assert status == 200
        wait_for(lambda: redis.keys() >= 1, 5, "the result in redis")
        status, headers, _ = doors[1].call("GET", urls[0])
        assert (status, headers["X-Cache"]) == (200, "HIT")  # rendered by the other door
        redis.kill()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: doors[i % 2].call("GET", urls[i % 8]), range(80)))
        assert [s for s, _, _ in results if s != 200] == []
        rendered_while_down = served([broker])
        assert rendered_while_down > 8  # renders went on
        redis.start()

        def hit_again() -> bool:
            doors[0].call("GET", urls[3])
            return doors[1].call("GET", urls[3])[1].get("X-Cache") == "HIT"

        wait_for(hit_again, 30, "hits from redis again")


def two_doors_two_brokers(cluster: Cluster, origin: Origin) -> tuple[list[Proc], list[Gateway]]:
    """Two brokers, two stand-in image workers on both whose render takes long enough for
    every request of a test to be in flight together, and two doors that list the brokers
    in opposite orders."""
    brokers = [cluster.broker(), cluster.broker()]
    image_workers(cluster, brokers, 2, allow=origin.url, stand_in=True,
                  env={"DIPS_TEST_RENDER_DELAY": "1.5"})
    endpoints = [b.endpoint for b in brokers]
    return brokers, [start_gateway(cluster, endpoints), start_gateway(cluster, endpoints[::-1])]


def test_identical_requests_through_two_doors_and_two_brokers_render_once(
        cluster: Cluster, origin: Origin) -> None:
    brokers, doors = two_doors_two_brokers(cluster, origin)
    url = signed(["rs:fill:80:80"], f"{origin.url}/b.jpg", signer=None)
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda i: doors[i % 2].call("GET", url), range(100)))
    assert [status for status, _, _ in results] == [200] * 100
    assert len({body for _, _, body in results}) == 1
    assert served(brokers) == 1
    assert origin.hits["/b.jpg"] == 1
    coalesced = sum(broker_counter(b.endpoint, "coalesced") for b in brokers)
    assert coalesced >= 1  # the second door's request joined the first's at the home broker


def test_identical_uploads_through_two_doors_and_two_brokers_render_once(
        cluster: Cluster, origin: Origin) -> None:
    # an upload's key is its body's SHA-256 with the options: the same photo POSTed to
    # both doors at once is rendered once, at the key's home broker, and every caller gets
    # the one result
    brokers, doors = two_doors_two_brokers(cluster, origin)
    photo = (origin.root / "c.jpg").read_bytes()
    other = (origin.root / "a.jpg").read_bytes()  # a different body: a render of its own

    def upload(i: int) -> tuple[int, dict[str, str], bytes]:
        body = other if i == 0 else photo
        return doors[i % 2].call("POST", "/unsafe/rs:fit:60:60/upload.png", body,
                                 {"Content-Type": "image/jpeg"})

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(upload, range(40)))
    assert [status for status, _, _ in results] == [200] * 40, results[0][2][:300]
    assert len({body for _, _, body in results[1:]}) == 1
    assert decode(results[1][2]).size == (45, 60)  # c.jpg is 480x640
    assert decode(results[0][2]).size == (60, 45) and results[0][2] != results[1][2]
    assert served(brokers) == 2
    assert sum(origin.hits.values()) == 0  # nothing fetched: the bytes came with each call
    assert sum(broker_counter(b.endpoint, "coalesced") for b in brokers) >= 1
