"""Damaged and truncated images: rendered as far as they decode, as thumbor (Pillow with
``LOAD_TRUNCATED_IMAGES``) and imgproxy (libvips) render them, with a warning; refused with
``render_damaged`` off; and a file with no image data at all stays a clear bad request."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, ImageFile
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from mdp.errors import BadRequest
from renderers import containers, samples

DAMAGED = samples.damaged_inputs()
NO_DATA = ("jpeg without scan data", "png without pixel data")


def flat(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (256, 256)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.mark.parametrize("name", sorted(DAMAGED))
@pytest.mark.parametrize("service", ["thumbnail", "convert", "imgproxy", "info"])
def test_each_damaged_image_renders_with_a_warning(name: str, service: str) -> None:
    request: dict[str, Any] = {"image": DAMAGED[name]}
    request.update({"thumbnail": {"width": 32}, "convert": {"format": "png"},
                    "imgproxy": {"ops": {"resize": {"width": 32}}}}.get(service, {}))
    reply = renderers.get(service).render(request)
    if service in ("imgproxy", "info"):  # replies that are maps carry the warning
        assert reply["warning"].startswith("damaged source rendered as far as it decodes (")
        assert reply["width"] > 0
    else:
        assert decoded(reply).size[0] > 0
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # leniency ends with the decode


def test_a_sound_image_has_no_warning(photo_jpeg: bytes) -> None:
    assert "warning" not in renderers.get("imgproxy").render({"image": photo_jpeg})
    assert "warning" not in renderers.get("info").render({"image": photo_jpeg})


def test_a_truncated_jpeg_keeps_what_decoded_and_fills_the_rest_grey() -> None:
    """libjpeg (Pillow's, thumbor's and libvips') ends a cut scan with empty blocks: the
    rows it never got are mid-grey, the rows it got are the image."""
    red = flat((200, 30, 30), "JPEG")
    reply = renderers.get("imgproxy").render({"image": cut(red, 0.5), "format": "png"})
    image = decoded(reply["image"])
    top = image.getpixel((128, 2))
    assert max(abs(a - b) for a, b in zip(top, (200, 30, 30), strict=True)) <= 3
    assert all(abs(channel - 128) <= 3 for channel in image.getpixel((128, 253)))


def test_a_truncated_png_keeps_its_rows_and_leaves_the_rest_black() -> None:
    # a flat image compresses to almost nothing: noise keeps each row's bytes
    noisy = Image.effect_noise((256, 256), 64).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    data = out.getvalue()
    reply = renderers.get("imgproxy").render({"image": cut(data, 0.5), "format": "png"})
    image = decoded(reply["image"])
    assert image.getpixel((5, 1)) == noisy.getpixel((5, 1))
    assert image.getpixel((5, 254)) == (0, 0, 0)


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_render_damaged_off_refuses_them(name: str, configure: Any) -> None:
    configure(render_damaged=False)
    with pytest.raises(BadRequest, match=r"image: damaged image \(decoding: ") as caught:
        renderers.get("thumbnail").render({"image": DAMAGED[name], "width": 32})
    assert caught.value.field == "image"


@pytest.mark.parametrize("name", NO_DATA)
@pytest.mark.parametrize("service", ["convert", "imgproxy", "info"])
def test_a_file_with_no_image_data_is_a_clear_bad_request(name: str, service: str) -> None:
    with pytest.raises(BadRequest, match="damaged image: no image data after its header"):
        renderers.get(service).render({"image": samples.hostile_inputs()[name]})


def test_damage_past_what_leniency_decodes_is_still_refused() -> None:
    webp = samples.hostile_inputs()["truncated webp"]  # libwebp: all or nothing
    with pytest.raises(BadRequest, match=r"damaged image \("):
        renderers.get("imgproxy").render({"image": webp})


def test_a_strict_decode_after_a_lenient_one_is_strict(configure: Any) -> None:
    renderers.get("convert").render({"image": DAMAGED["truncated jpeg"], "format": "png"})
    configure(render_damaged=False)
    with pytest.raises(BadRequest, match="damaged image"):
        renderers.get("convert").render({"image": DAMAGED["truncated jpeg"], "format": "png"})


def test_a_damaged_animation_keeps_the_frames_that_decode() -> None:
    frames = [Image.effect_noise((64, 64), 40 + 20 * i).convert("P") for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    data = out.getvalue()
    reply = renderers.get("imgproxy").render({"image": cut(data, 0.6), "format": "gif"})
    assert "warning" in reply
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert 1 <= getattr(image, "n_frames", 1) <= 3


@pytest.mark.parametrize(
    ("kind", "data", "found"),
    [
        ("JPEG", samples.photo_jpeg(16, 16), True),
        ("JPEG", samples.hostile_inputs()["jpeg without scan data"], False),
        ("JPEG", b"\xff\xd8\xff\xe0\x00", False),
        ("PNG", samples.hostile_inputs()["png without pixel data"], False),
        ("PNG", b"\x89PNG\r\n\x1a\n" + b"\xff" * 20, False),
        ("GIF", b"GIF89a" + b"\xff" * 32, False),
        ("WEBP", b"RIFF", False),
    ],
)
def test_pixel_data_is_found_by_walking_the_structure(kind: str, data: bytes, found: bool) -> None:
    assert containers.has_pixel_data(kind, data) is found
