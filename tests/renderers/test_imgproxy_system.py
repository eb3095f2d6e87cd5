"""``imgproxy`` and ``info`` served by a real worker behind a real broker.

The worker takes its source settings from its environment; sources are a local root and an
HTTP server on loopback. The reply map crosses the wire as it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from source_server import SourceServer, running

from clusterkit import Cluster
from mdp.client import MDPClient
from mdp.errors import RequestError
from renderers import samples

pytestmark = pytest.mark.slow


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with running() as srv:
        yield srv


def test_a_worker_renders_sources_by_url_and_path(
    cluster: Cluster, server: SourceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = samples.photo_jpeg(800, 600)
    root = tmp_path / "images"
    root.mkdir()
    (root / "photo.jpg").write_bytes(photo)
    server.serve("/photo.jpg", photo, etag='"v1"')
    monkeypatch.setenv("DIPS_SOURCES_ROOTS", str(root))
    monkeypatch.setenv("DIPS_SOURCES_INTERNAL", server.origin)
    broker = cluster.broker()
    cluster.worker([broker], "imgproxy")
    cluster.worker([broker], "info")
    with MDPClient([broker.endpoint]) as client:
        for source in ("local:///photo.jpg", server.url("/photo.jpg")):
            reply = client.send("imgproxy", {
                "source": source, "ops": {"resize": {"type": "fill", "width": 200,
                                                     "height": 200}},
                "format": "", "accept": ["webp"]}, timeout=30)
            assert reply["content_type"] == "image/webp"
            assert (reply["width"], reply["height"]) == (200, 200)
            with Image.open(io.BytesIO(reply["image"])) as image:
                assert image.format == "WEBP" and image.size == (200, 200)
            assert reply["source"]["length"] == len(photo)
        described = client.send("info", {"source": server.url("/photo.jpg")}, timeout=30)
        assert (described["width"], described["height"]) == (800, 600)
        assert described["source"]["etag"] == '"v1"'
        with pytest.raises(RequestError) as caught:
            client.send("imgproxy", {"source": "local:///../etc/passwd"}, timeout=30)
        assert caught.value.code == "source_forbidden" and caught.value.field == "source"
        with pytest.raises(RequestError) as caught:
            client.send("imgproxy", {"source": "http://127.0.0.2:9/a.jpg"}, timeout=30)
        assert caught.value.code == "source_forbidden"
    assert server.hits["/photo.jpg"] == 2  # once per worker process: imgproxy and info
