"""``thumbnail``, ``crop``, ``watermark``, ``convert`` and the ``image`` chain."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, JpegImagePlugin
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)
from toolkit_testing import ORIENTATION, call, close, decode, png

import renderers
from mdp.errors import BadRequest
from renderers import samples

# thumbnail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "source", "expected"),
    [
        ({"width": 200, "height": 200}, (600, 400), (200, 133)),
        ({"width": 200, "height": 200}, (400, 600), (133, 200)),
        ({"width": 150}, (600, 400), (150, 100)),
        ({"height": 100}, (600, 400), (150, 100)),
        ({"width": 1000, "height": 1000}, (600, 400), (600, 400)),  # never upscale...
        ({"width": 1000, "height": 1000, "upscale": True}, (600, 400), (1000, 667)),  # ...unless
        ({"width": 200, "height": 200, "mode": "fill"}, (600, 400), (200, 200)),
        ({"width": 1000, "height": 100, "mode": "fill"}, (600, 400), (600, 100)),
    ],
)
def test_thumbnail_sizes(box: dict[str, Any], source: tuple[int, int], expected: Any) -> None:
    data = samples.photo_jpeg(*source)
    assert decode(call("thumbnail", image=data, **box)).size == expected


@pytest.mark.parametrize(("gravity", "edge"), [("west", 75), ("center", 50), ("east", 25)])
def test_fill_crops_at_gravity(quadrants: Image.Image, gravity: str, edge: int) -> None:
    # 600x400 -> 150x100 (red|green edge at x 75) -> a 100x100 window at the gravity
    out = decode(
        call(
            "thumbnail",
            image=png(quadrants),
            width=100,
            height=100,
            mode="fill",
            gravity=gravity,
            format="png",
        )
    )
    assert out.size == (100, 100)
    assert close(out.getpixel((edge - 3, 20)), (255, 0, 0))
    assert close(out.getpixel((edge + 2, 20)), (0, 255, 0))


def test_thumbnail_of_a_jpeg_decodes_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts: list[Any] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Any, mode: Any, size: Any) -> Any:
        result = original(self, mode, size)
        drafts.append((size, result, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = decode(call("thumbnail", image=samples.photo_jpeg(2400, 1600), width=256, height=256))
    assert out.size == (256, 171)
    [(requested, result, decoded_size)] = drafts
    assert requested == (256, 171) and result is not None
    assert decoded_size == (300, 200)  # 1/8 scale, the decoder's own reduction


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(quadrants: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    source = png(quadrants, exif=exif.tobytes())
    expected = ImageOps.exif_transpose(decode(source))
    converted = decode(call("convert", image=source, format="png"))
    assert converted.size == expected.size
    assert (
        ImageChops.difference(converted.convert("RGB"), expected.convert("RGB")).getbbox() is None
    )
    thumb = decode(call("thumbnail", image=source, width=60, height=60, format="png"))
    assert thumb.size == ((60, 40) if expected.size[0] > expected.size[1] else (40, 60))
    small = expected.convert("RGB").resize(thumb.size, Image.Resampling.LANCZOS)
    assert close(thumb.getpixel((3, 3)), small.getpixel((3, 3)), 30)


def test_exif_orientation_of_a_drafted_jpeg(quadrants: Image.Image) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored landscape, shown portrait, red on the top right
    big = quadrants.resize((2400, 1600))
    source = samples.encode(big, "JPEG", quality=95, exif=exif.tobytes())
    out = decode(call("thumbnail", image=source, width=100, height=100, format="png"))
    assert out.size == (67, 100)
    assert close(out.getpixel((62, 4)), (255, 0, 0), 30)
    assert close(out.getpixel((4, 4)), (0, 0, 255), 30)


def test_thumbnail_larger_than_the_limits_is_refused(photo_jpeg: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        call("thumbnail", image=photo_jpeg, width=16000, height=16000, upscale=True)
    assert caught.value.field == "width"


# output -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"), [("jpeg", "JPEG"), ("jpg", "JPEG"), ("PNG", "PNG"), ("webp", "WEBP")]
)
def test_output_formats(photo_jpeg: bytes, fmt: str, expected: str) -> None:
    assert decode(call("convert", image=photo_jpeg, format=fmt)).format == expected
    content_type = renderers.get("convert").content_type_for({"format": fmt})
    assert content_type == "image/" + expected.lower()


def test_quality_changes_the_size(photo_jpeg: bytes) -> None:
    low = call("thumbnail", image=photo_jpeg, width=300, quality=10)
    high = call("thumbnail", image=photo_jpeg, width=300, quality=95)
    assert len(low) < len(high) / 2
    assert len(call("thumbnail", image=photo_jpeg, width=300, format="webp", quality=10)) < len(
        call("thumbnail", image=photo_jpeg, width=300, format="webp", quality=95)
    )


def test_metadata_is_stripped_unless_asked_and_icc_is_kept() -> None:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[ORIENTATION] = 3
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = samples.encode(
        samples.photo(300, 200), "JPEG", exif=exif.tobytes(), icc_profile=icc, comment=b"secret"
    )
    stripped = decode(call("thumbnail", image=source, width=100))
    assert not stripped.getexif() and "comment" not in stripped.info
    assert stripped.info.get("icc_profile") == icc
    kept = decode(call("thumbnail", image=source, width=100, strip=False))
    assert kept.getexif()[0x010F] == "CameraMaker"
    assert kept.getexif()[ORIENTATION] == 1  # the pixels are upright already
    for fmt in ("png", "webp"):
        assert decode(call("convert", image=source, format=fmt)).info.get("icc_profile") == icc


def test_transparency_is_flattened_for_jpeg_and_kept_otherwise() -> None:
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 20, 40))
    source = png(image)
    jpeg = decode(call("convert", image=source, format="jpeg", background="#f00"))
    assert close(jpeg.getpixel((35, 20)), (255, 0, 0)) and close(
        jpeg.getpixel((5, 20)), (0, 0, 255)
    )
    for fmt in ("png", "webp"):
        out = decode(call("convert", image=source, format=fmt))
        assert out.mode == "RGBA" and out.getpixel((35, 20))[3] == 0


@pytest.mark.parametrize(
    "source",
    [
        Image.new("P", (30, 20), 5),
        Image.new("L", (30, 20), 99),
        Image.new("LA", (30, 20), (99, 200)),
        Image.new("1", (30, 20), 1),
        Image.new("I;16", (30, 20), 40000),
        Image.new("CMYK", (30, 20), (0, 255, 255, 0)),
    ],
    ids=lambda image: image.mode,
)
def test_every_source_mode_converts(source: Image.Image) -> None:
    data = samples.encode(source, "JPEG" if source.mode == "CMYK" else "PNG")
    for fmt in ("jpeg", "png", "webp"):
        assert decode(call("convert", image=data, format=fmt)).size == (30, 20)


def test_sixteen_bit_grey_keeps_its_brightness() -> None:
    data = png(Image.new("I;16", (8, 8), 40000))
    assert close(
        (decode(call("convert", image=data, format="png")).getpixel((1, 1)),), (40000 // 256,), 1
    )


def test_gif_uses_the_first_frame_and_palette_transparency() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = samples.encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert close(decode(call("convert", image=gif, format="png")).getpixel((5, 5))[:3], (255, 0, 0))
    clear = Image.new("P", (10, 10), 1)
    clear.putpalette([0, 0, 0, 255, 255, 255])
    out = decode(call("convert", image=samples.encode(clear, "GIF", transparency=1), format="png"))
    assert out.mode == "RGBA" and out.getpixel((3, 3))[3] == 0


# crop ---------------------------------------------------------------------------------------


def test_crop_box_and_gravity(quadrants: Image.Image) -> None:
    source = png(quadrants)
    box = decode(call("crop", image=source, x=250, y=150, width=100, height=100, format="png"))
    assert box.size == (100, 100)
    assert box.getpixel((0, 0)) == (255, 0, 0) and box.getpixel((99, 0)) == (0, 255, 0)
    assert box.getpixel((0, 99)) == (0, 0, 255) and box.getpixel((99, 99)) == (255, 255, 255)
    corner = decode(
        call("crop", image=source, width=50, height=50, gravity="southeast", format="png")
    )
    assert corner.getcolors() == [(2500, (255, 255, 255))]
    wide = decode(call("crop", image=source, width=5000, height=10, gravity="north", format="png"))
    assert wide.size == (600, 10)  # a size at a gravity is clamped to the image


@pytest.mark.parametrize(
    ("request_map", "field"),
    [
        ({"x": 550, "y": 0, "width": 100, "height": 10}, "x"),
        ({"x": 0, "y": 350, "width": 10, "height": 100}, "y"),
        ({"x": 0, "width": 10, "height": 10}, "y"),
        ({"y": 0, "width": 10, "height": 10}, "x"),
        ({"width": 10}, "height"),
        ({"height": 10}, "width"),
        ({"width": 0, "height": 10}, "width"),
        ({"width": 10, "height": 10, "x": -1, "y": 0}, "x"),
        ({"width": 10, "height": 10, "gravity": "up"}, "gravity"),
    ],
)
def test_crop_errors_name_the_field(
    photo_jpeg: bytes, request_map: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        call("crop", image=photo_jpeg, **request_map)
    assert caught.value.field == field


# chains and common fields ------------------------------------------------------------------


def test_one_round_trip_thumbnails_watermarks_and_converts(photo_jpeg: bytes) -> None:
    logo = png(Image.new("RGBA", (30, 10), (255, 0, 0, 255)))
    out = decode(
        call(
            "image",
            image=photo_jpeg,
            format="webp",
            quality=70,
            ops=[
                {"op": "thumbnail", "width": 300, "height": 300},
                {
                    "op": "watermark",
                    "mark": logo,
                    "position": "northwest",
                    "margin": 5,
                    "opacity": 1,
                },
                {"op": "crop", "width": 100, "height": 100, "x": 0, "y": 0},
                {"op": "resize", "width": 50},
            ],
        )
    )
    assert (out.format, out.size) == ("WEBP", (50, 50))
    assert close(out.convert("RGB").getpixel((4, 3)), (255, 0, 0), 40)
    assert decode(call("image", image=photo_jpeg, ops=[])).size == (600, 400)


def test_a_thumbnail_after_a_crop_is_right_too(quadrants: Image.Image) -> None:
    out = decode(
        call(
            "image",
            image=samples.encode(quadrants, "JPEG", quality=95),
            ops=[
                {"op": "crop", "width": 300, "height": 200, "gravity": "northeast"},
                {"op": "thumbnail", "width": 30},
            ],
        )
    )
    assert out.size == (30, 20) and close(out.getpixel((15, 10)), (0, 255, 0), 30)


COMMON_ERRORS = [
    ({}, "image"),
    ({"image": "a string"}, "image"),
    ({"image": b""}, "image"),
    ({"image": None}, "image"),
    ({"format": "gif"}, "format"),
    ({"format": 1}, "format"),
    ({"quality": 0}, "quality"),
    ({"quality": 101}, "quality"),
    ({"quality": "high"}, "quality"),
    ({"quality": True}, "quality"),
    ({"strip": "yes"}, "strip"),
    ({"strip": 1}, "strip"),
    ({"background": "red"}, "background"),
    ({"colour": "#fff"}, "colour"),
    ({"width": -1}, "width"),
    ({"width": "100"}, "width"),
    ({"width": True}, "width"),
    ({"width": 10.5}, "width"),
    ({"width": 100_000}, "width"),
    ({"width": 10, "mode": "zoom"}, "mode"),
    ({"width": 10, "mode": "fill"}, "height"),
    ({"width": 10, "gravity": 3}, "gravity"),
    ({"width": 10, "upscale": 1}, "upscale"),
]


@pytest.mark.parametrize(("request_map", "field"), COMMON_ERRORS)
def test_thumbnail_errors_name_the_field(
    photo_jpeg: bytes, request_map: dict[str, Any], field: str
) -> None:
    request = {"image": photo_jpeg, "width": 100, **request_map}
    if not request_map:
        del request["image"]
    with pytest.raises(BadRequest) as caught:
        renderers.get("thumbnail").render(request)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("ops", "field"),
    [
        ("thumbnail", "ops"),
        ({"op": "thumbnail"}, "ops"),
        ([{"op": "thumbnail", "width": 10}] * 17, "ops"),
        (["thumbnail"], "ops[0]"),
        ([{"width": 10}], "ops[0].op"),
        ([{"op": "blur"}], "ops[0].op"),
        ([{"op": "thumbnail", "width": 10}, {"op": "crop", "width": 10}], "ops[1].height"),
        ([{"op": "thumbnail", "width": 10, "x": 5}], "ops[0].x"),
        ([{"op": "crop", "width": 10, "height": 10, "x": 599, "y": 0}], "ops[0].x"),
        ([{"op": "watermark", "text": "a", "opacity": -1}], "ops[0].opacity"),
        ([{"op": "watermark", "mark": b"junk"}], "ops[0].mark"),
    ],
)
def test_chain_errors_name_the_operation_and_field(photo_jpeg: bytes, ops: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        call("image", image=photo_jpeg, ops=ops)
    assert caught.value.field == field


@pytest.mark.parametrize(("encoded", "kept"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP"),
                                               ("GIF", "PNG")])
def test_convert_without_a_format_keeps_the_sources_and_still_strips_and_turns_upright(
    encoded: str, kept: str
) -> None:
    """As its field table says (format optional), like the other toolkit services."""
    format_field = next(f for f in renderers.get("convert").fields if f.name == "format")
    assert not format_field.required and "source's" in format_field.doc
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[ORIENTATION] = 6  # stored 30 x 20, shown 20 x 30
    options = {} if encoded == "GIF" else {"exif": exif.tobytes()}
    out = decode(call("convert", image=samples.encode(samples.photo(30, 20), encoded, **options)))
    assert out.format == kept and not out.getexif()
    assert out.size == ((30, 20) if encoded == "GIF" else (20, 30))


def test_image_bytes_sent_as_a_msgpack_str_are_accepted(photo_jpeg: bytes) -> None:
    """PHP's msgpack packs every string as str; the wire keeps its bytes (surrogates)."""
    from mdp import protocol as p

    packed = p.pack({"image": photo_jpeg, "width": 32, "format": "png"})
    as_str = packed.replace(b"\xc6" + len(photo_jpeg).to_bytes(4, "big"),
                            b"\xdb" + len(photo_jpeg).to_bytes(4, "big"), 1)
    if as_str == packed:  # a small image: bin 16 becomes str 16
        as_str = packed.replace(b"\xc5" + len(photo_jpeg).to_bytes(2, "big"),
                                b"\xda" + len(photo_jpeg).to_bytes(2, "big"), 1)
    request = p.decode_request([as_str])
    assert isinstance(request["image"], str)
    assert decode(renderers.get("thumbnail").render(request)).width == 32


