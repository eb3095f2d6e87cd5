"""Where thumbor and imgproxy serve what a door once refused, end to end through real
brokers, the renderers' own workers and a gateway: a truncated source (rendered as far as it
decodes, with ``X-Image-Warning``), a 20,000 px panorama (bounded by pixels, its result by
what the format holds), and ``wm:`` on a fleet without a watermark (skipped)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway
from imagekit import image_workers
from PIL import Image

from clusterkit import Cluster
from mdp.body import unpack
from mdp_http.resultcache import Entry
from renderers import samples

pytestmark = pytest.mark.slow
NOWHERE = "http://127.0.0.1:9"  # no source is fetched over HTTP here


def size_of(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        image.load()
        return image.size


def sources(root: Path) -> Path:
    root.mkdir()
    good = samples.photo_jpeg(640, 480)
    (root / "good.jpg").write_bytes(good)
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "header-only.jpg").write_bytes(samples.hostile_inputs()["jpeg without scan data"])
    (root / "wide.jpg").write_bytes(samples.photo_jpeg(20_000, 800, quality=70))
    return root


def fleet(cluster: Cluster, root: Path, env: dict[str, str] | None = None) -> Gateway:
    broker = cluster.broker()
    for service in ("imgproxy", "info"):
        image_workers(cluster, [broker], 1, allow=NOWHERE, roots=root, service=service,
                      env={"DIPS_SOURCE_MAX_BYTES": str(32 * 1024 * 1024), **(env or {})})
    return start_gateway(cluster, [broker.endpoint], "--auto-webp", "--timeout", "30")


def test_damaged_and_wide_sources_through_the_door(cluster: Cluster, tmp_path: Path) -> None:
    # wide results, bounded by their format: a fleet without the result limit (4,096 px by
    # default; test_imageserver_result_limit.py)
    gateway = fleet(cluster, sources(tmp_path / "sources"),
                    env={"DIPS_MAX_RESULT_DIMENSION": "0"})

    # a truncated JPEG renders, says so, and keeps saying so from the cache
    url = "/unsafe/rs:fit:64/plain/local:///truncated.jpg@png"
    status, headers, body = gateway.call("GET", url)
    assert status == 200, body[:300]
    assert size_of(body) == (64, 48)
    warning = headers["X-Image-Warning"]
    assert warning.startswith("damaged source rendered as far as it decodes (image file is")
    status, again, cached = gateway.call("GET", url)
    assert (status, again["X-Cache"], again["X-Image-Warning"], cached) == (
        200, "HIT", warning, body)
    assert gateway.metric("dips_http_damaged_sources_total") == 1
    status, headers, body = gateway.call("GET", "/info/unsafe/plain/local:///truncated.jpg")
    assert status == 200 and json.loads(body)["warning"] == headers["X-Image-Warning"]
    status, headers, _ = gateway.call("GET", "/unsafe/rs:fit:64/plain/local:///good.jpg")
    assert status == 200 and "X-Image-Warning" not in headers

    # nothing to decode: a clear 400 naming it
    status, _, body = gateway.call("GET", "/unsafe/rs:fit:64/plain/local:///header-only.jpg")
    assert status == 400
    assert "no image data after its header" in json.loads(body)["error"]["message"]

    # a 20,000 x 800 panorama: a thumbnail renders; a WebP of its full width is refused by
    # name; a negotiated format that cannot hold it gives way to the source's
    status, _, body = gateway.call("GET", "/unsafe/rs:fit:300/plain/local:///wide.jpg@webp")
    assert status == 200, body[:300]
    assert size_of(body) == (300, 12)
    status, _, body = gateway.call("GET", "/unsafe/plain/local:///wide.jpg@webp")
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "webp holds at most 16383 px per side" in message and "20000x800" in message
    status, headers, body = gateway.call("GET", "/unsafe/rs:fit:20000/plain/local:///wide.jpg",
                                         headers={"Accept": "image/webp,*/*"}, timeout=60)
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "image/jpeg" and size_of(body) == (20_000, 800)

    # wm: on a fleet with no watermark: skipped, as imgproxy skips it
    status, _, marked = gateway.call("GET",
                                     "/unsafe/rs:fit:64/wm:0.5:soea/plain/local:///good.jpg@png")
    assert status == 200, marked[:300]
    _, _, plain = gateway.call("GET", "/unsafe/rs:fit:64/plain/local:///good.jpg@png")
    assert marked == plain


def test_workers_told_to_refuse_damaged_sources_refuse_them(
        cluster: Cluster, tmp_path: Path) -> None:
    gateway = fleet(cluster, sources(tmp_path / "sources"), env={"DIPS_RENDER_DAMAGED": "0"})
    status, _, body = gateway.call("GET", "/unsafe/rs:fit:64/plain/local:///truncated.jpg")
    assert status == 400
    message = json.loads(body)["error"]["message"]
    assert "damaged image (decoding: image file is truncated" in message
    assert gateway.metric("dips_http_damaged_sources_total") == 0


def test_a_warning_travels_with_a_shared_cache_entry() -> None:
    entry = Entry(b"img", "image/png", 64, 48, '"e"', "", warning="damaged source ...")
    assert Entry.read(entry.to_bytes(1000.0)) == (entry, 1000.0)
    plain = Entry(b"img", "image/png", 64, 48)
    assert Entry.read(plain.to_bytes(1000.0)) == (plain, 1000.0)
    # an entry without a warning keeps version 2, which doors without this change read
    assert unpack(plain.to_bytes(1000.0))[0] == 2 and unpack(entry.to_bytes(1000.0))[0] == 3
