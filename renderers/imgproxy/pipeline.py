"""imgproxy's processing applied to pixels, one frame at a time.

Order (imgproxy's pipeline): orientation (EXIF when ``auto_rotate``, then ``rotate``
clockwise, then ``flip``), the ``crop`` area, resize (one Lanczos pass from the cut area of
the decoded image; a JPEG was already reduced by the decoder), the cut to the requested
size at ``gravity`` (``fill``, ``fill-down``, or a ``min_width`` past ``width``), filters
(``blur``, ``sharpen``, ``pixelate``), ``extend``, ``padding``, ``background`` (flatten),
``watermark`` (skipped, as imgproxy skips it, when the worker has no mark configured: a
URL's ``wm:`` is then no error). The geometry comes from
:mod:`renderers.imgproxy.geometry`, in source pixels; here it is mapped onto the decoded
image, which a JPEG draft made smaller.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFilter

from mdp.errors import BadRequest
from renderers import ops as toolkit_ops
from renderers.decode import ORIENTATION_TRANSPOSE
from renderers.imgproxy import geometry, smart
from renderers.imgproxy.geometry import Plan, Size
from renderers.imgproxy.options import Gravity, Options
from renderers.settings import Settings

RGB = tuple[int, int, int]
_ROTATE = {
    90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def oriented_size(stored: Size, orientation: int, options: Options) -> Size:
    """The source's size as the geometry sees it (upright, then rotated)."""
    width, height = stored
    if options.auto_rotate and orientation in (5, 6, 7, 8):
        width, height = height, width
    if options.rotate in (90, 270):
        width, height = height, width
    return (width, height)


def orient(image: Image.Image, orientation: int, options: Options) -> Image.Image:
    if options.auto_rotate and orientation in ORIENTATION_TRANSPOSE:
        image = image.transpose(ORIENTATION_TRANSPOSE[orientation])
    if options.rotate:
        image = image.transpose(_ROTATE[options.rotate])
    if options.flip[0]:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if options.flip[1]:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def written_orientation(orientation: int, options: Options) -> int:
    """The EXIF orientation the result keeps: the source's when no pixel was turned (no
    auto-rotation of an oriented source, no ``rotate``, no ``flip``), else 1. imgproxy
    leaves an image it need not turn alone, and its ``Rotate`` drops the orientation."""
    turned = (options.auto_rotate and orientation != 1) or options.rotate or any(options.flip)
    return 1 if turned else orientation


def draft_hint(options: Options, limits: Settings | None = None) -> Callable[[Size], Size]:
    """For the decoder: the smallest size (upright when ``auto_rotate``) covering the result.

    The scale is the larger of the two axes' (a JPEG draft reduces both alike). With
    ``limits``, a result past them is refused here, from the header, before the source is
    decoded (:func:`check_result`).
    """

    def needed(size: Size) -> Size:
        rotated = size if options.rotate in (0, 180) else (size[1], size[0])
        plan = geometry.plan(rotated, options)
        if limits is not None:
            check_result(plan, limits)
        factor = max(plan.scale)
        if factor >= 1:
            return size
        return (math.ceil(size[0] * factor), math.ceil(size[1] * factor))

    return needed


def check_result(plan: Plan, limits: Settings) -> None:
    """Refuse, before any pixel is made, a step whose image would pass the limits, naming
    the option that makes it so: the resize, the extend, or the padding. The tightest
    first: ``max_result_dimension`` per side, then ``max_side`` and ``max_pixels``."""
    steps = (
        (plan.scaled, "ops.resize"),
        (plan.canvas, "ops.resize.extend"),
        (plan.final, "ops.padding"),
    )
    bound = limits.max_result_dimension
    for (width, height), option in steps:
        if bound and max(width, height) > bound:
            raise BadRequest(
                f"{option}: the result would be {width}x{height}; this server makes images "
                f"of at most {bound} px per side (DIPS_MAX_RESULT_DIMENSION): ask for a "
                "smaller size (e.g. rs:fit:W:H)",
                option,
            )
        if max(width, height) > limits.max_side or width * height > limits.max_pixels:
            raise BadRequest(
                f"{option}: the result would be {width}x{height}; the limit is "
                f"{limits.max_side} px per side and {limits.max_pixels / 1e6:g} MP",
                option,
            )


