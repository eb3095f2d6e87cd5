"""``watermark`` (and the image chain's watermark): placement, opacity, marks, glyphs."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageChops
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from toolkit_testing import call, decode, png

from mdp.errors import BadRequest
from renderers import samples

# watermark ----------------------------------------------------------------------------------


def _changed_box(source: Image.Image, data: bytes) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(source, decode(data).convert("RGB")).getbbox()


@pytest.mark.parametrize(
    "position",
    [
        "northwest",
        "north",
        "northeast",
        "west",
        "center",
        "east",
        "southwest",
        "south",
        "southeast",
    ],
)
def test_text_watermark_lands_at_its_position(position: str) -> None:
    source = Image.new("RGB", (300, 300), (60, 60, 60))
    data = call(
        "watermark",
        image=png(source),
        text="DIPS",
        position=position,
        margin=10,
        opacity=1.0,
        font_size=30,
        format="png",
    )
    box = _changed_box(source, data)
    assert box is not None
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    column = "west" if centre[0] < 100 else "east" if centre[0] > 200 else ""
    row = "north" if centre[1] < 100 else "south" if centre[1] > 200 else ""
    assert (row + column or "center") == position
    if position == "northwest":
        assert 10 <= box[0] <= 14 and 10 <= box[1] <= 14  # the margin


def test_opacity_zero_changes_nothing_and_opacity_scales_the_mark() -> None:
    source = Image.new("RGB", (200, 100), (0, 0, 0))
    assert (
        _changed_box(
            source, call("watermark", image=png(source), text="DIPS", opacity=0.0, format="png")
        )
        is None
    )
    half = decode(
        call("watermark", image=png(source), text="DIPS", opacity=0.5, font_size=40, format="png")
    )
    assert half.convert("L").getextrema()[1] in range(120, 135)


def test_cjk_text_and_outline_work() -> None:
    source = Image.new("RGB", (400, 200), (200, 200, 200))
    data = call(
        "watermark",
        image=png(source),
        text="金山密码保护卡",
        outline=2,
        color="#ffffff",
        outline_color="#000",
        opacity=1,
        font_size=40,
        format="png",
    )
    box = _changed_box(source, data)
    assert box is not None and box[2] - box[0] > 200  # seven glyphs, not seven empty boxes
    colours = {colour for _, colour in decode(data).getcolors(100_000) or []}
    assert (255, 255, 255) in colours and (0, 0, 0) in colours


def test_image_mark_scaled_rotated_and_tiled() -> None:
    source = Image.new("RGB", (400, 300), (0, 0, 0))
    mark = png(Image.new("RGBA", (40, 20), (255, 0, 0, 255)))
    placed = decode(
        call(
            "watermark",
            image=png(source),
            mark=mark,
            position="northwest",
            margin=10,
            opacity=1,
            format="png",
        )
    )
    assert placed.getpixel((10, 10)) == (255, 0, 0) and placed.getpixel((9, 9)) == (0, 0, 0)
    assert placed.getpixel((49, 29)) == (255, 0, 0) and placed.getpixel((50, 30)) == (0, 0, 0)
    wide = _changed_box(
        source,
        call(
            "watermark",
            image=png(source),
            mark=mark,
            mark_width=80,
            position="northwest",
            margin=0,
            opacity=1,
            format="png",
        ),
    )
    assert wide == (0, 0, 80, 40)
    turned = _changed_box(
        source,
        call(
            "watermark",
            image=png(source),
            mark=mark,
            angle=90,
            position="northwest",
            margin=0,
            opacity=1,
            format="png",
        ),
    )
    assert turned is not None and turned[2] - turned[0] < turned[3] - turned[1]
    tiled = decode(
        call(
            "watermark",
            image=png(source),
            mark=mark,
            tiled=True,
            margin=30,
            opacity=1,
            format="png",
        )
    )
    for corner in ((0, 0, 200, 150), (200, 0, 400, 150), (0, 150, 200, 300), (200, 150, 400, 300)):
        assert (255, 0, 0) in {c for _, c in tiled.crop(corner).getcolors(100_000) or []}


def test_a_mark_larger_than_the_image_is_shrunk_to_fit() -> None:
    source = Image.new("RGB", (100, 100), (0, 0, 0))
    mark = png(Image.new("RGBA", (400, 100), (255, 0, 0, 255)))
    box = _changed_box(
        source, call("watermark", image=png(source), mark=mark, margin=10, opacity=1, format="png")
    )
    assert box is not None and box[0] >= 10 and box[2] <= 90


@pytest.mark.parametrize(
    ("request_map", "field"),
    [
        ({}, "text"),
        ({"text": "a", "mark": b"\x89PNG"}, "mark"),
        ({"text": "金山逍遥"}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x" * 201}, "text"),
        ({"text": 5}, "text"),
        ({"mark": "not bytes"}, "mark"),
        ({"mark": samples.jpeg_claiming(64_250, 64_250)}, "mark"),
        ({"mark": b"GIF89a"}, "mark"),
        ({"text": "a", "opacity": 2}, "opacity"),
        ({"text": "a", "opacity": float("nan")}, "opacity"),
        ({"text": "a", "opacity": "half"}, "opacity"),
        ({"text": "a", "margin": -1}, "margin"),
        ({"text": "a", "font_size": 3}, "font_size"),
        ({"text": "a", "color": "#12345"}, "color"),
        ({"text": "a", "color": "white"}, "color"),
        ({"text": "a", "outline": 65}, "outline"),
        ({"text": "a", "outline_color": 0}, "outline_color"),
        ({"text": "a", "position": "top-middle"}, "position"),
        ({"text": "a", "tiled": "no"}, "tiled"),
        ({"text": "a", "angle": 720}, "angle"),
        ({"mark": png(Image.new("RGBA", (4, 4))), "mark_width": 0}, "mark_width"),
        ({"text": ".", "font_size": 4, "margin": 0, "tiled": True}, "margin"),
        ({"text": "W" * 200, "font_size": 2048}, "font_size"),
    ],
)
def test_watermark_errors_name_the_field(
    photo_jpeg: bytes, request_map: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        call("watermark", image=photo_jpeg, **request_map)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("service", "request_map", "message", "field"),
    [
        ("watermark", {}, "give one of text or mark (an image)", "text"),
        ("watermark", {"text": "a", "mark": b"@"}, "give either text or mark (an image), not both",
         "mark"),
        ("image", {"ops": [{"op": "watermark"}]}, "ops[0]: give one of text or mark",
         "ops[0].text"),
    ],
)
def test_text_or_mark_says_give_one_when_neither_and_not_both_only_when_both(
    photo_jpeg: bytes, service: str, request_map: dict[str, Any], message: str, field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        call(service, image=photo_jpeg, **request_map)
    assert message in caught.value.message and caught.value.field == field
    assert ("not both" in caught.value.message) == ("mark" in request_map)


def test_watermark_text_takes_the_copyright_sign_and_latin_1() -> None:
    text = "© DIPS 2026 — Zoë «Müller» €5"
    out = call("watermark", image=samples.photo_jpeg(300, 200), text=text, format="png")
    assert decode(out).size == (300, 200)
    from renderers import fonts

    assert fonts.missing_characters(text) == ""
    assert fonts.missing_characters("".join(chr(c) for c in range(0xA0, 0x100))) == ""
