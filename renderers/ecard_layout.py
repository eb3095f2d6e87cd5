"""How the matrix card looks: palette, geometry and the straightforward drawing of a card.

:func:`draw_card` draws a whole card with ImageDraw. The ``ecard`` renderer calls it once per
title and scale with no serial and no numbers to make a template, and draws each number and
serial digit once into a tile; a card is then the template with 80 + len(serial) tiles pasted
in. Every text element sits at whole-pixel positions, so a tile holds exactly the pixels that
drawing the card in one go would give; the tests check that the two agree pixel for pixel.

The card is 480 x 300 at scale 1 (960 x 600 at scale 2), 16 colours: 15 opaque ones and a
transparent one outside the rounded corners.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from renderers import fonts

RGB = tuple[int, int, int]

ROWS = "ABCDEFGH"
COLUMNS = "1234567890"
SERIAL_PREFIX = "PASSPOD MATRIXCARD SN: "


def _mix(colour: RGB, other: RGB, share: float) -> RGB:
    """``colour`` moved ``share`` of the way towards ``other``."""
    r, g, b = (round(c + (o - c) * share) for c, o in zip(colour, other, strict=True))
    return (r, g, b)


WHITE: RGB = (255, 255, 255)
INK: RGB = (22, 33, 58)  # the numbers
NAVY: RGB = (19, 57, 120)  # the band, the row and column labels
STRIPE: RGB = (241, 245, 251)  # every other row
LABEL_BG: RGB = (224, 232, 244)  # the row and column label cells
RULE: RGB = (205, 215, 231)  # grid lines
BORDER: RGB = (168, 183, 208)  # the card's edge
GOLD: RGB = (200, 163, 78)  # the rule under the band
SUBTITLE: RGB = _mix(NAVY, WHITE, 0.75)  # the serial line's prefix

# Opaque colours first; the last entry is the transparent one outside the corners. The ramps
# let anti-aliased text edges keep their shape in 16 colours.
PALETTE: tuple[RGB, ...] = (
    WHITE,
    INK,
    _mix(INK, WHITE, 0.25),
    _mix(INK, WHITE, 0.5),
    _mix(INK, WHITE, 0.75),
    NAVY,
    _mix(NAVY, WHITE, 0.25),
    _mix(NAVY, WHITE, 0.5),
    SUBTITLE,
    STRIPE,
    LABEL_BG,
    RULE,
    BORDER,
    GOLD,
    _mix(GOLD, NAVY, 0.5),
    WHITE,  # transparent
)
TRANSPARENT = len(PALETTE) - 1
ALPHAS: tuple[int, ...] = (255,) * TRANSPARENT + (0,)


@dataclass(frozen=True)
class Layout:
    """Every position and size of the card at one scale, in pixels."""

    scale: int

    def px(self, value: int) -> int:
        return value * self.scale

    @property
    def size(self) -> tuple[int, int]:
        return (self.px(480), self.px(300))

    @property
    def radius(self) -> int:
        return self.px(12)

    @property
    def line(self) -> int:
        return self.scale

    @property
    def band_height(self) -> int:
        return self.px(66)

    @property
    def title_origin(self) -> tuple[int, int]:
        """Left end of the title's baseline."""
        return (self.px(20), self.px(35))

    @property
    def serial_origin(self) -> tuple[int, int]:
        """Left end of the serial line's baseline."""
        return (self.px(20), self.px(55))

    @property
    def title_room(self) -> int:
        """The widest title that leaves room for the emblem."""
        return self.px(380)

    def column_x(self, column: int) -> int:
        """Left grid line of number column ``column`` (0-9); 10 gives the right edge."""
        return self.px(16 + 38 + 41 * column)

    def row_y(self, row: int) -> int:
        """Top grid line of number row ``row`` (0-7); 8 gives the bottom edge."""
        return self.px(80 + 22 + 23 * row)

    @property
    def grid_origin(self) -> tuple[int, int]:
        return (self.px(16), self.px(80))

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """The inside of a number cell, grid lines excluded: (left, top, right, bottom)."""
        return (
            self.column_x(column) + self.line,
            self.row_y(row) + self.line,
            self.column_x(column + 1),
            self.row_y(row + 1),
        )

    def row_fill(self, row: int) -> RGB:
        return STRIPE if row % 2 else WHITE

    @property
    def title_font_size(self) -> int:
        return self.px(22)

    @property
    def serial_font_size(self) -> int:
        return self.px(11)

    @property
    def label_font_size(self) -> int:
        return self.px(13)

    @property
    def number_font_size(self) -> int:
        return self.px(15)


@functools.cache
def layout(scale: int) -> Layout:
    return Layout(scale)


