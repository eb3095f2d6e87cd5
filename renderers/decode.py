"""Opening images from requests without trusting them.

Everything a user uploads passes :func:`open_image`, which refuses, before any pixel is
decoded: byte strings over ``max_input_bytes``; anything that is not JPEG, PNG, WebP or GIF by
its magic bytes (so no other Pillow plugin ever parses request bytes); headers claiming more
than ``max_side`` per side or ``max_pixels`` in all; more than ``max_frames`` frames; JPEGs
with more than ``max_jpeg_scans`` scans. Pillow's own bomb check stands behind that (see
:mod:`renderers.settings`). JPEGs can be decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``),
which is what makes thumbnails cheap.

A truncated or damaged file whose decoding fails is decoded again, leniently, as thumbor
(Pillow's ``LOAD_TRUNCATED_IMAGES``) and imgproxy (libvips' loaders, which fail only on
errors they cannot get past) render it: what decodes is kept, and the rest stays as the
decoder leaves it (a JPEG's missing blocks mid-grey, a PNG's missing rows zero: black, or
transparent). :attr:`Decoded.damage` then says what was wrong, for the reply's warning.
``render_damaged`` false refuses such files instead. A file with no image data after its
header (nothing to decode), or one that fails even leniently, is a bad request naming what
is wrong, never a worker error.

The decoded image comes back in one of the working modes L, LA, RGB or RGBA, with its EXIF
orientation read (not yet applied: a thumbnail is cheaper to turn after shrinking).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol, TypeVar

from PIL import Image, ImageFile

from mdp.errors import BadRequest
from renderers.containers import gif_frame_count, has_pixel_data
from renderers.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "GIF": "GIF"}
ORIENTATION_TAG = 0x0112
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# EXIF orientation -> the transpose that makes the image upright
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class Blob(Protocol):
    """An image's bytes, in memory or in a file that is read where it lies (a ``local:///``
    source: the page cache holds it already, so the worker never keeps a copy)."""

    @property
    def size(self) -> int: ...

    def head(self, count: int) -> bytes:
        """The first ``count`` bytes (fewer if it is shorter)."""
        ...

    def stream(self) -> IO[bytes]:
        """A file object at its first byte, for Pillow. Only one is in use at a time: a new
        one starts over (the caller does not close it; the blob's owner does)."""
        ...

    def read(self) -> bytes:
        """Every byte, for the few checks that need them all (a GIF's frames, a
        progressive JPEG's scans)."""
        ...


@dataclass(frozen=True)
class InMemory:
    """A :class:`Blob` of bytes in memory."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def head(self, count: int) -> bytes:
        return self.data[:count]

    def stream(self) -> IO[bytes]:
        return io.BytesIO(self.data)  # shares the bytes until written to: no copy

    def read(self) -> bytes:
        return self.data


def as_blob(data: bytes | Blob) -> Blob:
    """``data`` as a :class:`Blob` (bytes are wrapped, blobs pass)."""
    return InMemory(data) if isinstance(data, bytes | bytearray) else data


@dataclass
class Decoded:
    """A decoded image and what the encoder may need to carry over from the source."""

    image: Image.Image
    format: str
    orientation: int = 1
    icc_profile: bytes | None = None
    icc_mode: str | None = None  # "L" or "RGB": the colour space the profile describes
    exif: Image.Exif | None = None
    source_size: tuple[int, int] = (0, 0)  # as stored, before any draft reduction
    frames: int = 1  # more than 1: an animation
    damage: str | None = None  # what made a strict decode fail: the image is partial

    @property
    def upright_source_size(self) -> tuple[int, int]:
        """The source's full size once turned upright."""
        width, height = self.source_size
        return (height, width) if self.swaps_axes else (width, height)

    @property
    def swaps_axes(self) -> bool:
        """Whether making the image upright swaps its width and height."""
        return self.orientation in (5, 6, 7, 8)

    def upright(self) -> None:
        """Apply the EXIF orientation to the pixels (once)."""
        method = ORIENTATION_TRANSPOSE.get(self.orientation)
        if method is not None:
            self.image = self.image.transpose(method)
        self.orientation = 1


def sniff(data: bytes) -> str | None:
    """The format the magic bytes announce, among those accepted."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _limits_text(limits: Settings) -> str:
    return f"the limit is {limits.max_side} px per side and {limits.max_pixels / 1e6:g} MP"


def _guarded(field: str, limits: Settings, action: str, call: Callable[[], T]) -> T:
    """Run a Pillow call on untrusted data, turning its failures into bad requests."""
    try:
        return call()
    except (MemoryError, BadRequest):
        raise
    except Exception as exc:  # Pillow's plugins raise many types on malformed input
        raise _refusal(field, limits, action, exc) from exc


def _refusal(field: str, limits: Settings, action: str, exc: Exception) -> BadRequest:
    """The bad request that Pillow's ``exc`` (raised while ``action``) makes of ``field``."""
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        claimed = _BOMB_PIXELS.search(str(exc))
        size = f"{int(claimed.group(1)) / 1e6:.1f} MP" if claimed else "too large"
        return BadRequest(f"{field}: image is {size}; {_limits_text(limits)}", field)
    if isinstance(exc, Image.UnidentifiedImageError):
        return BadRequest(
            f"{field}: not a valid image of the format its first bytes announce", field
        )
    log.info("refused %s: %s while %s: %s", field, type(exc).__name__, action, exc)
    reason = str(exc) or type(exc).__name__
    return BadRequest(f"{field}: damaged image ({action}: {reason:.200})", field)


def _check_size(field: str, size: tuple[int, int], limits: Settings) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise BadRequest(f"{field}: image has no pixels ({width}x{height})", field)
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise BadRequest(
            f"{field}: image is {width}x{height} ({width * height / 1e6:.1f} MP); "
            f"{_limits_text(limits)}",
            field,
        )


def _check_frames(field: str, blob: Blob, image: Image.Image, limits: Settings) -> int:
    """The image's frame count; refused above ``max_frames``."""
    if image.format == "GIF":
        count = max(1, gif_frame_count(blob.read(), limits.max_frames))
        frames = f"more than {limits.max_frames}"
    else:
        found = getattr(image, "n_frames", 1)
        count = found if isinstance(found, int) else 1
        frames = str(count)
    if count > limits.max_frames:
        raise BadRequest(
            f"{field}: image has {frames} frames; the limit is {limits.max_frames}", field
        )
    return count


def _check_scans(field: str, blob: Blob, limits: Settings) -> None:
    """Refuse a progressive JPEG with too many scans: each one costs a pass over the image.

    Start-of-scan markers cannot occur inside entropy-coded data (0xFF is stuffed there), so
    counting them bounds the scans from above. Only progressive files are counted; a
    baseline file's scans each carry their own components and cost no extra passes.
    """
    scans = blob.read().count(b"\xff\xda")
    if scans > limits.max_jpeg_scans:
        raise BadRequest(
            f"{field}: progressive JPEG has {scans} scans; the limit is {limits.max_jpeg_scans}",
            field,
        )


def _orientation(image: Image.Image) -> tuple[int, Image.Exif | None]:
    exif = image.getexif()
    value = exif.get(ORIENTATION_TAG, 1)
    return (value if value in ORIENTATION_TRANSPOSE else 1), (exif if len(exif) else None)


def open_image(
    data: bytes | Blob,
    field: str,
    limits: Settings,
    draft_size: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
    upright: bool = True,
) -> Decoded:
    """Check and decode ``data`` (the request field ``field``): bytes, or a :class:`Blob`
    such as a local file, which is then read in pieces as the decoder needs them.

    ``draft_size(upright_size)``, when given, returns the smallest upright size the caller
    needs; a JPEG is then decoded at the largest power-of-two reduction that still covers it.
    With ``upright`` false the caller will not apply the EXIF orientation, and sizes are
    as stored.
    """
    blob = as_blob(data)
    if blob.size > limits.max_input_bytes:
        raise BadRequest(
            f"{field}: {blob.size} bytes is over the limit of {limits.max_input_bytes}", field
        )
    head = blob.head(12)
    kind = sniff(head)
    if kind is None:
        raise BadRequest(
            f"{field}: not a JPEG, PNG, WebP or GIF image (starts with {head[:8]!r})", field
        )
    image: Image.Image = _guarded(
        field, limits, "reading the header", lambda: Image.open(blob.stream(), formats=[kind])
    )
    _check_size(field, image.size, limits)
    frames = _check_frames(field, blob, image, limits)
    if kind == "JPEG" and image.info.get("progressive"):
        _check_scans(field, blob, limits)
    damage = None
    if kind != "JPEG":  # a PNG's EXIF may follow its pixels; others have no draft anyway
        image, damage = _load(field, limits, blob, kind, image)
    orientation, exif = _guarded(field, limits, "reading EXIF", lambda: _orientation(image))
    source_size = image.size
    swaps = upright and orientation in (5, 6, 7, 8)
    if kind == "JPEG":
        draft = None
        if draft_size is not None:
            width, height = draft_size((source_size[1], source_size[0]) if swaps else source_size)
            mode = image.mode if image.mode in ("L", "RGB") else None
            draft = (mode, (height, width) if swaps else (width, height))
        image, damage = _load(field, limits, blob, kind, image, draft)
    _check_size(field, image.size, limits)
    icc = image.info.get("icc_profile") or None
    source_mode = image.mode
    working = _guarded(field, limits, "converting", lambda: working_mode(image))
    icc_mode = None
    if icc is not None and source_mode not in ("CMYK", "YCbCr", "LAB", "HSV"):
        icc_mode = "L" if working.mode in ("L", "LA") else "RGB"
    else:
        icc = None
    return Decoded(
        working, FORMATS[kind], orientation, icc, icc_mode, exif, source_size, frames, damage
    )


Draft = tuple[str | None, tuple[int, int]]  # Image.draft's mode and requested size
_LENIENT = threading.Lock()


@contextmanager
def lenient() -> Iterator[None]:
    """Pillow's ``LOAD_TRUNCATED_IMAGES`` for the decodes inside. The flag is the process's:
    the lock keeps lenient decodes from overlapping; a decode in another thread meanwhile
    is lenient too (a DIPS worker renders one request at a time; docs/RENDERERS.md)."""
    with _LENIENT:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False


def _load(
    field: str,
    limits: Settings,
    blob: Blob,
    kind: str,
    image: Image.Image,
    draft: Draft | None = None,
) -> tuple[Image.Image, str | None]:
    """Decode ``image`` (after its ``draft``): strictly, else leniently when the settings
    allow; the image decoded, and what was damaged (None: nothing)."""
    if draft is not None:
        _guarded(field, limits, "setting up the decoder", lambda: image.draft(*draft))
    try:
        image.load()
        return image, None
    except MemoryError:
        raise
    except Exception as exc:  # as in _guarded: Pillow's plugins raise many types
        bomb = isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning)
        if bomb or not limits.render_damaged or kind == "WEBP":
            # (libwebp decodes all or nothing: leniency would get nothing more)
            raise _refusal(field, limits, "decoding", exc) from exc
        reason = f"{str(exc) or type(exc).__name__:.200}"
        if not has_pixel_data(kind, blob.read()):
            raise BadRequest(
                f"{field}: damaged image: no image data after its header ({reason})", field
            ) from exc
    image.close()  # its pixels go before the second decode allocates its own
    again = _guarded(
        field, limits, "reading the header", lambda: Image.open(blob.stream(), formats=[kind])
    )
    if draft is not None:
        _guarded(field, limits, "setting up the decoder", lambda: again.draft(*draft))
    with lenient():
        _guarded(field, limits, "decoding", again.load)
    log.info("rendering a damaged %s %s as far as it decodes: %s", kind, field, reason)
    return again, reason


