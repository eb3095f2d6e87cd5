"""thumbor's URLs through a real door (real brokers, the renderers' image workers, a loopback
origin): thumbor's sizes and formats, its signatures, its filters, and the door's cache and
coalescing for them as for imgproxy's URLs. thumbor itself is not needed here: its outputs
are compared with these in test_imageserver_thumbor_compare.py when it is installed."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway
from imagekit import Origin, image_workers, served, signed, write_keys
from PIL import Image

from clusterkit import Cluster, Proc
from mdp_http import thumborurl

pytestmark = pytest.mark.slow

KEY = b"thumbor key for the tests"


def door(cluster: Cluster, origin: Origin, *extra: str,
         env: dict[str, str] | None = None) -> tuple[Gateway, list[Proc]]:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url)
    saved = cluster_env(env or {})
    try:
        return start_gateway(cluster, [broker.endpoint], *extra), [broker]
    finally:
        cluster_env(saved)


def cluster_env(values: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: unset) variables for the next process started; their old values."""
    old = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return old


def host(origin: Origin) -> str:
    return origin.url.removeprefix("http://")


# (thumbor path before the image, image, (width, height), format); a.jpg is 640x480,
# c.jpg 480x640, alpha.png 300x200 with alpha
CASES = [
    ("", "a.jpg", (640, 480), "JPEG"),
    ("300x200/", "a.jpg", (300, 200), "JPEG"),
    ("1000x500/", "a.jpg", (1000, 500), "JPEG"),  # thumbor enlarges WxH
    ("1000x500/filters:no_upscale()/", "a.jpg", (640, 480), "JPEG"),
    ("300x0/", "a.jpg", (300, 225), "JPEG"),
    ("1280x0/", "a.jpg", (1280, 960), "JPEG"),
    ("0x100/", "c.jpg", (75, 100), "JPEG"),
    ("fit-in/300x300/", "a.jpg", (300, 225), "JPEG"),
    ("fit-in/1000x1000/", "a.jpg", (640, 480), "JPEG"),  # fit-in does not, unless upscale()
    ("fit-in/1000x1000/filters:upscale()/", "a.jpg", (1000, 750), "JPEG"),
    ("fit-in/300x300/filters:fill(red)/", "a.jpg", (300, 300), "JPEG"),
    ("-300x-200/", "a.jpg", (300, 200), "JPEG"),
    ("10x10:210x160/", "a.jpg", (200, 150), "JPEG"),
    ("10x10:210x160/100x0/", "a.jpg", (100, 75), "JPEG"),
    ("200x100/left/top/", "a.jpg", (200, 100), "JPEG"),
    ("100x100/smart/", "a.jpg", (100, 100), "JPEG"),
    ("filters:rotate(90)/", "a.jpg", (480, 640), "JPEG"),
    ("300x200/filters:rotate(90)/", "a.jpg", (200, 300), "JPEG"),
    ("10x10:210x160/filters:rotate(270)/", "a.jpg", (150, 200), "JPEG"),
    ("filters:format(webp):quality(40)/", "a.jpg", (640, 480), "WEBP"),
    ("filters:format(png)/", "a.jpg", (640, 480), "PNG"),
    ("100x0/filters:blur(3):strip_exif()/", "a.jpg", (100, 75), "JPEG"),
    ("150x0/", "alpha.png", (150, 100), "PNG"),
]


def test_thumbor_urls_give_thumbors_sizes_and_formats(cluster: Cluster, origin: Origin) -> None:
    gateway, _ = door(cluster, origin)
    wrong = []
    for options, image, size, fmt in CASES:
        path = f"/unsafe/{options}{host(origin)}/{image}"
        status, headers, body = gateway.call("GET", path)
        if status != 200:
            wrong.append((path, status, body[:200]))
            continue
        got = Image.open(io.BytesIO(body))
        if (got.size, got.format) != (size, fmt):
            wrong.append((path, got.size, got.format))
    assert wrong == []


def test_a_thumbor_url_is_cached_and_rendered_once_like_any(cluster: Cluster,
                                                           origin: Origin) -> None:
    gateway, brokers = door(cluster, origin)
    path = f"/unsafe/300x200/smart/{host(origin)}/b.jpg"
    status, first, body = gateway.call("GET", path)
    assert (status, first["X-Cache"]) == (200, "MISS"), body[:300]
    status, again, body2 = gateway.call("GET", path + "?cb=1")
    assert (status, again["X-Cache"], again["ETag"], body2) == (200, "HIT", first["ETag"], body)
    status, _, _ = gateway.call("GET", path, headers={"If-None-Match": first["ETag"]})
    assert status == 304
    # the same source spelt with a scheme, escaped, is the same request
    escaped = f"/unsafe/300x200/smart/http%3A%2F%2F{host(origin)}%2Fb.jpg"
    status, spelt, _ = gateway.call("GET", escaped)
    assert (status, spelt["ETag"]) == (200, first["ETag"])
    assert served(brokers) == 1
    # and the imgproxy URL of the same door still is imgproxy's
    status, _, body = gateway.call("GET", signed(["rs:fill:30:20"], f"{origin.url}/b.jpg",
                                                 signer=None))
    assert status == 200 and Image.open(io.BytesIO(body)).size == (30, 20)


def test_thumbor_filters_the_door_cannot_do_get_a_400_naming_them(cluster: Cluster,
                                                                  origin: Origin) -> None:
    gateway, brokers = door(cluster, origin)
    for options, named in (("filters:grayscale()/", "grayscale"),
                           ("filters:sepia(1)/", "sepia"),
                           ("full-fit-in/100x100/", "full-fit-in"),
                           ("filters:fill(auto)/", "auto")):
        status, _, body = gateway.call("GET", f"/unsafe/{options}{host(origin)}/a.jpg")
        error = json.loads(body)["error"]
        assert (status, error["code"]) == (400, "bad_request"), body[:300]
        assert named in error["message"]
    assert served(brokers) == 0 and sum(origin.hits.values()) == 0


def test_thumbor_signatures_are_checked_with_thumbors_key(cluster: Cluster, origin: Origin,
                                                          tmp_path: Path) -> None:
    (tmp_path / "thumbor.key").write_bytes(KEY + b"\n")
    gateway, _ = door(cluster, origin, *write_keys(tmp_path),
                      env={"DIPS_HTTP_THUMBOR_KEY": str(tmp_path / "thumbor.key")})
    rest = f"fit-in/120x120/{host(origin)}/d.jpg"
    status, _, body = gateway.call("GET", f"/{thumborurl.signature_of(KEY, rest)}/{rest}")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (120, 90)
    for path in (f"/unsafe/{rest}",
                 f"/{thumborurl.signature_of(KEY, rest)}/{rest.replace('120', '121')}",
                 f"/{thumborurl.signature_of(b'another', rest)}/{rest}"):
        status, _, body = gateway.call("GET", path)
        assert (status, json.loads(body)["error"]["code"]) == (403, "forbidden"), path
    # a door with imgproxy's keys and no thumbor key takes no thumbor URL at all
    plain_keys, _ = door(cluster, origin, *write_keys(tmp_path),
                         env={"DIPS_HTTP_THUMBOR_KEY": None})
    status, _, body = plain_keys.call("GET", f"/unsafe/{rest}")
    assert status == 403 and "thumbor key" in json.loads(body)["error"]["message"]
    assert origin.hits["/d.jpg"] == 1