def centred_origin(
    box: tuple[int, int, int, int], text: str, weight: fonts.Weight, size: int
) -> tuple[int, int]:
    """Whole-pixel baseline origin that centres ``text`` (digits or capitals) in ``box``."""
    font = fonts.bundled(weight, size)
    left, top, right, bottom = box
    ink_top, ink_bottom = _ink_extent(weight, size)
    x = round((left + right - font.getlength(text)) / 2)
    y = round((top + bottom - ink_top - ink_bottom) / 2)
    return (x, y)


@functools.cache
def _ink_extent(weight: fonts.Weight, size: int) -> tuple[float, float]:
    """Top and bottom of digits and capitals, relative to the baseline."""
    _, top, _, bottom = fonts.bundled(weight, size).getbbox("0123456789ABCDEFGH", anchor="ls")
    return (top, bottom)


def serial_pitch(scale: int) -> int:
    """The whole-pixel advance of one serial digit."""
    return round(fonts.bundled("Bold", layout(scale).serial_font_size).getlength("0"))


def serial_start(scale: int) -> int:
    """Where the first serial digit's pen starts."""
    lay = layout(scale)
    prefix = fonts.bundled("Regular", lay.serial_font_size).getlength(SERIAL_PREFIX)
    return lay.serial_origin[0] + round(prefix)


def serial_digit_box(scale: int, index: int) -> tuple[int, int, int, int]:
    """The tile that holds serial digit number ``index``."""
    lay = layout(scale)
    font = fonts.bundled("Bold", lay.serial_font_size)
    _, top, _, bottom = font.getbbox("0123456789", anchor="ls")
    left = serial_start(scale) + index * serial_pitch(scale)
    baseline = lay.serial_origin[1]
    return (
        left,
        baseline + math.floor(top) - lay.line,
        left + serial_pitch(scale),
        baseline + math.ceil(bottom) + lay.line,
    )


def serial_room(scale: int) -> int:
    """How many serial digits fit before the emblem."""
    lay = layout(scale)
    return (lay.px(416) - serial_start(scale)) // serial_pitch(scale)


def _draw_frame(image: Image.Image, lay: Layout) -> None:
    width, height = lay.size
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle(
        (0, 0, width - 1, height - 1), lay.radius, fill=WHITE, outline=BORDER, width=lay.line
    )
    band = Image.new("RGBA", lay.size, (0, 0, 0, 0))
    ImageDraw.Draw(band).rounded_rectangle((0, 0, width - 1, height - 1), lay.radius, fill=NAVY)
    band = band.crop((0, 0, width, lay.band_height))
    image.paste(band, (0, 0), band)
    gold_top = lay.band_height
    draw.rectangle((lay.line, gold_top, width - 1 - lay.line, gold_top + lay.px(2) - 1), fill=GOLD)
    _draw_emblem(image, lay)


def _draw_emblem(image: Image.Image, lay: Layout) -> None:
    """A shield with a keyhole at the right of the band, drawn 4x larger and scaled down."""
    ss = 4
    left, top, width, height = lay.px(428), lay.px(12), lay.px(32), lay.px(42)
    mask = Image.new("L", (width * ss, height * ss), 0)
    draw = ImageDraw.Draw(mask)
    w, h = width * ss, height * ss
    outline = [(w / 2, 0), (w, h * 0.16), (w, h * 0.5), (w / 2, h), (0, h * 0.5), (0, h * 0.16)]
    draw.polygon(outline, fill=255)
    inset = lay.px(3) * ss
    inner = [
        (w / 2, inset),
        (w - inset, h * 0.16 + inset * 0.5),
        (w - inset, h * 0.5),
        (w / 2, h - inset * 1.6),
        (inset, h * 0.5),
        (inset, h * 0.16 + inset * 0.5),
    ]
    draw.polygon(inner, fill=0)
    hole = lay.px(5) * ss
    cx, cy = w / 2, h * 0.42
    draw.ellipse((cx - hole / 2, cy - hole / 2, cx + hole / 2, cy + hole / 2), fill=255)
    draw.polygon(
        [
            (cx - hole / 4, cy),
            (cx + hole / 4, cy),
            (cx + hole / 2.5, cy + hole * 1.3),
            (cx - hole / 2.5, cy + hole * 1.3),
        ],
        fill=255,
    )
    mask = mask.resize((width, height), Image.Resampling.LANCZOS)
    gold = Image.new("RGBA", (width, height), GOLD + (255,))
    image.paste(gold, (left, top), mask)