def animation(
    data: bytes | Blob, field: str, limits: Settings, keep: int, source: Decoded | None = None
) -> Iterator[tuple[Image.Image, int]]:
    """The first ``keep`` frames of an animation already checked by :func:`open_image`
    (``source``), each in a working mode, with its duration in ms. A damaged one is decoded
    leniently when its first frame was; with ``render_damaged``, a later frame that fails
    ends it there, and ``source.damage`` says so."""
    stream = as_blob(data).stream()
    image = _guarded(field, limits, "reading the header", lambda: Image.open(stream))
    damaged = source is not None and source.damage is not None
    for index in range(keep):
        try:
            _guarded(field, limits, "seeking", lambda i=index: image.seek(i))  # type: ignore[misc]
            if damaged:
                with lenient():
                    _guarded(field, limits, "decoding", image.load)
            else:
                _guarded(field, limits, "decoding", image.load)
        except BadRequest as exc:
            if index == 0 or source is None or not limits.render_damaged:
                raise
            reason = f"frame {index + 1} of {keep}: {exc.__cause__ or exc.message}"
            log.info("ending a damaged animation %s at its last frame that decodes: %s",
                     field, reason)
            source.damage = source.damage or f"{reason:.200}"
            return
        duration = image.info.get("duration", 100)
        frame = _guarded(field, limits, "converting", lambda: working_mode(image.copy()))
        yield frame, int(duration) if isinstance(duration, int | float) else 100


