"""What the renderers' results depend on, as one short hash: the output version.

A worker announces it in READY (``mdp.handlers``), and the HTTP door keys its image cache by
it, so that an upgrade that leaves the drawing alone (the core, a door, ``mdpctl``) keeps
every cached image, while anything that can change a result's bytes renders anew: this
package's code and data files (fonts, tiles), Pillow and the codec libraries it was built
with, and the settings that draw (the card's title, the text font, the watermark).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import PIL
from PIL import features

from renderers import settings

ROOT = Path(__file__).resolve().parent
# the libraries whose versions change encoded or drawn bytes
LIBRARIES = ("jpg", "webp", "avif", "zlib", "libtiff", "freetype2", "raqm", "harfbuzz",
             "fribidi", "littlecms2", "libimagequant")


def output_version() -> str:
    """A 16-hex-digit hash of everything above, as configured now."""
    current = settings.current()
    digest = hashlib.sha256(_files_hash().encode())
    digest.update(f"\0Pillow {PIL.__version__}".encode())
    for name in LIBRARIES:
        if features.check(name):
            digest.update(f"\0{name} {features.version(name)}".encode())
    digest.update(f"\0title {current.ecard_title}\0mark {current.watermark_text}".encode())
    for path in (current.text_font, current.watermark_image):
        digest.update(b"\0")
        if path is not None:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def _files_hash() -> str:
    """Every file of the package (code and data), by path and content."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
