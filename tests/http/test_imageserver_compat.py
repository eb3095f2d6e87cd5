"""imgproxy's URLs as real clients, proxies and CDNs send them, through a real door: expiry
times, query strings, normalised paths and If-Modified-Since (real brokers, image workers,
a loopback origin)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway
from imagekit import Origin, image_workers, served, signed, write_keys

from clusterkit import Cluster

pytestmark = pytest.mark.slow


def door(cluster: Cluster, origin: Origin, *extra: str) -> tuple[Gateway, list]:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url, roots=origin.root)
    return start_gateway(cluster, [broker.endpoint], *extra), [broker]


def max_age(headers: dict[str, str]) -> int:
    found = re.search(r"max-age=(\d+)", headers["Cache-Control"])
    assert found is not None, headers["Cache-Control"]
    return int(found.group(1))


def test_a_real_expiry_is_served_until_it_passes_and_no_cache_keeps_it_longer(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    gateway, _ = door(cluster, origin, *write_keys(tmp_path),
                      "--cache-control", "public, max-age=3600")
    soon = int(time.time()) + 120
    status, headers, body = gateway.call("GET", signed(["w:40", f"exp:{soon}"],
                                                       f"{origin.url}/a.jpg"))
    assert status == 200, body[:300]
    assert 0 < max_age(headers) <= 120  # capped at the expiry, not the door's hour
    status, later, _ = gateway.call("GET", signed(["w:40", f"exp:{soon + 86400}"],
                                                  f"{origin.url}/a.jpg"))
    assert (status, max_age(later)) == (200, 3600)
    status, never, _ = gateway.call("GET", signed(["w:40", "exp:0"], f"{origin.url}/a.jpg"))
    assert (status, max_age(never)) == (200, 3600)  # 0: no expiry, as in imgproxy
    status, _, body = gateway.call("GET", signed(["w:40", f"exp:{int(time.time()) - 1}"],
                                                 f"{origin.url}/a.jpg"))
    assert (status, json.loads(body)["error"]["code"]) == (404, "not_found")


def test_mdpctl_signs_a_url_with_a_real_expiry(tmp_path: Path) -> None:
    keys = write_keys(tmp_path)
    soon = str(int(time.time()) + 600)
    done = subprocess.run(
        [sys.executable, "-m", "mdpctl", "imgproxy", "sign", "--key", keys[1], "--salt", keys[3],
         "--options", f"w:40/exp:{soon}", "--source", "http://127.0.0.1:9/a.jpg"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == signed(["w:40", f"exp:{soon}"], "http://127.0.0.1:9/a.jpg")


def test_a_query_string_is_dropped_as_imgproxy_drops_it(cluster: Cluster, origin: Origin,
                                                         tmp_path: Path) -> None:
    gateway, brokers = door(cluster, origin, *write_keys(tmp_path))
    url = signed(["rs:fit:100:100"], f"{origin.url}/b.jpg")
    status, plain, body = gateway.call("GET", url)
    assert status == 200, body[:300]
    for query in ("?v=2", "?utm_source=mail&x=%3F"):
        status, headers, again = gateway.call("GET", url + query)
        assert (status, headers["ETag"], again) == (200, plain["ETag"], body), query
    assert served(brokers) == 1  # one request, however it was decorated


def test_paths_a_proxy_normalised_are_repaired_and_their_signatures_still_checked(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    gateway, brokers = door(cluster, origin, *write_keys(tmp_path))
    for options, source in ((["rs:fill:60:40"], f"{origin.url}/a.jpg"),
                            (["rs:fill:60:40"], "local:///a.jpg")):
        good = signed(options, source)
        status, wanted, body = gateway.call("GET", good)
        assert status == 200, body[:300]
        collapsed = re.sub(r"/plain/(https?|local):/+", r"/plain/\1:/", good)
        escaped = good.replace("rs:fill:60:40", "rs%3Afill%3A60%3A40")
        for sent in (collapsed, escaped):
            assert sent != good
            status, headers, again = gateway.call("GET", sent)
            assert (status, headers["ETag"], again) == (200, wanted["ETag"], body), sent
        tampered = collapsed.replace("60:40", "61:40")
        status, _, _ = gateway.call("GET", tampered)
        assert status == 403
    assert served(brokers) == 2


def test_if_modified_since_gets_a_304_unless_if_none_match_says_otherwise(
        cluster: Cluster, origin: Origin) -> None:
    gateway, _ = door(cluster, origin)
    url = signed(["w:50"], f"{origin.url}/c.jpg", signer=None)
    status, headers, _ = gateway.call("GET", url)
    assert status == 200 and headers["Last-Modified"]
    since = headers["Last-Modified"]
    status, not_modified, body = gateway.call("GET", url, headers={"If-Modified-Since": since})
    assert (status, body, not_modified["ETag"]) == (304, b"", headers["ETag"])
    status, _, body = gateway.call("GET", url, headers={
        "If-Modified-Since": "Thu, 01 Jan 2004 00:00:00 GMT"})
    assert status == 200 and body
    status, _, body = gateway.call("GET", url, headers={"If-Modified-Since": since,
                                                        "If-None-Match": '"another"'})
    assert status == 200 and body  # If-None-Match takes precedence (RFC 9110 13.2.2)