def _draw_grid(image: Image.Image, lay: Layout) -> None:
    draw = ImageDraw.Draw(image)
    x0, y0 = lay.grid_origin
    right, bottom = lay.column_x(10), lay.row_y(8)
    draw.rectangle((x0, y0, right, lay.row_y(0)), fill=LABEL_BG)
    draw.rectangle((x0, y0, lay.column_x(0), bottom), fill=LABEL_BG)
    for row in range(8):
        left, top, r, b = lay.cell_box(row, 0)
        draw.rectangle((left, top, right - 1, b - 1), fill=lay.row_fill(row))
    line = lay.line
    for x in [x0] + [lay.column_x(c) for c in range(11)]:
        draw.rectangle((x, y0, x + line - 1, bottom + line - 1), fill=RULE)
    for y in [y0] + [lay.row_y(r) for r in range(9)]:
        draw.rectangle((x0, y, right + line - 1, y + line - 1), fill=RULE)
    size = lay.label_font_size
    font = fonts.bundled("Bold", size)
    for column, label in enumerate(COLUMNS):
        box = (lay.column_x(column) + line, y0 + line, lay.column_x(column + 1), lay.row_y(0))
        draw.text(centred_origin(box, label, "Bold", size), label, NAVY, font, anchor="ls")
    for row, label in enumerate(ROWS):
        box = (x0 + line, lay.row_y(row) + line, lay.column_x(0), lay.row_y(row + 1))
        draw.text(centred_origin(box, label, "Bold", size), label, NAVY, font, anchor="ls")


def draw_number(
    draw: ImageDraw.ImageDraw,
    lay: Layout,
    row: int,
    column: int,
    value: int,
    offset: tuple[int, int] = (0, 0),
) -> None:
    """Draw ``value`` as two digits into its cell; ``offset`` is the drawing's own origin."""
    text = f"{value:02d}"
    size = lay.number_font_size
    x, y = centred_origin(lay.cell_box(row, column), text, "Regular", size)
    font = fonts.bundled("Regular", size)
    draw.text((x - offset[0], y - offset[1]), text, INK, font, anchor="ls")


def draw_serial_digit(
    draw: ImageDraw.ImageDraw, lay: Layout, index: int, digit: str, offset: tuple[int, int] = (0, 0)
) -> None:
    """Draw serial digit number ``index``; ``offset`` is the drawing's own origin."""
    x = serial_start(lay.scale) + index * serial_pitch(lay.scale)
    y = lay.serial_origin[1]
    font = fonts.bundled("Bold", lay.serial_font_size)
    draw.text((x - offset[0], y - offset[1]), digit, WHITE, font, anchor="ls")


def _blank(box: tuple[int, int, int, int], fill: RGB) -> Image.Image:
    left, top, right, bottom = box
    return Image.new("RGBA", (right - left, bottom - top), fill + (255,))


def number_tile(scale: int, row: int, value: int) -> Image.Image:
    """The inside of a number cell in row ``row`` (its colour) showing ``value``."""
    lay = layout(scale)
    box = lay.cell_box(row, 0)
    tile = _blank(box, lay.row_fill(row))
    draw_number(ImageDraw.Draw(tile), lay, row, 0, value, (box[0], box[1]))
    return to_palette(tile)


def serial_digit_tile(scale: int, digit: str) -> Image.Image:
    """One serial digit on the band."""
    lay = layout(scale)
    box = serial_digit_box(scale, 0)
    tile = _blank(box, NAVY)
    draw_serial_digit(ImageDraw.Draw(tile), lay, 0, digit, (box[0], box[1]))
    return to_palette(tile)


def draw_card(
    scale: int, title: str, serial: str | None = None, numbers: Sequence[int] | None = None
) -> Image.Image:
    """The whole card, drawn directly (RGBA). Without serial and numbers: the template."""
    lay = layout(scale)
    image = Image.new("RGBA", lay.size, (0, 0, 0, 0))
    _draw_frame(image, lay)
    draw = ImageDraw.Draw(image)
    title_font = fonts.bundled("Bold", lay.title_font_size)
    draw.text(lay.title_origin, title, WHITE, title_font, anchor="ls")
    prefix_font = fonts.bundled("Regular", lay.serial_font_size)
    draw.text(lay.serial_origin, SERIAL_PREFIX, SUBTITLE, prefix_font, anchor="ls")
    _draw_grid(image, lay)
    for index, digit in enumerate(serial or ""):
        draw_serial_digit(draw, lay, index, digit)
    for position, value in enumerate(numbers or ()):
        draw_number(draw, lay, position // 10, position % 10, value)
    return image


_QUANTISER = Image.new("P", (1, 1))
_QUANTISER.putpalette(
    [channel for colour in PALETTE[:TRANSPARENT] for channel in colour]
    + list(PALETTE[0]) * (256 - TRANSPARENT)
)


def to_palette(image: Image.Image) -> Image.Image:
    """Map an RGBA drawing to the card palette: nearest colour, no dithering."""
    alpha = image.getchannel("A")
    flat = Image.new("RGB", image.size, WHITE)
    flat.paste(image, (0, 0), alpha)
    indexed = flat.quantize(palette=_QUANTISER, dither=Image.Dither.NONE)
    indexed.paste(TRANSPARENT, (0, 0, *image.size), alpha.point(lambda a: 255 if a < 128 else 0))
    return indexed