@dataclass
class Frames:
    """Processes the frames of one request alike (smart positions found on the first)."""

    plan: Plan
    options: Options
    limits: Settings
    source: Size  # oriented source size the plan was made for
    crop_at: tuple[int, int] | None = None
    fill_at: tuple[int, int] | None = None
    mark: Image.Image | None = field(default=None, repr=False)

    def apply(self, image: Image.Image) -> Image.Image:
        """One oriented frame (at decoded scale) through the whole pipeline."""
        image = self._resize(image)
        image = self._fill(image)
        image = filters(image, self.options)
        image = self._extend(image)
        image = pad(image, self.plan.padding, self.options.background)
        if self.options.background is not None:
            image = flatten(image, self.options.background)
        if self.options.watermark is not None and has_mark(self.limits):
            image = self._watermark(image)
        return image

    def _resize(self, image: Image.Image) -> Image.Image:
        fx, fy = image.size[0] / self.source[0], image.size[1] / self.source[1]
        left, top, width, height = self.plan.crop
        if self.plan.crop_gravity.type == "sm" and self.options.crop is not None:
            if self.crop_at is None:
                area = (max(1, round(width * fx)), max(1, round(height * fy)))
                found = smart.find(image, area)
                self.crop_at = (round(found[0] / fx), round(found[1] / fy))
            left, top = self.crop_at
        box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
        whole = box == (0, 0, image.size[0], image.size[1])
        if whole and image.size == self.plan.scaled:
            return image
        return image.resize(self.plan.scaled, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)

    def _fill(self, image: Image.Image) -> Image.Image:
        plan = self.plan
        if not plan.fill or plan.result == image.size:
            return image
        if self.fill_at is None:
            gravity = self.options.gravity
            if gravity.type == "sm":
                self.fill_at = smart.find(image, plan.result)
            else:
                self.fill_at = geometry.position(image.size, plan.result, gravity, plan.dpr)
        x, y = self.fill_at
        return image.crop((x, y, x + plan.result[0], y + plan.result[1]))

    def _extend(self, image: Image.Image) -> Image.Image:
        canvas = self.plan.canvas
        if canvas == image.size:
            return image
        at = geometry.position(
            canvas, image.size, self.options.resize.extend_gravity, self.plan.dpr
        )
        return place_on(image, canvas, at, self.options.background)

    def _watermark(self, image: Image.Image) -> Image.Image:
        spec = self.options.watermark
        assert spec is not None
        if self.mark is None:
            self.mark = make_mark(image.size, spec.scale, spec.opacity, self.limits)
        mark = self.mark
        base = image.convert({"L": "RGB", "LA": "RGBA"}.get(image.mode, image.mode))
        dpr = self.plan.dpr
        if spec.position == "re":
            step_x = mark.size[0] + max(0, round(spec.x * dpr))
            step_y = mark.size[1] + max(0, round(spec.y * dpr))
            if math.ceil(base.size[0] / step_x) * math.ceil(base.size[1] / step_y) > 10_000:
                raise BadRequest(
                    "ops.watermark: tiling would lay more than 10000 marks", "ops.watermark"
                )
            for y in range(0, base.size[1], step_y):
                for x in range(0, base.size[0], step_x):
                    toolkit_ops.overlay(base, mark, x, y)
            return base
        gravity = Gravity(spec.position, spec.x, spec.y)
        x, y = geometry.position(base.size, mark.size, gravity, dpr, overflow=True)
        toolkit_ops.overlay(base, mark, x, y)
        return base


def filters(image: Image.Image, options: Options) -> Image.Image:
    if options.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(options.blur))
    if options.sharpen > 0:
        image = image.filter(
            ImageFilter.UnsharpMask(radius=options.sharpen, percent=100, threshold=0)
        )
    if options.pixelate > 1:
        size = image.size
        small = (max(1, size[0] // options.pixelate), max(1, size[1] // options.pixelate))
        image = image.resize(small, Image.Resampling.BOX).resize(size, Image.Resampling.NEAREST)
    return image


def _with_alpha(image: Image.Image) -> Image.Image:
    return (
        image
        if image.mode in ("RGBA", "LA")
        else image.convert("LA" if image.mode == "L" else "RGBA")
    )


def place_on(
    image: Image.Image, canvas: Size, at: tuple[int, int], background: RGB | None
) -> Image.Image:
    """``image`` at ``at`` on a canvas of ``background`` (transparent when None)."""
    if background is None:
        image = _with_alpha(image)
        fill: int | tuple[int, ...] = (0, 0) if image.mode == "LA" else (0, 0, 0, 0)
    else:
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB")
        fill = background + ((255,) if image.mode == "RGBA" else ())
    out = Image.new(image.mode, canvas, fill)
    out.paste(image, at)
    return out


def pad(
    image: Image.Image, padding: tuple[int, int, int, int], background: RGB | None
) -> Image.Image:
    top, right, bottom, left = padding
    if not any(padding):
        return image
    canvas = (image.size[0] + left + right, image.size[1] + top + bottom)
    return place_on(image, canvas, (left, top), background)


def flatten(image: Image.Image, background: RGB) -> Image.Image:
    from renderers.encode import flatten as flat

    return flat(image, background)


def has_mark(limits: Settings) -> bool:
    """Whether the worker has a watermark to lay (imgproxy skips ``watermark`` without one:
    its processing returns early when no watermark provider is configured)."""
    return limits.watermark_image is not None or limits.watermark_text is not None


def make_mark(size: Size, scale: float, opacity: float, limits: Settings) -> Image.Image:
    """The worker's watermark (DIPS_WATERMARK_IMAGE or _TEXT), scaled, with its opacity."""
    if not has_mark(limits):
        raise BadRequest(
            "ops.watermark: this worker has no watermark (DIPS_WATERMARK_IMAGE "
            "or DIPS_WATERMARK_TEXT)",
            "ops.watermark",
        )
    if limits.watermark_image is not None:
        spec = toolkit_ops.Watermark(mark=_file(limits.watermark_image), prefix="ops.watermark.")
    else:
        spec = toolkit_ops.Watermark(text=limits.watermark_text, prefix="ops.watermark.")
    mark = spec.make_mark(size, limits)
    if scale > 0:
        # imgproxy fits the mark into the result's size times scale (enlarging if need be),
        # so it is never larger than the image it is laid on.
        box = (geometry.scale_to(size[0], scale), geometry.scale_to(size[1], scale))
        factor = min(box[0] / mark.size[0], box[1] / mark.size[1])
        fitted = (geometry.scale_to(mark.size[0], factor), geometry.scale_to(mark.size[1], factor))
        mark = mark.resize(fitted, Image.Resampling.LANCZOS)
    if opacity < 1:
        mark.putalpha(mark.getchannel("A").point(lambda a: round(a * opacity)))
    return mark


@functools.lru_cache(maxsize=4)
def _file(path: str) -> bytes:
    return Path(path).read_bytes()


__all__ = [
    "Frames",
    "check_result",
    "draft_hint",
    "orient",
    "oriented_size",
    "written_orientation",
]
