"""The canonical operation map of an ``imgproxy`` request, checked into typed options.

The HTTP door parses imgproxy's URL (aliases, meta-options such as ``rs`` and ``s``,
presets, CSS-style padding) into this map; the worker only reads it. Keys are imgproxy's
full option names, values are normalised (docs/RENDERERS.md has the table, and
``tests/fixtures/imgproxy_cases.json`` the examples both sides are tested against). A key
may be absent (its default), and an unknown key is refused by name, as is a value out of
range: ``ops.resize.width``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mdp.errors import BadRequest
from renderers.registry import check_known_fields

RGB = tuple[int, int, int]
RESIZE_TYPES = ("fit", "fill", "fill-down", "force", "auto")
PLACES = ("no", "so", "ea", "we", "noea", "nowe", "soea", "sowe", "ce")
GRAVITIES = PLACES + ("sm", "fp")
WATERMARK_PLACES = PLACES + ("re",)
MAX_DPR = 8.0
MAX_SIGMA = 100.0
MAX_PIXELATE = 256
MAX_PADDING = 4096
MAX_OFFSET = 100_000.0
# options that are the door's business and mean nothing to the renderer: accepted, ignored
DOOR_ONLY = ("cachebuster", "expires", "filename", "return_attachment", "preset")
# imgproxy options the renderer knows it does not do (a clear refusal, not "unknown")
UNSUPPORTED = (
    "trim",
    "extend_aspect_ratio",
    "format_quality",
    "max_bytes",
    "skip_processing",
    "raw",
    "keep_copyright",
    "strip_color_profile",
    "enforce_thumbnail",
    "resizing_algorithm",
    "adjust",
    "brightness",
    "contrast",
    "saturation",
    "monochrome",
    "duotone",
    "colorize",
    "gradient",
    "unsharp_masking",
    "watermark_url",
    "watermark_text",
    "watermark_size",
    "watermark_rotate",
    "watermark_shadow",
    "style",
    "page",
    "pages",
    "disable_animation",
    "objects_position",
    "crop_aspect_ratio",
    "background_alpha",
    "dpi",
    "autoquality",
    "jpeg_options",
    "png_options",
    "webp_options",
    "max_src_resolution",
    "max_src_file_size",
    "max_animation_frames",
    "max_animation_frame_resolution",
    "max_result_dimension",
    "fallback_image_url",
    "hashsum",
    "video_thumbnail_second",
)


@dataclass(frozen=True)
class Gravity:
    """Where to cut or place: a compass point with offsets, ``sm`` (smart) or ``fp``."""

    type: str = "ce"
    x: float = 0.0  # offsets (>= 1 absolute px, < 1 relative), or the focus point 0-1
    y: float = 0.0


@dataclass(frozen=True)
class Resize:
    type: str = "fit"
    width: int = 0
    height: int = 0
    enlarge: bool = False
    extend: bool = False
    extend_gravity: Gravity = Gravity()


@dataclass(frozen=True)
class Crop:
    """An area cut before resizing: sizes >= 1 are pixels, < 1 fractions, 0 the whole."""

    width: float
    height: float
    gravity: Gravity | None = None  # None: the ``gravity`` option


@dataclass(frozen=True)
class Watermark:
    opacity: float = 1.0
    position: str = "ce"
    x: float = 0.0
    y: float = 0.0
    scale: float = 0.0  # mark width relative to the result's; 0 keeps its size


@dataclass(frozen=True)
class Options:
    resize: Resize = Resize()
    dpr: float = 1.0
    zoom: tuple[float, float] = (1.0, 1.0)
    min_width: int = 0
    min_height: int = 0
    gravity: Gravity = Gravity()
    crop: Crop | None = None
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    background: RGB | None = None
    blur: float = 0.0
    sharpen: float = 0.0
    pixelate: int = 0
    rotate: int = 0  # clockwise, 0/90/180/270
    flip: tuple[bool, bool] = (False, False)  # horizontal, vertical
    strip_metadata: bool = True
    auto_rotate: bool = True
    watermark: Watermark | None = None


def _fail(where: str, message: str) -> BadRequest:
    return BadRequest(f"{where} {message}", where)


def _number(value: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"must be a number {lo:g}-{hi:g}, got {value!r:.40}")
    if not lo <= value <= hi:
        raise _fail(where, f"must be {lo:g}-{hi:g}, got {value:g}")
    return float(value)


def _integer(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"must be an integer {lo}-{hi}, got {value!r:.40}")
    if not lo <= value <= hi:
        raise _fail(where, f"must be {lo}-{hi}, got {value}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"must be true or false, got {value!r:.40}")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(where, f"must be one of {', '.join(choices)}; got {value!r:.40}")
    return value


def _map(value: Any, where: str, known: set[str]) -> Mapping[str, Any]:
    check_known_fields(value, known, where + ".")
    return value  # type: ignore[no-any-return]


def _list(value: Any, where: str, length: int) -> list[Any]:
    if not isinstance(value, list | tuple) or len(value) != length:
        raise _fail(where, f"must be a list of {length} values")
    return list(value)


def gravity(value: Any, where: str, choices: tuple[str, ...] = GRAVITIES) -> Gravity:
    item = _map(value, where, {"type", "x", "y"})
    kind = _choice(item.get("type", "ce"), where + ".type", choices)
    if kind == "fp":
        x = _number(item.get("x", 0.5), where + ".x", 0.0, 1.0)
        y = _number(item.get("y", 0.5), where + ".y", 0.0, 1.0)
    else:
        x = _number(item.get("x", 0), where + ".x", -MAX_OFFSET, MAX_OFFSET)
        y = _number(item.get("y", 0), where + ".y", -MAX_OFFSET, MAX_OFFSET)
    return Gravity(kind, x, y)


def resize(value: Any, where: str, max_side: int) -> Resize:
    item = _map(value, where, {"type", "width", "height", "enlarge", "extend", "extend_gravity"})
    extend_gravity = Gravity()
    if item.get("extend_gravity") is not None:
        extend_gravity = gravity(item["extend_gravity"], where + ".extend_gravity", PLACES)
    return Resize(
        type=_choice(item.get("type", "fit"), where + ".type", RESIZE_TYPES),
        width=_integer(item.get("width", 0), where + ".width", 0, max_side),
        height=_integer(item.get("height", 0), where + ".height", 0, max_side),
        enlarge=_boolean(item.get("enlarge", False), where + ".enlarge"),
        extend=_boolean(item.get("extend", False), where + ".extend"),
        extend_gravity=extend_gravity,
    )


def crop(value: Any, where: str, max_side: int) -> Crop:
    item = _map(value, where, {"width", "height", "gravity"})
    place = item.get("gravity")
    return Crop(
        width=_number(item.get("width", 0), where + ".width", 0, max_side),
        height=_number(item.get("height", 0), where + ".height", 0, max_side),
        gravity=gravity(place, where + ".gravity") if place is not None else None,
    )


def watermark(value: Any, where: str) -> Watermark:
    item = _map(value, where, {"opacity", "position", "x", "y", "scale"})
    return Watermark(
        opacity=_number(item.get("opacity", 1), where + ".opacity", 0, 1),
        position=_choice(item.get("position", "ce"), where + ".position", WATERMARK_PLACES),
        x=_number(item.get("x", 0), where + ".x", -MAX_OFFSET, MAX_OFFSET),
        y=_number(item.get("y", 0), where + ".y", -MAX_OFFSET, MAX_OFFSET),
        scale=_number(item.get("scale", 0), where + ".scale", 0, 1),
    )


def _rotate(value: Any, where: str) -> int:
    angle = _integer(value, where, -36_000, 36_000)
    if angle % 90:
        raise _fail(where, f"must be a multiple of 90, got {angle}")
    return angle % 360


def _padding(value: Any, where: str) -> tuple[int, int, int, int]:
    sides = [
        _integer(v, f"{where}[{i}]", 0, MAX_PADDING) for i, v in enumerate(_list(value, where, 4))
    ]
    return (sides[0], sides[1], sides[2], sides[3])


def _background(value: Any, where: str) -> RGB:
    channels = [_integer(v, f"{where}[{i}]", 0, 255) for i, v in enumerate(_list(value, where, 3))]
    return (channels[0], channels[1], channels[2])


def parse(value: Any, max_side: int) -> Options:
    """Options from a request's ``ops`` (a map; absent or null: no operation)."""
    if value is None:
        return Options()
    known = set(Options.__dataclass_fields__) | set(DOOR_ONLY) | set(UNSUPPORTED)
    ops = _map(value, "ops", known)
    for name in UNSUPPORTED:
        if name in ops:
            raise _fail(f"ops.{name}", "is an imgproxy option DIPS does not support")
    get = ops.get
    zoom = get("zoom")
    flip = get("flip")
    return Options(
        resize=resize(get("resize"), "ops.resize", max_side) if get("resize") else Resize(),
        dpr=_number(get("dpr", 1), "ops.dpr", 0.01, MAX_DPR),
        zoom=tuple(
            _number(z, f"ops.zoom[{i}]", 0.01, 100)
            for i, z in enumerate(_list(zoom, "ops.zoom", 2))
        )
        if zoom is not None
        else (1.0, 1.0),  # type: ignore[arg-type]
        min_width=_integer(get("min_width", 0), "ops.min_width", 0, max_side),
        min_height=_integer(get("min_height", 0), "ops.min_height", 0, max_side),
        gravity=gravity(get("gravity"), "ops.gravity") if get("gravity") else Gravity(),
        crop=crop(get("crop"), "ops.crop", max_side) if get("crop") is not None else None,
        padding=_padding(get("padding"), "ops.padding") if get("padding") else (0, 0, 0, 0),
        background=_background(get("background"), "ops.background") if get("background") else None,
        blur=_number(get("blur", 0), "ops.blur", 0, MAX_SIGMA),
        sharpen=_number(get("sharpen", 0), "ops.sharpen", 0, MAX_SIGMA),
        pixelate=_integer(get("pixelate", 0), "ops.pixelate", 0, MAX_PIXELATE),
        rotate=_rotate(get("rotate", 0), "ops.rotate"),
        flip=tuple(_boolean(f, f"ops.flip[{i}]") for i, f in enumerate(_list(flip, "ops.flip", 2)))
        if flip is not None
        else (False, False),  # type: ignore[arg-type]
        strip_metadata=_boolean(get("strip_metadata", True), "ops.strip_metadata"),
        auto_rotate=_boolean(get("auto_rotate", True), "ops.auto_rotate"),
        watermark=watermark(get("watermark"), "ops.watermark") if get("watermark") else None,
    )
