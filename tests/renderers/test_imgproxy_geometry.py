"""``imgproxy`` geometry against imgproxy's own code and test tables.

The expected sizes come from imgproxy's ``processing/*_test.go`` (v4; v3.31 computes the
same in ``processing/prepare.go``) or, where its tables have no case, from its
``calcScale``/``calcSizes`` worked by hand; each case says which.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from renderers import samples, settings
from renderers.imgproxy import geometry, pipeline
from renderers.imgproxy.options import Gravity, Options, Resize

GEOMETRY_PNG = (200, 100)  # imgproxy's testdata/geometry.png


def final(source: tuple[int, int], options: Options) -> tuple[int, int]:
    return geometry.plan(source, options).final


def render(request: dict[str, Any]) -> dict[str, Any]:
    return renderers.get("imgproxy").render(request)  # type: ignore[no-any-return]


# dpr: without enlarge, clamped so that it never scales up (keeping the asked shape) -------


@pytest.mark.parametrize(
    ("source", "options", "expected"),
    [
        # a fill smaller than the source at dpr 1 keeps its square shape at dpr 2 and 4
        ((400, 300), Options(resize=Resize("fill", 300, 300), dpr=2), (300, 300)),
        ((400, 300), Options(resize=Resize("fill", 100, 100), dpr=4), (300, 300)),
        ((400, 300), Options(resize=Resize("fill", 100, 100), dpr=2), (200, 200)),
        # crop_test.go TestResizeFillGravity: "dpr does not affect output size since it
        # higher than input"
        (GEOMETRY_PNG, Options(resize=Resize("fill", 26, 100), dpr=2), (26, 100)),
        (GEOMETRY_PNG, Options(resize=Resize("fill", 26, 100), dpr=0.5), (13, 50)),
        # extend_test.go: w:500/h:500/ex:1/dpr:2 (with offsets, which change no size)
        (GEOMETRY_PNG, Options(resize=Resize("fit", 500, 500, extend=True), dpr=2), (500, 500)),
        # with enlarge, dpr multiplies as before
        (
            (400, 300),
            Options(resize=Resize("fill", 300, 300, enlarge=True), dpr=2),
            (600, 600),
        ),
    ],
)
def test_dpr_without_enlarge_keeps_the_shape(
    source: tuple[int, int], options: Options, expected: tuple[int, int]
) -> None:
    assert final(source, options) == expected


def test_dpr_below_one_on_a_small_source_is_compensated_unless_extending() -> None:
    # prepare.go calcScale: the source is smaller than asked, so a dpr of 0.5 would shrink
    # it further from the target; imgproxy divides it out, except when extending, where the
    # composition on the canvas stays that of dpr 1.
    fit = Resize("fit", 400, 400)
    plain = geometry.plan(GEOMETRY_PNG, Options(resize=fit, dpr=0.5))
    assert (plain.scaled, plain.final, plain.dpr) == ((200, 100), (200, 100), 1.0)
    extended = geometry.plan(
        GEOMETRY_PNG, Options(resize=Resize("fit", 400, 400, extend=True), dpr=0.5)
    )
    assert (extended.scaled, extended.final, extended.dpr) == ((100, 50), (200, 200), 0.5)


def test_offsets_and_padding_follow_the_clamped_dpr() -> None:
    options = Options(
        resize=Resize("fill", 26, 100), gravity=Gravity("we", 5, 0), padding=(4, 0, 0, 0), dpr=2
    )
    plan = geometry.plan(GEOMETRY_PNG, options)
    assert plan.dpr == 1.0 and plan.padding == (4, 0, 0, 0)
    # columns numbered by their red value: the cut starts 5 px in, not 10
    columns = Image.new("RGB", GEOMETRY_PNG)
    columns.putdata([(x, 0, 0) for _ in range(GEOMETRY_PNG[1]) for x in range(GEOMETRY_PNG[0])])
    result = pipeline.Frames(plan, options, settings.current(), GEOMETRY_PNG).apply(columns)
    assert result.size == (26, 104)
    assert result.convert("RGB").getpixel((0, 4)) == (5, 0, 0)


def test_dpr_keeps_the_shape_end_to_end() -> None:
    reply = render(
        {
            "image": samples.photo_jpeg(400, 300),
            "ops": {"resize": {"type": "fill", "width": 300, "height": 300}, "dpr": 2},
        }
    )
    assert (reply["width"], reply["height"]) == (300, 300)
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert image.size == (300, 300)


# fill-down ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "extend", "expected"),
    [
        # processing_test.go TestResizeToFillDown (200x100 geometry.png), every case
        (50, 50, False, (50, 50)),
        (50, 20, False, (50, 20)),
        (20, 50, False, (20, 50)),
        (300, 300, False, (100, 100)),
        (300, 125, False, (200, 83)),
        (250, 300, False, (83, 100)),
        (0, 50, False, (100, 50)),
        (50, 0, False, (50, 25)),
        (0, 200, False, (200, 100)),
        (300, 0, False, (200, 100)),
        # TestResizeToFillDownExtend, the cases with a side of 0 and the ones around them
        (300, 50, True, (300, 50)),
        (100, 300, True, (100, 300)),
        (0, 50, True, (100, 50)),
        (50, 0, True, (50, 25)),
        (0, 200, True, (200, 200)),
        (300, 0, True, (300, 100)),
    ],
)
def test_fill_down_follows_imgproxy(
    width: int, height: int, extend: bool, expected: tuple[int, int]
) -> None:
    options = Options(resize=Resize("fill-down", width, height, extend=extend))
    assert final(GEOMETRY_PNG, options) == expected


def test_fill_down_with_enlarge_is_fill() -> None:
    # processing_test.go TestResizeToFillDownEnlarge
    for (width, height), expected in (((300, 125), (300, 125)), ((0, 200), (400, 200))):
        options = Options(resize=Resize("fill-down", width, height, enlarge=True))
        assert final(GEOMETRY_PNG, options) == expected


# zoom ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # prepare.go calcScale divides by zoom before the enlarge check
        (Options(zoom=(2.0, 2.0)), (400, 300)),
        # (unequal zooms: the larger is undone, the other keeps its ratio to it, so the
        # image is squeezed rather than stretched)
        (Options(zoom=(2.0, 1.0)), (400, 150)),
        (Options(resize=Resize("fit", 200, 0), zoom=(4.0, 4.0)), (400, 300)),
        (Options(zoom=(0.5, 0.5)), (200, 150)),
        (Options(resize=Resize("fit", 400, 0), zoom=(0.5, 0.5)), (200, 150)),
        (Options(resize=Resize(enlarge=True), zoom=(2.0, 2.0)), (800, 600)),
        (Options(resize=Resize(enlarge=True), zoom=(2.0, 1.0)), (800, 300)),
    ],
)
def test_zoom_does_not_enlarge_without_enlarge(options: Options, expected: tuple[int, int]) -> None:
    assert final((400, 300), options) == expected


# min-width: the scaled image is cut to the asked size ---------------------------------------


def test_min_width_scales_up_to_it_then_the_result_is_cut_to_width() -> None:
    # prepare.go: min-width lowers the shrink; cropToResult then cuts every resizing type
    # to the target (imgproxy's docs: "the final image will be cropped according to width")
    options = Options(resize=Resize("fit", 100, 100), min_width=200)
    plan = geometry.plan((400, 300), options)
    assert (plan.scaled, plan.final) == ((200, 150), (100, 100))


# orientation kept when the pixels are not turned --------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (Options(auto_rotate=False), 6),
        (Options(), 1),
        (Options(auto_rotate=False, rotate=90), 1),
        (Options(auto_rotate=False, flip=(True, False)), 1),
    ],
)
def test_the_written_orientation_is_the_sources_only_when_nothing_turned(
    options: Options, expected: int
) -> None:
    # processing/rotate_and_flip.go: with nothing to rotate or flip the image is left alone
    # and keeps its orientation; otherwise vips.Image.Rotate removes it (autorot_remove_angle)
    assert pipeline.written_orientation(6, options) == expected


def test_auto_rotate_off_keeps_the_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = samples.photo_jpeg(120, 80, exif=exif.tobytes())
    reply = render(
        {
            "image": data,
            "ops": {"resize": {"width": 60}, "strip_metadata": False, "auto_rotate": False},
        }
    )
    with Image.open(io.BytesIO(reply["image"])) as image:
        assert image.size == (60, 40)
        assert image.getexif().get(0x0112) == 6
