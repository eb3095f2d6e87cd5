"""The image operations a toolkit request can chain: thumbnail, crop, watermark.

Each operation is a frozen dataclass made from checked request fields (see
:mod:`renderers.toolkit`) whose ``apply(image, limits)`` returns a new image in a working mode
(L, LA, RGB or RGBA). ``prefix`` is the operation's place in the request (``""`` or
``"ops[2]."``) so that a value found wrong only against the image (a crop box outside it)
still names its field.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from mdp.errors import BadRequest
from renderers import fonts
from renderers.decode import open_image
from renderers.fields import RGB
from renderers.settings import Settings

log = logging.getLogger(__name__)

MAX_TILES = 10_000
Size = tuple[int, int]


def place(gravity: str, outer: Size, inner: Size, margin: int = 0) -> tuple[int, int]:
    """Top-left corner of ``inner`` inside ``outer`` at ``gravity``, ``margin`` from edges."""
    (outer_w, outer_h), (inner_w, inner_h) = outer, inner
    if gravity.endswith("west"):
        x = margin
    elif gravity.endswith("east"):
        x = outer_w - inner_w - margin
    else:
        x = (outer_w - inner_w) // 2
    if gravity.startswith("north"):
        y = margin
    elif gravity.startswith("south"):
        y = outer_h - inner_h - margin
    else:
        y = (outer_h - inner_h) // 2
    return (x, y)


def resize(image: Image.Image, size: Size) -> Image.Image:
    """Lanczos resize; large reductions first take a cheap box reduction (``reducing_gap``)."""
    if image.size == size:
        return image
    shrinking = size[0] < image.size[0] and size[1] < image.size[1]
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0 if shrinking else None)


def _check_output(size: Size, limits: Settings, field: str) -> None:
    width, height = size
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise BadRequest(
            f"{field}: the result would be {width}x{height}; the limit is {limits.max_side} px "
            f"per side and {limits.max_pixels / 1e6:g} MP",
            field,
        )


@dataclass(frozen=True)
class Thumbnail:
    """Fit inside, or fill, a box of ``width`` x ``height`` (one may be None for ``fit``)."""

    width: int | None
    height: int | None
    mode: str = "fit"  # or "fill": cover the box, then crop at gravity
    gravity: str = "center"
    upscale: bool = False
    prefix: str = ""

    def scaled_size(self, size: Size) -> Size:
        """The size the image is resized to before any crop."""
        width, height = size
        ratios = []
        if self.width is not None:
            ratios.append(self.width / width)
        if self.height is not None:
            ratios.append(self.height / height)
        scale = max(ratios) if self.mode == "fill" else min(ratios)
        if not self.upscale:
            scale = min(scale, 1.0)
        return (max(1, round(width * scale)), max(1, round(height * scale)))

    def apply(self, image: Image.Image, limits: Settings) -> Image.Image:
        scaled = self.scaled_size(image.size)
        _check_output(scaled, limits, self.prefix + "width")
        image = resize(image, scaled)
        if self.mode != "fill":
            return image
        assert self.width is not None and self.height is not None  # checked on parsing
        box = (min(self.width, scaled[0]), min(self.height, scaled[1]))
        x, y = place(self.gravity, scaled, box)
        return image.crop((x, y, x + box[0], y + box[1])) if box != scaled else image


@dataclass(frozen=True)
class Crop:
    """Cut ``width`` x ``height`` at (``x``, ``y``), or at ``gravity`` when x and y are None."""

    width: int
    height: int
    x: int | None = None
    y: int | None = None
    gravity: str = "center"
    prefix: str = ""

    def apply(self, image: Image.Image, limits: Settings) -> Image.Image:
        image_w, image_h = image.size
        if self.x is None or self.y is None:
            box = (min(self.width, image_w), min(self.height, image_h))
            x, y = place(self.gravity, image.size, box)
            return image.crop((x, y, x + box[0], y + box[1]))
        for name, start, length, limit in (
            ("x", self.x, self.width, image_w),
            ("y", self.y, self.height, image_h),
        ):
            if start + length > limit:
                side = "width" if name == "x" else "height"
                raise BadRequest(
                    f"{self.prefix}{name}: the crop box ends at {start + length}, beyond the "
                    f"image {side} {limit} ({image_w}x{image_h} after EXIF orientation)",
                    self.prefix + name,
                )
        return image.crop((self.x, self.y, self.x + self.width, self.y + self.height))


@dataclass(frozen=True)
class Watermark:
    """Text or an image laid over the picture at a position, or tiled all over it."""

    text: str | None = None
    mark: bytes | None = None
    position: str = "southeast"
    margin: int = 16
    opacity: float = 0.5
    angle: float = 0.0
    tiled: bool = False
    font_size: int | None = None
    color: RGB = (255, 255, 255)
    outline: int = 0
    outline_color: RGB = (0, 0, 0)
    mark_width: int | None = None
    prefix: str = ""

    def apply(self, image: Image.Image, limits: Settings) -> Image.Image:
        mark = self.make_mark(image.size, limits)
        if self.angle:
            _check_output(turned_size(mark.size, self.angle), limits, self.prefix + "angle")
            mark = mark.rotate(self.angle, Image.Resampling.BICUBIC, expand=True)
        if not self.tiled:
            room = (
                max(1, image.size[0] - 2 * self.margin),
                max(1, image.size[1] - 2 * self.margin),
            )
            if mark.size[0] > room[0] or mark.size[1] > room[1]:
                mark = mark.copy()
                mark.thumbnail(room, Image.Resampling.LANCZOS)
        alpha = mark.getchannel("A").point(lambda a: round(a * self.opacity))
        mark.putalpha(alpha)
        base = image.convert({"L": "RGB", "LA": "RGBA"}.get(image.mode, image.mode))
        for x, y in self._origins(base.size, mark.size):
            overlay(base, mark, x, y)
        return base

    def _origins(self, size: Size, mark: Size) -> list[tuple[int, int]]:
        if not self.tiled:
            return [place(self.position, size, mark, self.margin)]
        step_x, step_y = mark[0] + self.margin, mark[1] + self.margin
        columns = math.ceil(size[0] / step_x) + 1
        rows = math.ceil(size[1] / step_y)
        if columns * rows > MAX_TILES:
            field = self.prefix + "margin"
            raise BadRequest(
                f"{field}: tiling would lay {columns * rows} marks, more than {MAX_TILES}; "
                "make the mark or the margin larger",
                field,
            )
        origins: list[tuple[int, int]] = []
        for row in range(rows):
            shift = -(step_x // 2) if row % 2 else 0  # brick pattern
            y = self.margin // 2 + row * step_y
            origins.extend((shift + self.margin // 2 + col * step_x, y) for col in range(columns))
        return origins

    def make_mark(self, size: Size, limits: Settings) -> Image.Image:
        """The mark as an RGBA image, before opacity, angle and fitting."""
        if self.text is not None:
            return self._text_mark(size, limits)
        assert self.mark is not None  # one of the two is checked on parsing
        decoded = open_image(self.mark, self.prefix + "mark", limits)
        decoded.upright()
        mark = decoded.image.convert("RGBA")
        if self.mark_width is not None and self.mark_width != mark.size[0]:
            height = max(1, round(mark.size[1] * self.mark_width / mark.size[0]))
            _check_output((self.mark_width, height), limits, self.prefix + "mark_width")
            mark = resize(mark, (self.mark_width, height))
        return mark

    def _text_mark(self, size: Size, limits: Settings) -> Image.Image:
        assert self.text is not None
        font_size = self.font_size or max(10, round(min(size) / 16))
        with fonts.LOCK:
            font = text_font(font_size, limits)
            box = font.getbbox(self.text, stroke_width=self.outline)
            left, top = math.floor(box[0]), math.floor(box[1])
            extent = (max(1, math.ceil(box[2]) - left), max(1, math.ceil(box[3]) - top))
            _check_output(extent, limits, self.prefix + "font_size")
            mark = Image.new("RGBA", extent, self.color + (0,))
            ImageDraw.Draw(mark).text(
                (-left, -top),
                self.text,
                fill=self.color + (255,),
                font=font,
                stroke_width=self.outline,
                stroke_fill=self.outline_color + (255,),
            )
        return mark


def turned_size(size: Size, angle: float) -> Size:
    """The box of a ``size`` image turned by ``angle`` degrees with ``expand`` (an upper
    bound of Pillow's, which rounds the corners' coordinates)."""
    radians = math.radians(angle)
    cos, sin = abs(math.cos(radians)), abs(math.sin(radians))
    width, height = size
    return (math.ceil(width * cos + height * sin) + 1, math.ceil(width * sin + height * cos) + 1)


def text_font(size: int, limits: Settings) -> ImageFont.FreeTypeFont:
    """The watermark font: the deployment's ``text_font`` or the bundled Bold subset."""
    if limits.text_font is not None:
        return fonts.from_file(limits.text_font, size)
    return fonts.bundled("Bold", size)


def overlay(base: Image.Image, mark: Image.Image, x: int, y: int) -> None:
    """Composite ``mark`` (RGBA) onto ``base`` at (x, y), clipped to ``base``."""
    left, top = max(0, -x), max(0, -y)
    right = min(mark.size[0], base.size[0] - x)
    bottom = min(mark.size[1], base.size[1] - y)
    if right <= left or bottom <= top:
        return
    piece = (
        mark
        if (left, top, right, bottom) == (0, 0, *mark.size)
        else mark.crop((left, top, right, bottom))
    )
    dest = (x + left, y + top)
    if base.mode == "RGBA":
        base.alpha_composite(piece, dest)
    else:
        base.paste(piece.convert("RGB"), dest, piece.getchannel("A"))


Operation = Thumbnail | Crop | Watermark
