"""imgproxy's geometry, computed without pixels: what to cut, what size to scale to, where.

:func:`plan` takes the source's size (upright and rotated, as the pipeline sees it) and
the options, and returns a :class:`Plan` in source pixels: the area cut before resizing,
the size it is scaled to, the box cut from the scaled image, the canvas it is extended to,
and the padding. The arithmetic is imgproxy's own (``processing/prepare.go``, v3.31 and v4
alike: ``calcScale``, ``calcSizes``): ``zoom`` multiplies the scale before ``enlarge`` is
checked, and ``enlarge`` false never scales up (the smaller scale wins, keeping the aspect);
``dpr`` then multiplies the scale, the requested size, offsets and padding, but without
``enlarge`` it is clamped so that it never scales up either (the requested box keeps its
aspect ratio rather than growing past the source on one side); a width or height of 0
follows the other, ``force`` with a 0 keeps that side; the scaled image is always cut to
the requested size (a 0 side: the whole side), ``fill-down`` to the largest box of the
requested aspect ratio. Sizes round half away from zero and positions and padding half to
even, as imgproxy's Go code does (``imath.Scale`` for sizes; ``ScaleToEven``,
``ShrinkToEven``, ``RoundToEven`` for positions and padding).
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
    target: Size  # the requested size times dpr and zoom (0: free)
    fill: bool  # the scaled image is cut to ``result``
    result: Size  # the size cut from the scaled image (== scaled when not fill)
    canvas: Size  # the size after extend (== result when not extended)
    padding: tuple[int, int, int, int]  # top, right, bottom, left, in result pixels
    dpr: float = 1.0  # the dpr applied (clamped without enlarge): offsets follow it

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


@dataclass(frozen=True)
class Scale:
    """imgproxy's scale factors for an area, and the dpr it settled on (``DprScale``)."""

    width: float
    height: float
    dpr: float


def scales(source: Size, options: Options) -> Scale:
    """imgproxy's ``calcScale`` for an area of ``source`` size."""
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
    # zoom counts before the enlarge check: without enlarge it never scales up either
    w_shrink /= options.zoom[0]
    h_shrink /= options.zoom[1]
    dpr = options.dpr
    if not resize.enlarge:
        least = min(w_shrink, h_shrink)
        if least < 1:
            w_shrink /= least
            h_shrink /= least
            # the source is smaller than asked: a dpr below 1 would shrink it further from
            # the target, so imgproxy compensates (not when extending: the composition on
            # the canvas stays the same whatever the dpr)
            if not resize.extend:
                dpr /= least
        # the largest dpr that does not enlarge the image
        dpr = min(dpr, w_shrink, h_shrink)
    if options.min_width and src_w / options.min_width < w_shrink:
        least = src_w / options.min_width
        h_shrink /= w_shrink / least
        w_shrink = least
    if options.min_height and src_h / options.min_height < h_shrink:
        least = src_h / options.min_height
        w_shrink /= h_shrink / least
        h_shrink = least
    w_shrink = min(w_shrink / dpr, src_w)  # never below one pixel
    h_shrink = min(h_shrink / dpr, src_h)
    return Scale(1 / w_shrink, 1 / h_shrink, dpr)


def _scale(length: int, factor: float) -> int:
    """imgproxy's ``imath.Scale``: 0 stays 0 (and a tiny result may round to 0)."""
    return half_up(length * factor) if length else 0


def _min_nonzero(a: int, b: int) -> int:
    return min(a, b) if a and b else a or b


def plan(source: Size, options: Options) -> Plan:
    """The geometry for a source of ``source`` size (upright and rotated)."""
    crop_box, crop_gravity = _crop(source, options)
    area = (crop_box[2], crop_box[3])
    scale = scales(area, options)
    scaled = (scale_to(area[0], scale.width), scale_to(area[1], scale.height))
    resize = options.resize
    target = (
        _scale(resize.width, scale.dpr * options.zoom[0]),
        _scale(resize.height, scale.dpr * options.zoom[1]),
    )
    cut = target
    if resize.type == "fill-down" and not resize.enlarge:
        cut = _fill_down(target, scaled)
    result = (_min_nonzero(cut[0], scaled[0]), _min_nonzero(cut[1], scaled[1]))
    canvas = result
    if resize.extend:
        canvas = (max(result[0], target[0]), max(result[1], target[1]))
    padding = tuple(_scale_to_even(side, scale.dpr) for side in options.padding)
    return Plan(
        crop_box,
        crop_gravity,
        scaled,
        target,
        result != scaled,
        result,
        canvas,
        (padding[0], padding[1], padding[2], padding[3]),
        scale.dpr,
    )


def _scale_to_even(length: int, factor: float) -> int:
    """imgproxy's ``imath.ScaleToEven`` (padding)."""
    return half_even(length * factor) if length else 0


def _fill_down(target: Size, scaled: Size) -> Size:
    """fill-down: where the target passes the scaled image on one side, the box of the
    target's aspect ratio as wide (or high) as the scaled image (``calcSizes``). A target
    side of 0 stays 0: that side is not cut."""
    over_w = target[0] / scaled[0]
    over_h = target[1] / scaled[1]
    if over_w > over_h and over_w > 1:
        return (scaled[0], _scale(scaled[0], target[1] / target[0]))
    if over_h > over_w and over_h > 1:
        return (_scale(scaled[1], target[0] / target[1]), scaled[1])
    return target


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
