"""The fonts bundled with the package (a subset of Noto Sans CJK SC, see ``fonts/OFL.txt``).

No renderer uses a font of the operating system. ``scripts/make_font_subset`` made the files
in ``fonts/`` and wrote ``fonts/charset.txt``, the characters they cover; text with any other
character is refused before drawing instead of coming out as empty boxes.
"""

from __future__ import annotations

import functools
import io
import threading
from importlib import resources
from typing import Literal

from PIL import ImageFont

Weight = Literal["Regular", "Bold"]

# A FreeType face must not be used by two threads at once, and the font objects below are
# shared: hold LOCK while measuring or drawing text with them.
LOCK = threading.RLock()

_FONT_DIR = "fonts"
_FAMILY_FILE = "DIPSCardSans-{weight}.otf"


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath(_FONT_DIR).joinpath(name).read_bytes()


@functools.cache
def _font_bytes(weight: Weight) -> bytes:
    return _resource(_FAMILY_FILE.format(weight=weight))


@functools.cache
def charset() -> frozenset[str]:
    """Every character the bundled fonts can draw."""
    text = _resource("charset.txt").decode("utf-8")
    return frozenset(text.rstrip("\n"))


def missing_characters(text: str) -> str:
    """The characters of ``text`` the bundled fonts cannot draw, each once, in order."""
    covered = charset()
    return "".join(dict.fromkeys(ch for ch in text if ch not in covered))


@functools.lru_cache(maxsize=64)
def bundled(weight: Weight, size: int) -> ImageFont.FreeTypeFont:
    """The bundled font at ``size`` pixels, laid out without Raqm so output never varies."""
    return ImageFont.truetype(
        io.BytesIO(_font_bytes(weight)), size, layout_engine=ImageFont.Layout.BASIC
    )


@functools.lru_cache(maxsize=16)
def from_file(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A deployment's own font (``DIPS_TEXT_FONT``) at ``size`` pixels."""
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
