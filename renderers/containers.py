"""Reading an image file's container structure without decoding a pixel: a GIF's frames
counted from its block headers, and whether any image data follows a file's header.

Each walk follows the format's own framing (JPEG markers and their lengths, PNG chunks, GIF
blocks and sub-blocks), so bytes inside metadata (a marker in EXIF) cannot fool it, and
stops where the structure goes wrong: these are bounds and hints for
:mod:`renderers.decode`, never a parser the decoder relies on.
"""

from __future__ import annotations


def gif_frames_exceed(data: bytes, limit: int) -> bool:
    """Whether a GIF has more than ``limit`` frames, reading block headers only."""
    return gif_frame_count(data, limit) > limit


def gif_frame_count(data: bytes, limit: int) -> int:
    """A GIF's frames, counted from block headers up to ``limit + 1`` (then it stops).

    A damaged structure stops the count (the decoder will complain about it later if it
    matters for the first frame).
    """
    if len(data) < 13:
        return 0
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x2C:  # image descriptor
            frames += 1
            if frames > limit:
                break
            if pos + 10 > len(data):
                break
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # + LZW code size
        elif block == 0x21:  # extension: introducer, label
            pos += 2
        else:
            break
        pos = _skip_sub_blocks(data, pos)
    return frames


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def has_pixel_data(kind: str, data: bytes) -> bool:
    """Whether any byte of image data follows the header: a JPEG's first scan header, a
    PNG's first IDAT chunk header, a GIF's first image descriptor (and its LZW code size).
    Walks the structure; a walk that goes wrong finds none."""
    start = {"JPEG": _jpeg_data_start, "PNG": _png_data_start, "GIF": _gif_data_start}
    find = start.get(kind)
    begin = find(data) if find is not None else None
    return begin is not None and begin < len(data)


def _jpeg_data_start(data: bytes) -> int | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows its header
            return end
        pos = end
    return None


def _png_data_start(data: bytes) -> int | None:
    pos = 8
    while pos + 8 <= len(data):
        if data[pos + 4 : pos + 8] == b"IDAT":
            return pos + 8
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return None


def _gif_data_start(data: bytes) -> int | None:
    if len(data) < 13:
        return None
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x2C and pos + 10 <= len(data):  # image descriptor
            local = data[pos + 9]
            return pos + 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        if block != 0x21:  # anything but an extension before the first image
            return None
        pos = _skip_sub_blocks(data, pos + 2)
    return None
