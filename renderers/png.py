"""A small, fast PNG writer for palette images.

Pillow's PNG encoder filters every row adaptively, which suits photographs. For a palette
image of flat colours and text, filter type 0 (none) on 4-bit packed rows compresses just as
well at a third of the cost, which is the recommendation of the PNG specification for
palette images. This writer emits exactly: signature, IHDR, PLTE, tRNS (when some entry is not
opaque), one IDAT and IEND. Same image, same bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE_PALETTE = 3


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bit_depth(colours: int) -> int:
    """The smallest PNG bit depth that indexes ``colours`` palette entries."""
    for depth in (1, 2, 4, 8):
        if colours <= 1 << depth:
            return depth
    raise ValueError(f"a PNG palette holds at most 256 colours, not {colours}")


def encode_palette_png(
    image: Image.Image,
    palette: Sequence[tuple[int, int, int]],
    alphas: Sequence[int] = (),
    level: int = 6,
) -> bytes:
    """Encode a mode ``P`` image whose indices all lie below ``len(palette)``.

    ``alphas`` gives the alpha of the first palette entries (the rest are opaque).
    """
    if image.mode != "P":
        raise ValueError(f"expected a palette image, got mode {image.mode}")
    width, height = image.size
    depth = bit_depth(len(palette))
    raw = image.tobytes("raw", f"P;{depth}" if depth < 8 else "P")
    stride = (width * depth + 7) // 8
    rows = b"".join(
        b"\x00" + raw[offset : offset + stride] for offset in range(0, stride * height, stride)
    )
    header = struct.pack(">IIBBBBB", width, height, depth, COLOUR_TYPE_PALETTE, 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    parts.append(_chunk(b"PLTE", b"".join(bytes(colour) for colour in palette)))
    if alphas:
        parts.append(_chunk(b"tRNS", bytes(alphas)))
    parts.append(_chunk(b"IDAT", zlib.compress(rows, level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
