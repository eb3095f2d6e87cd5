"""imgproxy's geometry, computed without pixels: what to cut, what size to scale to, where.

:func:`plan` takes the source's size (upright and rotated, as the pipeline sees it) and
the options, and returns a :class:`Plan` in source pixels: the area cut before resizing,
the size it is scaled to, the box cut from the scaled image (``fill``, ``fill-down``,
``auto``), the canvas it is extended to, and the padding. The arithmetic follows
imgproxy's documented semantics: ``dpr`` multiplies the requested size (and offsets and
padding), ``enlarge`` false never scales up (the smaller scale wins, keeping the aspect),
a width or height of 0 follows the other, ``force`` with a 0 keeps that side. Sizes round
half away from zero and positions half to even, as imgproxy's Go code does (``imath.Scale``
and ``math.Round`` for sizes; ``ShrinkToEven``, ``RoundToEven`` in ``calcPosition``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from renderers.imgproxy.options import Gravity, Options

Box = tuple[int, int, int, int]  # left, top, width, height
Size = tuple[int, int]


@dataclass(frozen=True)
class Plan:
    crop: Box  # cut from the source before scaling (the whole source when no crop)
    crop_gravity: Gravity  # how ``crop`` was placed (``sm``: the caller places it on pixels)
    scaled: Size  # the cut area is resized to this
    target: Size  # the requested size times dpr (0: free)
    fill: bool  # the scaled image is cut to ``result``
    result: Size  # the size cut from the scaled image (== scaled when not fill)
    canvas: Size  # the size after extend (== result when not extended)
    padding: tuple[int, int, int, int]  # top, right, bottom, left, in result pixels

    @property
    def final(self) -> Size:
        top, right, bottom, left = self.padding
        return (self.canvas[0] + left + right, self.canvas[1] + top + bottom)

    @property
    def scale(self) -> tuple[float, float]:
        """The resize factors from source pixels to result pixels."""
        return (self.scaled[0] / self.crop[2], self.scaled[1] / self.crop[3])


def half_up(value: float) -> int:
    """Round half away from zero (Go's math.Round, which imgproxy uses for sizes)."""
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def half_even(value: float) -> int:
    """Round half to even (Go's math.RoundToEven, which imgproxy uses for positions)."""
    return int(round(value))


def scale_to(length: int, factor: float) -> int:
    return max(1, half_up(length * factor))


def crop_length(total: int, wanted: float) -> int:
    """imgproxy's crop size: 0 the whole side, below 1 a fraction, else whole pixels (the
    fraction dropped, as Go's int() does), never more than the side."""
    if wanted <= 0:
        return total
    if wanted < 1:
        return scale_to(total, wanted)
    return min(int(wanted), total)


def position(
    outer: Size, inner: Size, gravity: Gravity, dpr: float = 1.0, overflow: bool = False
) -> tuple[int, int]:
    """Top-left of ``inner`` in ``outer`` at a compass gravity or focus point."""
    (width, height), (inner_w, inner_h) = outer, inner
    if gravity.type == "fp":
        left = half_even(width * gravity.x) - inner_w // 2
        top = half_even(height * gravity.y) - inner_h // 2
    else:
        off_x = _offset(gravity.x, width, dpr)
        off_y = _offset(gravity.y, height, dpr)
        left = half_even((width - inner_w + 1) / 2) + off_x
        top = half_even((height - inner_h + 1) / 2) + off_y
        kind = gravity.type
        if kind in ("no", "noea", "nowe"):
            top = off_y
        if kind in ("so", "soea", "sowe"):
            top = height - inner_h - off_y
        if kind in ("ea", "noea", "soea"):
            left = width - inner_w - off_x
        if kind in ("we", "nowe", "sowe"):
            left = off_x
    if overflow:
        return (_clamp(left, -inner_w + 1, width - 1), _clamp(top, -inner_h + 1, height - 1))
    return (_clamp(left, 0, width - inner_w), _clamp(top, 0, height - inner_h))


def _offset(value: float, length: int, dpr: float) -> int:
    if abs(value) >= 1:
        return half_even(value * dpr)
    return half_even(length * value)


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(value, hi)) if hi >= lo else lo


