"""The ``info`` service and the BlurHash encoder."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from imgproxy_testing import alpha_png, animated_gif
from PIL import Image
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from source_server import SourceServer, running

import renderers
from mdp.errors import BadRequest
from renderers import blurhash, samples, sources


def info(request: dict[str, Any]) -> dict[str, Any]:
    return renderers.get("info").render(request)  # type: ignore[no-any-return]


def test_info_of_a_photo() -> None:
    data = samples.photo_jpeg(640, 480)
    reply = info({"image": data})
    assert {
        k: reply[k] for k in ("width", "height", "format", "orientation", "animated", "frames")
    } == {
        "width": 640,
        "height": 480,
        "format": "jpeg",
        "orientation": 1,
        "animated": False,
        "frames": 1,
    }
    assert len(reply["blurhash"]) == 4 + 2 * (4 * 3 - 1) + 2
    assert reply["source"] == {"length": len(data)}


def test_info_reports_upright_size_and_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    reply = info({"image": samples.photo_jpeg(640, 480, exif=exif.tobytes())})
    assert (reply["width"], reply["height"], reply["orientation"]) == (480, 640, 6)


def test_info_of_an_animation_and_a_png() -> None:
    reply = info({"image": animated_gif(120, 80, 5)})
    assert (reply["format"], reply["animated"], reply["frames"]) == ("gif", True, 5)
    assert info({"image": alpha_png(50, 40)})["format"] == "png"


def naive_factors(image: Image.Image, nx: int, ny: int) -> list[tuple[float, ...]]:
    """The description's double sum, term by term (no separable shortcut)."""
    width, height = image.size
    out = []
    for j in range(ny):
        for i in range(nx):
            norm = (1 if i == 0 and j == 0 else 2) / (width * height)
            total = [0.0, 0.0, 0.0]
            for y in range(height):
                for x in range(width):
                    basis = math.cos(math.pi * i * x / width) * math.cos(math.pi * j * y / height)
                    for c, value in enumerate(image.getpixel((x, y))):
                        total[c] += basis * blurhash._LINEAR[value]
            out.append(tuple(norm * t for t in total))
    return out


def test_blurhash_factors_match_the_plain_double_sum() -> None:
    image = samples.photo(12, 9)
    fast = blurhash.components(image, 4, 3)
    slow = naive_factors(image, 4, 3)
    assert all(
        abs(a - b) < 1e-9
        for f, g in zip(fast, slow, strict=True)
        for a, b in zip(f, g, strict=True)
    )


def test_blurhash_of_a_flat_colour_starts_with_its_average() -> None:
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    value = blurhash.encode(red, 4, 3)
    assert value[0] == blurhash.ALPHABET[(4 - 1) + (3 - 1) * 9]
    assert value[2:6] == blurhash.base83(255 << 16, 4)
    assert blurhash.encode(red, 1, 1) == "00" + blurhash.base83(255 << 16, 4)


def test_blurhash_components_follow_the_image() -> None:
    image = Image.linear_gradient("L").convert("RGB")  # dark at the top, light at the bottom
    factors = blurhash.components(image.resize((32, 32)), 1, 2)
    assert factors[1][0] < 0  # the first vertical cosine correlates negatively with brightness
    assert (
        blurhash.encode(image, 1, 1)[0] == "0" and len(blurhash.encode(image, 9, 9)) == 6 + 2 * 80
    )


def test_blurhash_components_are_checked() -> None:
    with pytest.raises(BadRequest) as caught:
        info({"image": samples.photo_jpeg(64, 48), "blurhash": [0, 3]})
    assert caught.value.field == "blurhash"


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with running() as srv:
        yield srv


def test_info_and_imgproxy_fetch_a_source_once(server: SourceServer, configure: Any) -> None:
    data = samples.photo_jpeg(640, 480)
    server.serve("/photo.jpg", data, etag='"p1"')
    configure(sources_internal=(server.origin,))
    sources.default().cache.clear()
    url = server.url("/photo.jpg")
    assert info({"source": url})["source"] == {"length": len(data), "etag": '"p1"'}
    for width in (100, 200, 300, 400, 500):
        reply = renderers.get("imgproxy").render(
            {"source": url, "ops": {"resize": {"width": width}}}
        )
        assert reply["width"] == width and reply["source"]["etag"] == '"p1"'
    assert server.hits["/photo.jpg"] == 1


def test_a_refused_source_is_a_source_error(server: SourceServer, configure: Any) -> None:
    configure(sources_allow=(), sources_internal=())
    with pytest.raises(sources.SourceForbidden):
        info({"source": server.url("/photo.jpg")})
    assert sum(server.hits.values()) == 0
