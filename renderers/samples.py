"""Sample requests and images, made on demand: the seed's card, photos, hostile files.

Used by the tests, ``scripts/bench_renderers`` and anyone who wants to poke a running service
(``mdpctl call ecard``). Nothing here is large on disk: big images are generated in memory.
"""

from __future__ import annotations

import io
import struct
from typing import Any

from PIL import Image, ImageChops

# The request of the seed's PHP example, with its hard line wraps kept: the 21st number is
# "5\n5" (55), the 42nd starts a line and the 63rd is preceded by a wrapped comma.
SEED_SERIAL = "1234567890"
SEED_DATA = (
    "61, 61, 58, 00, 25, 08, 73, 03, 52, 53, 34, 84, 03, 81, 52, 17, 96, 30, 57, 23, 5\n"
    "5, 08, 03, 84, 08, 47, 27, 02, 68, 17, 77, 68, 96, 86, 88, 21, 08, 14, 64, 39, 55,\n"
    "80, 71, 00, 40, 51, 22, 89, 51, 77, 34, 59, 51, 77, 86, 86, 96, 42, 71, 11, 62, 89\n"
    ", 63, 35, 07, 55, 71, 94, 03, 80, 74, 68, 93, 11, 67, 67, 44, 42, 87, 68"
)


def _example_image() -> bytes:
    """A 48 x 32 two-colour PNG of 126 bytes."""
    image = Image.new("RGB", (48, 32), (40, 90, 160))
    image.paste((230, 180, 40), (0, 0, 24, 16))
    return encode(image, "PNG", optimize=True)


def seed_request(**extra: Any) -> dict[str, Any]:
    """The ``ecard`` request of the seed's PHP example."""
    return {"pSN": SEED_SERIAL, "pData": SEED_DATA, **extra}


def photo(width: int, height: int) -> Image.Image:
    """A photograph-like RGB image: smooth colour gradients under fine grain.

    The grain keeps JPEG files as large as a camera's (about 0.4 byte per pixel at quality
    90), so decoding costs what it costs on real photos.
    """
    grain = Image.effect_noise((500, 500), 32).convert("RGB")
    noise = Image.new("RGB", (width, height))
    for y in range(0, height, 500):
        for x in range(0, width, 500):
            noise.paste(grain, (x, y))
    gradient = Image.merge(
        "RGB",
        [
            Image.radial_gradient("L"),
            Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90),
            Image.linear_gradient("L"),
        ],
    ).resize((width, height), Image.Resampling.BILINEAR)
    return ImageChops.add(gradient, noise, scale=2.0, offset=-40)


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


EXAMPLE_IMAGE = _example_image()  # the image of the services' example requests


def photo_jpeg(width: int, height: int, quality: int = 90, **options: Any) -> bytes:
    """:func:`photo` as JPEG bytes (``exif=...``, ``progressive=True`` and so on pass on)."""
    return encode(photo(width, height), "JPEG", quality=quality, **options)


# Hostile inputs -----------------------------------------------------------------------------


def jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking JPEG whose frame header claims ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG", quality=50))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb(side: int = 13_000) -> bytes:
    """A valid 1-bit PNG of ``side`` x ``side`` white pixels: tens of KB, side² bytes decoded."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(body, zlib.crc32(kind))
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def gif_frames(count: int, side: int = 4) -> bytes:
    """A valid animated GIF with ``count`` tiny frames."""
    first = encode(Image.new("P", (side, side), 0), "GIF")
    # one frame: graphic control extension + image descriptor + LZW data, cut from a GIF
    start = first.index(b"\x21\xf9") if b"\x21\xf9" in first else first.index(b"\x2c")
    frame = first[start:-1]
    return first[:start] + frame * count + b"\x3b"


def gif_frame_outside_canvas(frame_side: int = 60_000) -> bytes:
    """A GIF whose 4 x 4 canvas holds a first frame claiming ``frame_side`` pixels a side."""
    data = bytearray(encode(Image.new("P", (4, 4), 0), "GIF"))
    descriptor = data.index(b"\x2c")
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", frame_side, frame_side)
    return bytes(data)


def jpeg_with_scan_markers(count: int) -> bytes:
    """A small progressive JPEG whose comment holds ``count`` start-of-scan markers."""
    jpeg = encode(Image.new("RGB", (32, 32), (10, 200, 90)), "JPEG", progressive=True)
    comment = b"\xff\xda" * count
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return jpeg[:2] + segment + jpeg[2:]


def hostile_inputs() -> dict[str, bytes]:
    """Every hostile image the renderers must refuse, by name (none over ~200 KB)."""
    good_jpeg = encode(photo(64, 48), "JPEG")
    good_png = encode(photo(64, 48), "PNG")
    return {
        "jpeg header claiming 64250x64250": jpeg_claiming(64_250, 64_250),
        "jpeg header claiming 16000x16000": jpeg_claiming(16_000, 16_000),
        "png 13000x13000": png_bomb(13_000),
        "gif with 5000 frames": gif_frames(5000),
        "gif frame larger than its canvas": gif_frame_outside_canvas(),
        "progressive jpeg with 300 scans": jpeg_with_scan_markers(300),
        "jpeg without scan data": _up_to_pixels(good_jpeg, b"\xff\xda"),
        "png without pixel data": _up_to_pixels(good_png, b"IDAT"),
        "truncated webp": encode(photo(64, 48), "WEBP")[:200],
        "jpeg magic, png body": b"\xff\xd8\xff" + good_png[8:],
        "png magic, jpeg body": b"\x89PNG\r\n\x1a\n" + good_jpeg[3:],
        "webp magic, junk": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 64,
        "gif magic, junk": b"GIF89a" + b"\xff" * 32,
        "postscript": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "tiff": encode(Image.new("RGB", (8, 8)), "TIFF"),
        "bmp": encode(Image.new("RGB", (8, 8)), "BMP"),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>',
        "one byte": b"\xff",
    }


def _up_to_pixels(data: bytes, marker: bytes) -> bytes:
    """``data`` cut where its first pixel data would begin: the header, nothing to decode."""
    at = data.index(marker)
    if marker == b"IDAT":
        return data[: at + 4]
    return data[: at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")]


def damaged_inputs() -> dict[str, bytes]:
    """Damaged images that decode in part: rendered as far as they go, with a warning
    (thumbor and imgproxy render them too), or refused with ``render_damaged`` off."""
    good_jpeg = encode(photo(64, 48), "JPEG")
    progressive = encode(photo(64, 48), "JPEG", progressive=True)
    good_png = encode(photo(64, 48), "PNG")
    good_gif = encode(photo(64, 48).convert("P"), "GIF")
    broken_png = bytearray(good_png)
    middle = len(good_png) // 2
    broken_png[middle : middle + 40] = bytes(40)  # the IDAT's zlib stream, mid-way
    return {
        "truncated jpeg": good_jpeg[: len(good_jpeg) // 2],
        "truncated progressive jpeg": progressive[: len(progressive) // 2],
        "truncated png": good_png[: len(good_png) // 2],
        "png with a broken zlib stream": bytes(broken_png),
        "truncated gif": good_gif[: len(good_gif) * 2 // 3],
    }
