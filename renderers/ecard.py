"""``ecard``: the password matrix card of the original system.

Request (the original fields, unchanged)::

    pSN    the serial number: 1-24 ASCII digits as a string (leading zeros kept), or an int >= 0
    pData  80 numbers 00-99 in reading order (A1..A0, B1..B0, ... H0): the original
           comma-separated string, or a list of ints (or of digit strings)
    title  optional: the card title (default: the deployment's, normally 金山密码保护卡)
    scale  optional: 1 (480 x 300, the default) or 2 (960 x 600, for high-density screens)

In the string form only commas separate numbers. Spaces, tabs and line breaks around a number
are ignored, and a line break *inside* a number joins its two halves: the original PHP client
hard-wrapped the string, so its example ``"..., 23, 5\\n5, 08, ..."`` carries 55 as the 21st
number (the card printed beside it shows C1 = 55). Any other character, or a space between
digits, is refused and the error names the item, e.g. ``pData[20]``.

The reply is a 16-colour palette PNG. The work that does not depend on the request (the
template for each title and scale, and a tile for every number and serial digit) is done once
per process; a card is then a copy of the template, 80 tile pastes and a zlib pass.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from mdp.errors import BadRequest
from renderers import ecard_layout as art
from renderers import fonts, settings
from renderers.png import encode_palette_png
from renderers.registry import Field, Renderer, register

log = logging.getLogger(__name__)

NUMBER_COUNT = 80
MAX_SERIAL_DIGITS = 24
MAX_TITLE_CHARS = 32
MAX_PDATA_CHARS = 4096
SCALES = (1, 2)
PNG_LEVEL = 3  # zlib: ~8.3 KB in ~0.2 ms at 1x; level 6 saves 10 % for 4x the time

_SERIAL = re.compile(rf"[0-9]{{1,{MAX_SERIAL_DIGITS}}}")
# "00"-"99" and "0"-"9": a lookup is both the check and the conversion
_VALUES = {f"{n:02d}": n for n in range(100)} | {str(n): n for n in range(10)}
_WRAP = re.compile(r"[ \t]*(?:\r\n|\r|\n)[ \t]*")


def parse_serial(value: Any) -> str:
    """``pSN`` as a digit string."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 10**MAX_SERIAL_DIGITS:
            raise BadRequest(f"pSN must be an integer of 1 to {MAX_SERIAL_DIGITS} digits", "pSN")
        value = str(value)
    elif isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise BadRequest(f"pSN must be a string of digits, got {type(value).__name__}", "pSN")
    serial = value.strip()
    if not _SERIAL.fullmatch(serial):
        raise BadRequest(
            f"pSN must be 1 to {MAX_SERIAL_DIGITS} digits 0-9, got {value!r:.60}", field="pSN"
        )
    return serial


def parse_numbers(value: Any) -> tuple[int, ...]:
    """``pData`` as 80 ints 0-99, from the original string or a list."""
    if isinstance(value, bytes):
        if len(value) > MAX_PDATA_CHARS:
            raise BadRequest(f"pData is too long ({len(value)} bytes)", field="pData")
        value = value.decode("ascii", errors="replace")
    if isinstance(value, str):
        if len(value) > MAX_PDATA_CHARS:
            raise BadRequest(f"pData is too long ({len(value)} characters)", field="pData")
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise BadRequest(
            f"pData must be a comma-separated string or a list, got {type(value).__name__}",
            field="pData",
        )
    if len(items) > NUMBER_COUNT * 4:
        raise BadRequest(f"pData has {len(items)} items; expected {NUMBER_COUNT}", field="pData")
    numbers = tuple(_parse_number(item, index) for index, item in enumerate(items))
    if len(numbers) != NUMBER_COUNT:
        raise BadRequest(
            f"pData has {len(numbers)} numbers; expected {NUMBER_COUNT}", field="pData"
        )
    return numbers


def _parse_number(item: Any, index: int) -> int:
    field = f"pData[{index}]"
    if isinstance(item, int) and not isinstance(item, bool):
        if 0 <= item <= 99:
            return item
        raise BadRequest(f"{field} is {item}; expected a number 00-99", field=field)
    if isinstance(item, bytes):
        item = item.decode("ascii", errors="replace")
    if not isinstance(item, str):
        raise BadRequest(f"{field} must be a number 00-99, got {type(item).__name__}", field)
    text = item.strip()
    value = _VALUES.get(text)
    if value is None:
        value = _VALUES.get(_WRAP.sub("", text))  # a number split by a wrapped line
    if value is None:
        shown = item if text else "empty"
        raise BadRequest(f"{field} is {shown!r:.20}; expected a number 00-99", field=field)
    return value


