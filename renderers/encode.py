"""Writing the result: JPEG, PNG, WebP, AVIF or GIF, with metadata kept or stripped.

Stripping (the default) drops EXIF (camera, GPS, time), XMP, comments and text chunks; the ICC
colour profile stays when it still describes the pixels, because without it colours change.
With ``strip`` false the EXIF block is kept too, its orientation reset to 1 since the pixels
have been turned upright (``Output.orientation`` when the caller left them as stored). Alpha
is flattened onto ``background`` for JPEG.

JPEG is saved with optimised Huffman tables (what thumbor does; 10-20 % fewer bytes for
~0.1 ms at 300 px). A baseline file of at most ``JPEG_BASELINE_BYTES`` is kept as it is
(there a progressive file's extra scan headers make it larger: 5,644 against 5,858 bytes
for a 300 x 225 photo at quality 80); a larger one is also saved progressive and the
smaller kept (up to ``JPEG_TRY_BOTH_PIXELS``; above, progressive only). thumbor saves
progressive with optimised tables, so at identical pixels the bytes are not more (below
12 KB, baseline being the smaller there is measured, not proven). GIF output is
palette-quantised, with one transparent index for alpha. :func:`encode_frames` writes
animations (GIF, WebP).

Each format holds a largest side (``MAX_SIDE``), checked before writing (:func:`check_side`):
WebP 16,383 (libwebp's limit), AVIF 16,384 (the widest frame an AV1 level, 6.x, allows;
wider needs the unconstrained level 31, which not every decoder takes; libavif's own decoder
stops at 32,768: a 40,000 px file it wrote did not open), JPEG 65,500 (libjpeg's
``JPEG_MAX_DIMENSION``), GIF 65,535 (16-bit fields), PNG 65,535 (the format holds 2^31-1;
this is the renderers' own bound, ``max_side``'s highest value).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mdp.errors import BadRequest
from renderers.decode import Decoded, exif_bytes
from renderers.fields import RGB

CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
}
DEFAULT_QUALITY = {"jpeg": 85, "webp": 80, "avif": 65}
PNG_LEVEL = 6
AVIF_SPEED = 9  # imgproxy's default; libavif's fastest, ~55 ms for 1024 px
JPEG_TRY_BOTH_PIXELS = 1_000_000
JPEG_BASELINE_BYTES = 12_000  # below this a baseline file is the smaller (scan headers)
ANIMATED = ("gif", "webp")
MAX_SIDE = {"jpeg": 65_500, "png": 65_535, "webp": 16_383, "avif": 16_384, "gif": 65_535}


def fits(size: tuple[int, int], fmt: str) -> bool:
    """Whether ``fmt`` can hold an image of ``size``."""
    return max(size) <= MAX_SIDE[fmt]


def check_side(size: tuple[int, int], fmt: str, field: str = "format") -> None:
    """Refuse a result ``fmt`` cannot hold, naming the limit and the request's ``field``."""
    if not fits(size, fmt):
        raise BadRequest(
            f"{field}: {fmt} holds at most {MAX_SIDE[fmt]} px per side and the result would "
            f"be {size[0]}x{size[1]}; ask for a smaller size or another format",
            field,
        )


@dataclass(frozen=True)
class Output:
    """How to write the result."""

    format: str = "jpeg"
    quality: int | None = None  # jpeg and webp; ignored for png
    strip: bool = True
    background: RGB = (255, 255, 255)
    orientation: int = 1  # the EXIF orientation written with a kept EXIF block

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


def prepare(image: Image.Image, output: Output) -> Image.Image:
    """``image`` in a mode the output format takes."""
    if output.format == "jpeg":
        image = flatten(image, output.background)
    elif output.format in ("webp", "avif") and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    elif output.format == "gif":
        image = to_palette(image)
    # Pillow's writers fall back on image.info (comment, EXIF, ICC, DPI...) for anything not
    # passed explicitly, and resize/convert copy it along: only what is passed here goes out.
    image.info = {}
    return image


def to_palette(image: Image.Image) -> Image.Image:
    """A P image for GIF: adaptive palette, alpha below half as the transparent index."""
    if image.mode == "P":
        return image
    if image.mode not in ("RGBA", "LA"):
        return image.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT)
    rgba = image.convert("RGBA")
    mask = rgba.getchannel("A").point(lambda a: 255 if a < 128 else 0)
    palette = rgba.convert("RGB").quantize(255, Image.Quantize.MEDIANCUT)
    palette.paste(255, (0, 0), mask)
    palette.info["transparency"] = 255
    return palette


def save_options(image: Image.Image, output: Output, source: Decoded | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    family = "L" if image.mode in ("L", "LA") else "RGB"
    if source is not None and source.icc_profile is not None and source.icc_mode == family:
        if output.format != "gif":
            options["icc_profile"] = source.icc_profile
    if not output.strip and source is not None and output.format != "gif":
        exif = exif_bytes(source.exif, output.orientation)
        if exif is not None:
            options["exif"] = exif
    if output.format == "png":
        options["compress_level"] = PNG_LEVEL
    elif output.format in DEFAULT_QUALITY:
        options["quality"] = output.quality or DEFAULT_QUALITY[output.format]
    if output.format == "avif":
        options["speed"] = AVIF_SPEED
    if output.format == "gif" and "transparency" in image.info:
        options["transparency"] = image.info["transparency"]
    return options


def encode(image: Image.Image, output: Output, source: Decoded | None) -> bytes:
    """The bytes of ``image`` in ``output.format``; ``source`` supplies the metadata."""
    check_side(image.size, output.format)
    transparency = image.info.get("transparency") if image.mode == "P" else None
    image = prepare(image, output)
    if transparency is not None:
        image.info["transparency"] = transparency
    options = save_options(image, output, source)
    if output.format == "jpeg":
        return _jpeg(image, options)
    buffer = io.BytesIO()
    image.save(buffer, output.format.upper(), **options)
    return buffer.getvalue()


def _jpeg(image: Image.Image, options: dict[str, Any]) -> bytes:
    """Optimised Huffman tables; baseline when small, else the smaller of the two scans."""
    if image.size[0] * image.size[1] > JPEG_TRY_BOTH_PIXELS:
        progressive = io.BytesIO()
        image.save(progressive, "JPEG", optimize=True, progressive=True, **options)
        return progressive.getvalue()
    baseline = io.BytesIO()
    image.save(baseline, "JPEG", optimize=True, **options)
    if baseline.getbuffer().nbytes <= JPEG_BASELINE_BYTES:
        return baseline.getvalue()
    progressive = io.BytesIO()
    image.save(progressive, "JPEG", optimize=True, progressive=True, **options)
    smaller = min(baseline, progressive, key=lambda b: b.getbuffer().nbytes)
    return smaller.getvalue()


def encode_frames(
    frames: list[Image.Image],
    durations: list[int],
    loop: int,
    output: Output,
) -> bytes:
    """An animation (GIF or WebP) of ``frames`` shown ``durations`` ms each."""
    assert output.format in ANIMATED and frames
    check_side(frames[0].size, output.format)
    prepared = [prepare(frame, output) for frame in frames]
    options: dict[str, Any] = {"save_all": True, "append_images": prepared[1:],
                               "duration": durations, "loop": loop}
    if output.format == "webp":
        options["quality"] = output.quality or DEFAULT_QUALITY["webp"]
    else:
        options["disposal"] = 2
        if "transparency" in prepared[0].info:
            options["transparency"] = prepared[0].info["transparency"]
    buffer = io.BytesIO()
    prepared[0].save(buffer, output.format.upper(), **options)
    return buffer.getvalue()
