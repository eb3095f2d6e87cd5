"""Writing the result: JPEG, PNG or WebP, with metadata kept or stripped.

Stripping (the default) drops EXIF (camera, GPS, time), XMP, comments and text chunks; the ICC
colour profile stays when it still describes the pixels, because without it colours change.
With ``strip`` false the EXIF block is kept too, its orientation reset to 1 since the pixels
have been turned upright. Alpha is flattened onto ``background`` for JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from renderers.decode import Decoded, exif_bytes
from renderers.fields import RGB

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
DEFAULT_QUALITY = {"jpeg": 85, "webp": 80}
PNG_LEVEL = 6


@dataclass(frozen=True)
class Output:
    """How to write the result."""

    format: str = "jpeg"
    quality: int | None = None  # jpeg and webp; ignored for png
    strip: bool = True
    background: RGB = (255, 255, 255)

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def flatten(image: Image.Image, background: RGB) -> Image.Image:
    """Drop alpha by compositing onto ``background``."""
    if image.mode not in ("RGBA", "LA"):
        return image
    if image.mode == "LA":
        grey = round(0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2])
        flat = Image.new("L", image.size, grey)
        flat.paste(image.getchannel("L"), (0, 0), image.getchannel("A"))
        return flat
    flat = Image.new("RGB", image.size, background)
    flat.paste(image, (0, 0), image.getchannel("A"))
    return flat


def encode(image: Image.Image, output: Output, source: Decoded) -> bytes:
    """The bytes of ``image`` in ``output.format``; ``source`` supplies the metadata."""
    if output.format == "jpeg":
        image = flatten(image, output.background)
    elif output.format == "webp" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    # Pillow's writers fall back on image.info (comment, EXIF, ICC, DPI...) for anything not
    # passed explicitly, and resize/convert copy it along: only what is passed here goes out.
    image.info = {}
    options: dict[str, object] = {}
    family = "L" if image.mode in ("L", "LA") else "RGB"
    if source.icc_profile is not None and source.icc_mode == family:
        options["icc_profile"] = source.icc_profile
    if not output.strip:
        exif = exif_bytes(source.exif)
        if exif is not None:
            options["exif"] = exif
    if output.format == "png":
        options["compress_level"] = PNG_LEVEL
    else:
        options["quality"] = output.quality or DEFAULT_QUALITY[output.format]
    buffer = io.BytesIO()
    image.save(buffer, output.format.upper(), **options)
    return buffer.getvalue()
