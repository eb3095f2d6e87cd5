"""Sources wider than WebP's 16,383 px: bounded by pixels, as imgproxy bounds them
(IMGPROXY_MAX_SRC_RESOLUTION); results bounded by what their format can hold; bombs still
refused before any pixel is decoded."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from PIL import Image, ImageFile
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from mdp.errors import BadRequest
from renderers import decode, encode, samples
from renderers.imgproxy import options as imgproxy_options
from renderers.imgproxy.pipeline import draft_hint


@pytest.fixture(autouse=True)
def results_bounded_by_their_format(configure: Any) -> None:
    """What a format holds is what these tests look at: the result limit (4,096 px by
    default, DIPS_MAX_RESULT_DIMENSION) is off, as a site that serves wide results sets it."""
    configure(max_result_dimension=0)


@pytest.fixture(scope="module")
def wide_jpeg() -> bytes:
    """20,000 x 800 (16 MP): the panorama thumbor and imgproxy render."""
    return samples.photo_jpeg(20_000, 800, quality=70)


@pytest.fixture(scope="module")
def long_jpeg() -> bytes:
    """17,000 x 48: wider than WebP and AVIF can hold, yet cheap to write in any format."""
    return samples.photo_jpeg(17_000, 48, quality=70)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height``."""
    data = bytearray(samples.encode(Image.new("L", (4, 4)), "PNG"))
    body = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


def test_a_20000_px_panorama_renders_as_a_thumbnail(wide_jpeg: bytes) -> None:
    reply = renderers.get("imgproxy").render(
        {"image": wide_jpeg, "ops": {"resize": {"width": 300}}, "format": "webp"}
    )
    assert (reply["width"], reply["height"]) == (300, 12)
    assert size_of(reply["image"]) == (300, 12)
    thumb = renderers.get("thumbnail").render({"image": wide_jpeg, "width": 300})
    assert size_of(thumb) == (300, 12)


def test_the_panorama_is_decoded_at_an_eighth(wide_jpeg: bytes) -> None:
    """JPEG draft mode: the 16 MP source costs a 2,500 x 100 decode for a 300 px result."""
    options = imgproxy_options.parse({"resize": {"width": 300}}, renderers.current().max_side)
    found = decode.open_image(wide_jpeg, "source", renderers.current(), draft_hint(options))
    assert found.source_size == (20_000, 800)
    assert found.image.size == (2_500, 100)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "gif"])
def test_a_wide_result_in_a_format_that_holds_it(long_jpeg: bytes, fmt: str) -> None:
    reply = renderers.get("imgproxy").render({"image": long_jpeg, "format": fmt})
    assert size_of(reply["image"]) == (17_000, 48)


@pytest.mark.parametrize(("fmt", "limit"), [("webp", 16_383), ("avif", 16_384)])
def test_a_format_that_cannot_hold_the_result_is_named(
    long_jpeg: bytes, fmt: str, limit: int
) -> None:
    if fmt == "avif" and not renderers.settings.AVIF_ENCODER:
        pytest.skip("this Pillow has no AVIF encoder")
    with pytest.raises(BadRequest) as caught:
        renderers.get("imgproxy").render({"image": long_jpeg, "format": fmt})
    assert caught.value.field == "format"
    assert f"{fmt} holds at most {limit} px per side" in caught.value.message
    assert "17000x48" in caught.value.message
    if fmt == "webp":  # the toolkit writes no AVIF
        with pytest.raises(BadRequest, match=f"{fmt} holds at most {limit} px"):
            renderers.get("convert").render({"image": long_jpeg, "format": fmt})


def test_negotiation_skips_a_format_that_cannot_hold_the_result(
    long_jpeg: bytes, configure: Any
) -> None:
    configure(auto_webp=True, auto_avif=renderers.settings.AVIF_ENCODER)
    wide = renderers.get("imgproxy").render({"image": long_jpeg, "accept": ["avif", "webp"]})
    assert wide["content_type"] == "image/jpeg"
    small = renderers.get("imgproxy").render(
        {"image": long_jpeg, "accept": ["webp"], "ops": {"resize": {"width": 1000}}}
    )
    assert small["content_type"] == "image/webp"


def test_format_limits_are_the_encoders_own() -> None:
    """Each limit is where the encoder (or its decoder) stops: one pixel more fails."""
    for fmt in ("webp", "jpeg"):
        limit = encode.MAX_SIDE[fmt]
        out = io.BytesIO()
        Image.new("RGB", (limit, 2)).save(out, fmt.upper())
        with pytest.raises((ValueError, OSError)):
            Image.new("RGB", (limit + 1, 2)).save(io.BytesIO(), fmt.upper())


BOMBS = {
    "jpeg 20000x3000": (samples.jpeg_claiming(20_000, 3_000), r"60\.0 MP; the limit"),
    "jpeg 65000x65000": (samples.jpeg_claiming(65_000, 65_000), r"is 4225\.0 MP; the limit"),
    "png 70000x10": (png_claiming(70_000, 10), r"70000x10 \(0\.7 MP\); the limit is 65535 px"),
    "png 10000x10000": (png_claiming(10_000, 10_000), r"100\.0 MP; the limit"),
}


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # as in a worker
@pytest.mark.parametrize(("data", "message"), list(BOMBS.values()), ids=list(BOMBS))
def test_bombs_are_refused_before_decoding(
    data: bytes, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Any) -> None:
        pytest.fail("decoded the pixels of an image its header refuses")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(BadRequest, match=message):
        renderers.get("imgproxy").render({"image": data, "ops": {"resize": {"width": 64}}})


def test_pillows_own_bomb_limit_follows_max_pixels(configure: Any) -> None:
    configure(max_pixels=1_000_000)
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
