"""imgproxy's documented URL examples, and every case of the contract's fixture, through the
door end to end: the image comes back at the size and in the format the case expects."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from httpkit import start_gateway
from imagekit import image_workers
from PIL import Image

from clusterkit import Cluster
from mdp_http import imgurl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "renderers"))
from imgproxy_testing import fixture, source  # noqa: E402 (the renderers' test sources)

pytestmark = pytest.mark.slow


def case_path(case: dict) -> str:
    """The case's URL path with its source on the workers' root (documented examples name
    example.com, which the tests may not reach: only the source is replaced)."""
    local = f"local:///{case['render']['source']}"
    if "path" in case:
        url = imgurl.parse_path(case["path"])
        build = imgurl.plain_path if "/plain/" in case["path"] else imgurl.encoded_path
        return "/unsafe" + build(list(url.options), local, url.extension)
    options = [part for part in case["options"].split("/") if part]
    return "/unsafe" + imgurl.plain_path(options, local, case.get("extension", ""))


def test_every_contract_case_renders_through_the_door(cluster: Cluster, tmp_path: Path) -> None:
    cases = fixture()
    root = tmp_path / "sources"
    root.mkdir()
    for name in cases["sources"]:
        (root / name).write_bytes(source(name))
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow="http://127.0.0.1:9", roots=root,
                  env={"DIPS_WATERMARK_TEXT": cases["watermark_text"],
                       "DIPS_SOURCE_MAX_BYTES": str(32 * 1024 * 1024)})
    presets = [arg for name, options in cases["presets"].items()
               for arg in ("--preset", f"{name}={options}")]
    gateway = start_gateway(cluster, [broker.endpoint], "--auto-webp", "--auto-avif",
                            "--timeout", "30", *presets)
    wrong = []
    for case in cases["cases"]:
        accept = ",".join(f"image/{fmt}" for fmt in case["render"].get("accept", [])) or "*/*"
        status, headers, body = gateway.call("GET", case_path(case),
                                             headers={"Accept": accept}, timeout=60)
        expected = case["expected"]
        if status != 200:
            wrong.append((case["name"], status, body[:200]))
            continue
        image = Image.open(io.BytesIO(body))
        got = (image.size, headers["Content-Type"])
        want = ((expected["width"], expected["height"]), expected["content_type"])
        if got != want:
            wrong.append((case["name"], got, want))
    assert wrong == []
