"""The ``imgproxy`` renderer: imgproxy's documented examples and ours, geometry, formats."""

from __future__ import annotations

import io
from typing import Any

import pytest
from imgproxy_testing import animated_gif, fixture, source
from PIL import Image
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from clusterkit import skip_or_fail
from mdp.errors import BadRequest
from renderers import samples, settings
from renderers.imgproxy import geometry, options, smart
from renderers.imgproxy.options import Gravity, Options, Resize

CASES = fixture()["cases"]


def render(request: dict[str, Any]) -> dict[str, Any]:
    return renderers.get("imgproxy").render(request)  # type: ignore[no-any-return]


def frames_of(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return int(getattr(image, "n_frames", 1))


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_fixture_case(case: dict[str, Any], configure: Any) -> None:
    configure(watermark_text=fixture()["watermark_text"], auto_avif=settings.AVIF_ENCODER)
    expected = case["expected"]
    if expected["content_type"] == "image/avif" and not settings.AVIF_ENCODER:
        skip_or_fail("this Pillow cannot encode AVIF")
    request = dict(
        case["request"], image=source(case["render"]["source"]), accept=case["render"]["accept"]
    )
    reply = render(request)
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert image.size == (expected["width"], expected["height"])
        assert Image.MIME[image.format] == expected["content_type"]
    assert (reply["width"], reply["height"]) == (expected["width"], expected["height"])
    assert reply["content_type"] == expected["content_type"]
    assert reply["source"] == {"length": len(request["image"])}
    if "frames" in expected:
        assert frames_of(reply["image"]) == expected["frames"]


def test_every_fixture_case_has_a_canonical_map() -> None:
    limits = settings.current()
    for case in CASES:
        options.parse(case["request"]["ops"], limits.max_side)  # never a bad request


# options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "field"),
    [
        ({"resize": {"type": "stretch"}}, "ops.resize.type"),
        ({"resize": {"width": -1}}, "ops.resize.width"),
        ({"resize": {"width": 1.5}}, "ops.resize.width"),
        ({"resize": {"wide": 1}}, "ops.resize.wide"),
        ({"dpr": 0}, "ops.dpr"),
        ({"dpr": True}, "ops.dpr"),
        ({"gravity": {"type": "up"}}, "ops.gravity.type"),
        ({"gravity": {"type": "fp", "x": 2}}, "ops.gravity.x"),
        ({"rotate": 45}, "ops.rotate"),
        ({"padding": [1, 2]}, "ops.padding"),
        ({"background": [0, 0, 256]}, "ops.background[2]"),
        ({"flip": [1, 0]}, "ops.flip[0]"),
        ({"trim": 10}, "ops.trim"),
        ({"frobnicate": 1}, "ops.frobnicate"),
        ({"watermark": {"position": "middle"}}, "ops.watermark.position"),
        ([], "ops"),
    ],
)
def test_bad_options_name_their_field(ops: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        render({"image": samples.photo_jpeg(64, 48), "ops": ops})
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("request_map", "field"),
    [
        ({"format": "tiff"}, "format"),
        ({"quality": 101}, "quality"),
        ({"accept": "webp"}, "accept"),
        ({"blurhash": 1}, "blurhash"),
    ],
)
def test_bad_output_fields_name_their_field(request_map: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        render({"image": samples.photo_jpeg(64, 48), **request_map})
    assert caught.value.field == field


def test_a_result_over_the_limits_is_refused() -> None:
    with pytest.raises(BadRequest) as caught:
        render(
            {
                "image": samples.photo_jpeg(64, 48),
                "ops": {"resize": {"width": 16000, "height": 16000, "enlarge": True}},
            }
        )
    assert caught.value.field == "ops.resize"


def test_watermark_without_a_configured_mark_is_skipped_as_imgproxy_does(
    configure: Any,
) -> None:
    """imgproxy's processing returns early when no watermark is configured: ``wm:`` on a
    door whose workers have none renders the image unmarked, never a bad request."""
    configure(watermark_text=None, watermark_image=None)
    image = samples.photo_jpeg(64, 48)
    plain = render({"image": image, "format": "png"})
    for spec in ({"opacity": 1}, {"opacity": 0.5, "position": "re", "x": 0, "y": 0}):
        marked = render({"image": image, "format": "png", "ops": {"watermark": spec}})
        assert marked["image"] == plain["image"]
    configure(watermark_text="DIPS")
    marked = render({"image": image, "format": "png", "ops": {"watermark": {"opacity": 1}}})
    assert marked["image"] != plain["image"]


# geometry ---------------------------------------------------------------------------------


def test_positions_follow_imgproxy() -> None:
    outer, inner = (100, 80), (20, 10)
    assert geometry.position(outer, inner, Gravity("ce")) == (40, 36)  # 35.5 to even
    assert geometry.position(outer, inner, Gravity("nowe", 5, 6)) == (5, 6)
    assert geometry.position(outer, inner, Gravity("soea", 5, 6)) == (75, 64)
    assert geometry.position(outer, inner, Gravity("so", 0.1, 0)) == (50, 70)
    assert geometry.position(outer, inner, Gravity("fp", 0.0, 1.0)) == (0, 70)
    assert geometry.position(outer, inner, Gravity("nowe", 10, 0), dpr=2) == (20, 0)


def test_the_plan_is_in_source_pixels() -> None:
    plan = geometry.plan((6000, 4000), Options(resize=Resize("fill", 300, 300)))
    assert plan.scaled == (450, 300) and plan.result == (300, 300) and plan.fill
    assert plan.scale == (450 / 6000, 300 / 4000)


def test_a_big_jpeg_is_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from renderers.imgproxy import service

    decoded_sizes: list[tuple[int, int]] = []
    original = service.open_image

    def spy(*args: Any, **kwargs: Any) -> Any:
        decoded = original(*args, **kwargs)
        decoded_sizes.append(decoded.image.size)
        return decoded

    monkeypatch.setattr(service, "open_image", spy)
    reply = render({"image": samples.photo_jpeg(2400, 1600), "ops": {"resize": {"width": 300}}})
    assert (reply["width"], reply["height"]) == (300, 200)
    assert decoded_sizes == [(300, 200)]  # 1/8 scale: the decoder did the reduction


def test_smart_gravity_finds_the_detail() -> None:
    image = Image.new("RGB", (400, 100), (128, 128, 128))
    image.paste(samples.photo(80, 80), (300, 10))  # the only detail, near the right
    left, top = smart.find(image, (100, 100))
    assert 220 <= left <= 300 and top == 0
    flat = Image.new("RGB", (400, 100), (10, 10, 10))
    left, top = smart.find(flat, (100, 100))  # nothing anywhere: the centre
    assert abs(left - 150) <= 8 and top == 0


def test_exif_orientation_is_applied_unless_auto_rotate_is_off(quadrants: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to show
    data = samples.encode(quadrants, "JPEG", exif=exif.tobytes(), quality=95)
    upright = render({"image": data, "ops": {"resize": {"width": 100}}})
    stored = render({"image": data, "ops": {"resize": {"width": 100}, "auto_rotate": False}})
    assert (upright["width"], upright["height"]) == (100, 150)
    assert (stored["width"], stored["height"]) == (100, 67)


def test_rotation_is_clockwise(quadrants: Image.Image) -> None:
    data = samples.encode(quadrants, "PNG")
    reply = render({"image": data, "ops": {"rotate": 90}})
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert image.convert("RGB").getpixel((390, 10)) == (255, 0, 0)  # red top-left -> top-right


def test_extend_fills_with_the_background(photo_jpeg: bytes) -> None:
    reply = render(
        {
            "image": photo_jpeg,
            "format": "png",
            "ops": {
                "resize": {"type": "fit", "width": 800, "height": 800, "extend": True},
                "background": [0, 0, 255],
            },
        }
    )
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert image.size == (800, 800) and image.convert("RGB").getpixel((5, 5)) == (0, 0, 255)


# formats ----------------------------------------------------------------------------------


def test_jpeg_is_saved_with_optimised_tables(photo_jpeg: bytes) -> None:
    reply = render({"image": photo_jpeg, "ops": {"resize": {"width": 300}}, "quality": 80})
    with Image.open(io.BytesIO(reply["image"])) as image:
        plain = io.BytesIO()
        image.save(plain, "JPEG", quality=80)
    assert len(reply["image"]) < len(plain.getvalue())


def test_open_formats_follow_the_settings(configure: Any) -> None:
    data = samples.photo_jpeg(64, 48)
    configure(auto_webp=False, auto_avif=False)
    assert render({"image": data, "accept": ["avif", "webp"]})["content_type"] == "image/jpeg"
    configure(auto_webp=True)
    assert render({"image": data, "accept": ["avif", "webp"]})["content_type"] == "image/webp"


def test_animation_frames_are_bounded(configure: Any) -> None:
    gif = animated_gif(120, 80, 5)
    configure(max_animation_frames=3)
    assert frames_of(render({"image": gif, "ops": {"resize": {"width": 60}}})["image"]) == 3
    configure(max_animation_frames=100, max_animation_pixels=120 * 80 * 2)
    assert frames_of(render({"image": gif, "ops": {"resize": {"width": 60}}})["image"]) == 2


def test_animation_keeps_durations_and_loop() -> None:
    reply = render({"image": animated_gif(120, 80, 5), "format": "webp"})
    with Image.open(io.BytesIO(reply["image"])) as image:
        image.load()
        assert image.n_frames == 5 and image.info.get("loop") == 0
        assert image.info.get("duration") == 80


def test_metadata_is_stripped_unless_asked_to_keep() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    data = samples.photo_jpeg(64, 48, exif=exif.tobytes())
    stripped = render({"image": data})["image"]
    kept = render({"image": data, "ops": {"strip_metadata": False}})["image"]
    assert b"Camera maker" not in stripped and b"Camera maker" in kept


@pytest.mark.parametrize("name", sorted(samples.hostile_inputs()))
def test_hostile_sources_are_bad_requests(name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        render({"image": samples.hostile_inputs()[name], "ops": {"resize": {"width": 64}}})
    assert caught.value.field == "source"


def test_if_changed_answers_unchanged_without_rendering(
    tmp_path: Any, configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The door's revalidation: the source's validators from an earlier reply; a local file
    as it was is only opened (nothing decoded), a changed one is rendered again."""
    (tmp_path / "a.jpg").write_bytes(samples.photo_jpeg(320, 240))
    configure(sources_roots=(str(tmp_path),))
    request: dict[str, Any] = {"source": "local:///a.jpg", "ops": {"resize": {
        "type": "fit", "width": 100, "height": 0, "enlarge": False, "extend": False}}}
    first = render(request)
    known = {k: v for k, v in first["source"].items() if k in ("etag", "last_modified")}
    decoded: list[bool] = []
    monkeypatch.setattr("renderers.imgproxy.service.open_image",
                        lambda *args, **kwargs: decoded.append(True))
    same = render({**request, "if_changed": known})
    assert same == {"unchanged": True, "source": first["source"]} and not decoded
    assert renderers.get("info").render({"source": "local:///a.jpg", "if_changed": known})[
        "unchanged"] is True
    monkeypatch.undo()
    (tmp_path / "a.jpg").write_bytes(samples.photo_jpeg(200, 100))
    changed = render({**request, "if_changed": known})
    assert "unchanged" not in changed and (changed["width"], changed["height"]) == (100, 50)
    assert changed["source"]["etag"] != known["etag"]