def _resize_type(options: Options, source: Size, wanted: tuple[float, float]) -> str:
    kind = options.resize.type
    if kind != "auto":
        return kind
    src_diff = source[0] - source[1]
    dst_diff = wanted[0] - wanted[1]
    return "fill" if (src_diff >= 0) == (dst_diff >= 0) else "fit"


def scales(source: Size, options: Options) -> tuple[float, float]:
    """imgproxy's scale factors for an area of ``source`` size."""
    resize = options.resize
    src_w, src_h = float(source[0]), float(source[1])
    dst_w = float(resize.width) or src_w
    dst_h = float(resize.height) or src_h
    w_shrink = 1.0 if dst_w == src_w else src_w / dst_w
    h_shrink = 1.0 if dst_h == src_h else src_h / dst_h
    kind = _resize_type(options, source, (dst_w, dst_h))
    if w_shrink != 1 or h_shrink != 1:
        if resize.width == 0 and kind != "force":
            w_shrink = h_shrink
        elif resize.height == 0 and kind != "force":
            h_shrink = w_shrink
        elif kind == "fit":
            w_shrink = h_shrink = max(w_shrink, h_shrink)
        elif kind in ("fill", "fill-down"):
            w_shrink = h_shrink = min(w_shrink, h_shrink)
    w_shrink /= options.dpr
    h_shrink /= options.dpr
    if not resize.enlarge:
        least = min(w_shrink, h_shrink)
        if least < 1:
            w_shrink /= least
            h_shrink /= least
    if options.min_width and src_w / options.min_width < w_shrink:
        least = src_w / options.min_width
        h_shrink /= w_shrink / least
        w_shrink = least
    if options.min_height and src_h / options.min_height < h_shrink:
        least = src_h / options.min_height
        w_shrink /= h_shrink / least
        h_shrink = least
    return (options.zoom[0] / w_shrink, options.zoom[1] / h_shrink)


def plan(source: Size, options: Options) -> Plan:
    """The geometry for a source of ``source`` size (upright and rotated)."""
    crop_box, crop_gravity = _crop(source, options)
    area = (crop_box[2], crop_box[3])
    w_scale, h_scale = scales(area, options)
    scaled = (scale_to(area[0], w_scale), scale_to(area[1], h_scale))
    resize = options.resize
    target = (
        scale_to(resize.width, options.dpr * options.zoom[0]) if resize.width else 0,
        scale_to(resize.height, options.dpr * options.zoom[1]) if resize.height else 0,
    )
    kind = _resize_type(options, area, (resize.width or area[0], resize.height or area[1]))
    fill = kind in ("fill", "fill-down")
    result = scaled
    if fill:
        wanted = (target[0] or scaled[0], target[1] or scaled[1])
        if kind == "fill-down":
            wanted = _keep_ratio(wanted, scaled)
        result = (min(wanted[0], scaled[0]), min(wanted[1], scaled[1]))
    canvas = result
    if resize.extend:
        canvas = (max(result[0], target[0]), max(result[1], target[1]))
    padding = tuple(half_up(side * options.dpr) for side in options.padding)
    return Plan(
        crop_box,
        crop_gravity,
        scaled,
        target,
        fill,
        result,
        canvas,
        (padding[0], padding[1], padding[2], padding[3]),
    )


def _keep_ratio(wanted: Size, scaled: Size) -> Size:
    """fill-down: a box of the wanted aspect ratio that fits in the scaled image."""
    over_w = wanted[0] / scaled[0]
    over_h = wanted[1] / scaled[1]
    if over_w <= 1 and over_h <= 1:
        return wanted
    over = max(over_w, over_h)
    return (max(1, half_up(wanted[0] / over)), max(1, half_up(wanted[1] / over)))


def _crop(source: Size, options: Options) -> tuple[Box, Gravity]:
    if options.crop is None:
        return (0, 0, source[0], source[1]), options.gravity
    area = (crop_length(source[0], options.crop.width), crop_length(source[1], options.crop.height))
    gravity = options.crop.gravity or options.gravity
    if gravity.type == "sm":
        left, top = position(source, area, Gravity())  # centred until the pixels say
    else:
        left, top = position(source, area, gravity)
    return (left, top, area[0], area[1]), gravity