def parse_title(value: Any) -> str:
    """``title``: text the bundled font can draw and the band can hold."""
    if value is None:
        return settings.current().ecard_title
    if not isinstance(value, str):
        raise BadRequest(f"title must be a string, got {type(value).__name__}", field="title")
    if not value.strip() or len(value) > MAX_TITLE_CHARS:
        raise BadRequest(f"title must have 1 to {MAX_TITLE_CHARS} characters", field="title")
    missing = fonts.missing_characters(value)
    if missing:
        raise BadRequest(f"title: the card font has no glyph for {missing!r:.60}", "title")
    lay = art.layout(1)
    with fonts.LOCK:
        width = fonts.bundled("Bold", lay.title_font_size).getlength(value)
    if width > lay.title_room:
        raise BadRequest(
            f"title is too wide for the card ({width:.0f} px; at most {lay.title_room})", "title"
        )
    return value


def parse_scale(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in SCALES:
        raise BadRequest(f"scale must be 1 or 2, got {value!r:.20}", field="scale")
    return int(value)


class _Tiles:
    """Pre-drawn palette tiles of one scale: every number on both row colours, every digit."""

    def __init__(self, scale: int) -> None:
        lay = art.layout(scale)
        self.number_origins = [
            lay.cell_box(row, column)[:2] for row in range(8) for column in range(10)
        ]
        self.numbers = [[art.number_tile(scale, row, v) for v in range(100)] for row in (0, 1)]
        self.serial_top = art.serial_digit_box(scale, 0)[1]
        self.serial_lefts = [art.serial_digit_box(scale, i)[0] for i in range(MAX_SERIAL_DIGITS)]
        self.digits = {digit: art.serial_digit_tile(scale, digit) for digit in "0123456789"}


_tiles: dict[int, _Tiles] = {}


def tiles(scale: int) -> _Tiles:
    with fonts.LOCK:
        if scale not in _tiles:
            _tiles[scale] = _Tiles(scale)
        return _tiles[scale]


@functools.lru_cache(maxsize=32)
def template(title: str, scale: int) -> Image.Image:
    """The card with its title but no serial and no numbers, as palette indices."""
    log.debug("drawing the card template for %r at scale %d", title, scale)
    with fonts.LOCK:
        return art.to_palette(art.draw_card(scale, title))


def compose(serial: str, numbers: Sequence[int], title: str, scale: int = 1) -> Image.Image:
    """The card as a palette image (indices into ``ecard_layout.PALETTE``)."""
    parts = tiles(scale)
    card = template(title, scale).copy()
    for position, value in enumerate(numbers):
        card.paste(parts.numbers[(position // 10) % 2][value], parts.number_origins[position])
    for index, digit in enumerate(serial):
        card.paste(parts.digits[digit], (parts.serial_lefts[index], parts.serial_top))
    return card


def render_card(
    serial: str, numbers: Sequence[int], title: str | None = None, scale: int = 1
) -> bytes:
    """The PNG bytes of a card whose fields are already checked."""
    card = compose(serial, numbers, title or settings.current().ecard_title, scale)
    return encode_palette_png(card, art.PALETTE, art.ALPHAS, PNG_LEVEL)


@register
class ECard(Renderer):
    """The password matrix card."""

    name = "ecard"
    content_type = "image/png"
    fields = (
        Field("pSN", "1-24 digits, as a string or a non-negative integer", required=True),
        Field("pData", "80 numbers 00-99: comma-separated string or list", required=True),
        Field("title", "string, at most 32 characters the card font covers", doc="card title"),
        Field("scale", "1 (480x300) or 2 (960x600)", doc="default 1"),
    )
    example = {"pSN": "1234567890", "pData": list(range(80))}

    def render_checked(self, request: Mapping[str, Any]) -> bytes:
        serial = parse_serial(request["pSN"])
        numbers = parse_numbers(request["pData"])
        title = parse_title(request.get("title"))
        scale = parse_scale(request.get("scale", 1))
        return render_card(serial, numbers, title, scale)
