"""A stalled origin against real processes: a broker, the renderers' imgproxy workers, a door,
and two loopback origins, one that accepts requests and never answers them. The door, when
told to (--origin-hold, off by default), holds an origin after timeouts in a row (its
requests answered at once, the origin not asked), lets one request try it again after the
hold, serves what it has cached for it meanwhile, and bounds the requests in flight for one
origin (--origin-concurrency; docs/HTTP.md, "Slow origins")."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from httpkit import start_gateway
from imagekit import Origin, image_workers, signed

from clusterkit import Cluster
from testkit import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def stalls(origin: Origin) -> Origin:
    other = Origin(origin.root).start()
    yield other
    other.stop()


def fleet(cluster: Cluster, origin: Origin, stalls: Origin, *door_flags: str):
    """One broker, two imgproxy workers allowed both origins (a 3 s source timeout), and a
    door started with ``door_flags``."""
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow=f"{origin.url},{stalls.url}",
                  env={"DIPS_SOURCE_TIMEOUT": "3"})
    return start_gateway(cluster, [broker.endpoint], *door_flags)


def get(gateway, source: str, width: int = 50) -> tuple[int, dict[str, str], dict]:
    status, headers, body = gateway.call("GET", signed([f"w:{width}"], source, signer=None),
                                         timeout=30)
    return status, headers, ({} if status == 200 else json.loads(body)["error"])


def test_an_origin_that_timed_out_twice_is_answered_at_once_then_tried_again(
        cluster: Cluster, origin: Origin, stalls: Origin) -> None:
    gateway = fleet(cluster, origin, stalls, "--origin-hold", "2", "--origin-hold-after", "2",
                    "--cache-ttl", "0.5")
    cached_url = f"{stalls.url}/a.jpg"  # rendered while the origin still answered
    assert get(gateway, cached_url)[0] == 200
    for i in range(2):
        status, _, error = get(gateway, f"{stalls.url}/stall/{i}.jpg")
        assert (status, error["code"]) == (504, "source_timeout")
        assert "--origin-hold" not in error["message"]  # the worker's own answer
    assert stalls.hits["/stall/0.jpg"] == stalls.hits["/stall/1.jpg"] == 1
    status, headers, error = get(gateway, f"{stalls.url}/stall/2.jpg")
    assert (status, error["code"], error["field"]) == (504, "source_timeout", "source")
    assert stalls.url.replace("http://", "") in error["message"]
    assert "--origin-hold" in error["message"]
    assert headers["Cache-Control"] == "no-store" and 1 <= int(headers["Retry-After"]) <= 2
    assert stalls.hits["/stall/2.jpg"] == 0  # answered by the door: no worker asked it
    # a cached result is served all the same; this one is past its TTL and cannot be
    # revalidated: what the origin gave last (stale-if-error)
    status, headers, _ = get(gateway, cached_url)
    assert (status, headers["X-Cache"]) == (200, "STALE")
    assert get(gateway, f"{origin.url}/a.jpg")[0] == 200  # other origins are not held
    assert gateway.metric("dips_http_origin_timeouts_total") == 2
    assert gateway.metric('dips_http_origin_refused_total{reason="held"}') == 2  # and STALE
    assert gateway.metric("dips_http_origins_held") == 1
    images = json.loads(gateway.call("GET", "/api/fleet")[2])["gateway"]["images"]
    assert (images["origins_held"], images["origin_timeouts"], images["origin_refused"]) == (
        1, 2, 2)  # the dashboard's figures

    # the hold passes: one request tries the origin, the others are still answered at once
    wait_for(lambda: gateway.metric("dips_http_origins_held") == 0, 20, "the hold to pass")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        probe = pool.submit(get, gateway, f"{stalls.url}/stall/3.jpg")
        wait_for(lambda: stalls.hits["/stall/3.jpg"] == 1, 20, "the probe at the origin")
        status, _, error = get(gateway, f"{stalls.url}/stall/4.jpg")
        assert (status, error["code"]) == (504, "source_timeout")
        assert "trying it again" in error["message"] and stalls.hits["/stall/4.jpg"] == 0
        assert probe.result()[0] == 504  # still stalled: held again
    status, _, error = get(gateway, f"{stalls.url}/stall/5.jpg")
    assert "--origin-hold" in error["message"] and stalls.hits["/stall/5.jpg"] == 0
    assert gateway.metric('dips_http_origin_refused_total{reason="held"}') == 4


def test_requests_for_one_origin_in_the_fleet_are_bounded(
        cluster: Cluster, origin: Origin, stalls: Origin) -> None:
    gateway = fleet(cluster, origin, stalls, "--origin-concurrency", "1", "--origin-hold", "0")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, gateway, f"{stalls.url}/stall/0.jpg")
        wait_for(lambda: stalls.hits["/stall/0.jpg"] == 1, 20, "the first request at the origin")
        status, headers, error = get(gateway, f"{stalls.url}/stall/1.jpg")
        assert (status, error["code"], headers["Retry-After"]) == (503, "overloaded", "1")
        assert "--origin-concurrency 1" in error["message"] and stalls.hits["/stall/1.jpg"] == 0
        # the other worker serves another origin meanwhile
        assert get(gateway, f"{origin.url}/a.jpg")[0] == 200
        assert first.result()[0] == 504
    assert gateway.metric('dips_http_origin_refused_total{reason="busy"}') == 1
    assert get(gateway, f"{stalls.url}/a.jpg")[0] == 200  # its place is free again
