"""``imgproxy`` under options chosen to hurt, and imgproxy's semantics where they bound size.

A request's options may not make a worker hold more than the limits allow, in any step:
an animation's kept frames are bounded by the result's pixels as well as the source's, and
a watermark is never larger than the result it is laid on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from imgproxy_testing import animated_gif
from PIL import Image
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from mdp.errors import BadRequest, ConfigError
from renderers import samples, settings
from renderers.imgproxy import geometry, pipeline
from renderers.imgproxy.options import Gravity


def render(request: dict[str, Any]) -> dict[str, Any]:
    return renderers.get("imgproxy").render(request)  # type: ignore[no-any-return]


def frames_of(data: bytes) -> tuple[int, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        return int(getattr(image, "n_frames", 1)), image.size


def test_animation_frames_are_bounded_by_the_result_pixels_too(configure: Any) -> None:
    # 10 frames of 40 x 40 decode well within the bound; enlarged to 160 x 160 each, the
    # result would hold 10 x 25,600 pixels (at the default limits: 100 frames of 50 MP).
    configure(max_animation_pixels=160 * 160 * 3)
    gif = animated_gif(40, 40, 10)
    reply = render({"image": gif, "ops": {"resize": {"width": 160, "enlarge": True}}})
    assert frames_of(reply["image"]) == (3, (160, 160))


def test_an_animation_result_of_one_frame_over_the_bound_keeps_its_first_frame(
    configure: Any,
) -> None:
    configure(max_animation_pixels=1000)
    reply = render({"image": animated_gif(40, 40, 10), "format": "gif"})
    assert frames_of(reply["image"]) == (1, (40, 40))


@pytest.mark.parametrize(
    ("ops", "field"),
    [
        ({"resize": {"width": 9000, "height": 9000, "enlarge": True}}, "ops.resize"),
        # without enlarge imgproxy clamps dpr to what the source allows (1.07 here)
        (
            {"resize": {"width": 60, "height": 9000, "extend": True, "enlarge": True}, "dpr": 2},
            "ops.resize.extend",
        ),
        ({"resize": {"width": 60}, "padding": [4096, 4096, 4096, 4096], "dpr": 8}, "ops.padding"),
    ],
)
def test_a_result_over_the_limits_names_the_option_that_makes_it(
    configure: Any, ops: dict[str, Any], field: str
) -> None:
    configure(max_pixels=10_000_000, max_side=16_383)
    with pytest.raises(BadRequest) as caught:
        render({"image": samples.photo_jpeg(64, 48), "ops": ops})
    assert caught.value.field == field and caught.value.message.startswith(field + ": ")


def portrait_mark(tmp_path: Path) -> str:
    path = tmp_path / "mark.png"
    Image.new("RGBA", (10, 40), (255, 0, 0, 255)).save(path)
    return str(path)


def test_a_scaled_watermark_fits_the_scaled_box_of_the_result(
    configure: Any, tmp_path: Path
) -> None:
    # imgproxy: scale is "the watermark size relative to the resultant image size", the
    # mark fitted into (scale x width, scale x height). Scaled by width alone, a portrait
    # mark at scale 1 on a 16,383 px wide result would be 16,383 x 65,532.
    configure(watermark_image=portrait_mark(tmp_path))
    limits = settings.current()
    assert pipeline.make_mark((100, 100), 0.5, 1.0, limits).size == (13, 50)
    assert pipeline.make_mark((400, 100), 1.0, 1.0, limits).size == (25, 100)
    reply = render(
        {"image": samples.photo_jpeg(100, 100), "ops": {"watermark": {"scale": 1.0}}}
    )
    assert (reply["width"], reply["height"]) == (100, 100)


def test_positions_round_half_to_even_as_imgproxy_does() -> None:
    # imgproxy's calcPosition: ShrinkToEven(outer - inner + 1, 2) for the centre,
    # RoundToEven(offset * dpr) and ScaleToEven(outer, fraction) for offsets and points.
    assert geometry.position((302, 10), (300, 10), Gravity("ce")) == (2, 0)
    assert geometry.position((100, 80), (20, 10), Gravity("ce")) == (40, 36)
    assert geometry.position((100, 80), (20, 10), Gravity("nowe", 2.5, 0)) == (2, 0)
    assert geometry.position((100, 80), (20, 10), Gravity("nowe", 1.5, 0)) == (2, 0)
    assert geometry.position((100, 80), (20, 10), Gravity("nowe", 0.025, 0)) == (2, 0)
    assert geometry.position((101, 80), (21, 10), Gravity("fp", 0.5, 0.0)) == (40, 0)


def test_an_absolute_crop_size_is_truncated_as_imgproxy_does() -> None:
    # imgproxy's calcCropSize: int(crop) at >= 1, max(1, Scale(orig, crop)) below, 0 whole.
    assert geometry.crop_length(1000, 100.6) == 100
    assert geometry.crop_length(1000, 0.1006) == 101
    assert geometry.crop_length(1000, 0) == 1000
    assert geometry.crop_length(80, 120.9) == 80


def test_a_result_past_max_result_dimension_is_refused_before_the_source_is_decoded(
    configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """imgproxy's IMGPROXY_MAX_RESULT_DIMENSION as a refusal: a JPEG source's header is
    enough (no pixel is decoded); the step that makes the result too large is named."""
    configure(max_result_dimension=100)
    photo = samples.photo_jpeg(400, 300)
    png = io.BytesIO()
    Image.new("RGB", (400, 300), (9, 9, 9)).save(png, format="PNG")
    reply = render({"image": photo, "ops": {"resize": {"width": 100, "height": 100}}})
    assert frames_of(reply["image"])[1] == (100, 75)

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the source was decoded")

    monkeypatch.setattr("renderers.decode._load", no_decode)
    cases = [
        ({}, "ops.resize", "400x300"),  # the source's own size: no resize asked
        ({"resize": {"width": 200, "height": 200}}, "ops.resize", "200x150"),
        ({"resize": {"width": 100}, "padding": [0, 10, 0, 10]}, "ops.padding", "120x75"),
        ({"resize": {"width": 50, "height": 101, "extend": True}}, "ops.resize.extend", "50x101"),
    ]
    for ops, field, size in cases:
        with pytest.raises(BadRequest) as caught:
            render({"image": photo, "ops": ops})
        message = caught.value.message
        assert caught.value.field == field and message.startswith(f"{field}: "), message
        assert size in message and "100 px per side (DIPS_MAX_RESULT_DIMENSION)" in message
    monkeypatch.undo()
    with pytest.raises(BadRequest, match="DIPS_MAX_RESULT_DIMENSION"):
        render({"image": png.getvalue(), "ops": {}})  # a PNG is refused once decoded
    configure(max_result_dimension=0)  # no limit but max_side and max_pixels
    assert frames_of(render({"image": photo, "ops": {}})["image"])[1] == (400, 300)


def test_max_result_dimension_is_a_setting_with_its_bounds() -> None:
    assert settings.Settings().max_result_dimension == settings.DEFAULT_MAX_RESULT_DIMENSION
    read = settings.from_environment({"DIPS_MAX_RESULT_DIMENSION": "4096"})
    assert read.max_result_dimension == 4096
    assert settings.from_environment({"DIPS_MAX_RESULT_DIMENSION": "0"}).max_result_dimension == 0
    for wrong in ("-1", "65536", "big"):
        with pytest.raises(ConfigError, match="DIPS_MAX_RESULT_DIMENSION|max_result_dimension"):
            settings.from_environment({"DIPS_MAX_RESULT_DIMENSION": wrong})