def pixels(image: Image.Image) -> list[Any]:
    """The pixel values of ``image``, row-major (``get_flattened_data`` from Pillow 12.1)."""
    flat = getattr(image, "get_flattened_data", None)
    return list(flat() if flat is not None else image.getdata())


def loop_count(data: bytes | Blob) -> int:
    """How often an animation loops (0: forever), read from its header."""
    with Image.open(as_blob(data).stream()) as image:
        loop = image.info.get("loop", 0)
    return int(loop) if isinstance(loop, int) else 0


def working_mode(image: Image.Image) -> Image.Image:
    """The image in L, LA, RGB or RGBA (palette transparency becomes alpha)."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode.startswith("I"):  # 16- or 32-bit grey: keep the top 8 bits of 16-bit values
        wide = image.convert("I")
        high = wide.getextrema()[1]
        scale = 1 / 256 if isinstance(high, int) and high > 255 else 1.0
        return wide.point(lambda value: value * scale).convert("L")
    if mode in ("F", "1"):
        return image.convert("L")
    if mode in ("La", "RGBa"):
        return image.convert(mode.upper())
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def exif_bytes(exif: Image.Exif | None, orientation: int = 1) -> bytes | None:
    """The source's EXIF with the orientation the written pixels need: 1 when they were
    turned upright (the default), the source's own when they were left as stored."""
    if exif is None:
        return None
    exif[ORIENTATION_TAG] = orientation
    try:
        return exif.tobytes()
    except (ValueError, struct.error, TypeError) as exc:
        log.info("dropping EXIF that cannot be written back: %s", exc)
        return None