def test_text_that_is_not_utf8_is_refused_by_name() -> None:
    with pytest.raises(BadRequest, match="UTF-8") as info:
        call("watermark", image=samples.photo_jpeg(64, 48), text=b"\xff\xfe".decode(
            "utf-8", "surrogateescape"))
    assert info.value.field == "text"


# issue 16: the source's format when format is absent; Latin-1 in watermark text -------------


def test_without_format_a_png_with_alpha_stays_png() -> None:
    source = Image.new("RGBA", (80, 60), (255, 0, 0, 0))
    source.paste((0, 0, 255, 255), (20, 20, 60, 40))
    for service, extra in (("thumbnail", {"width": 40}), ("crop", {"width": 40, "height": 30})):
        out = decode(call(service, image=samples.encode(source, "PNG"), **extra))
        assert out.format == "PNG" and out.mode == "RGBA"
        assert out.getpixel((0, 0))[3] == 0  # still transparent, not JPEG on white
    assert renderers.get("thumbnail").content_type_for({"width": 40}) == ""


@pytest.mark.parametrize(("fmt", "expected"), [("JPEG", "JPEG"), ("WEBP", "WEBP"), ("GIF", "PNG")])
def test_without_format_the_source_format_is_kept(fmt: str, expected: str) -> None:
    source = samples.encode(samples.photo(60, 40).convert("RGB"), fmt)
    assert decode(call("thumbnail", image=source, width=30)).format == expected
