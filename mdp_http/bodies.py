"""Request bodies read once, into the frame that goes to the brokers (no re-packing).

An image POSTed to an image URL becomes the last value of the msgpack request map: the map's
other entries and the ``image`` key's bin header are packed first, and the body's bytes are
read straight after them into one buffer of the final size (one copy, hashed as they
arrive). :class:`Budget` bounds the bytes of all bodies held at once, so the door's memory
is bounded by the images in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mdp.body import pack
from mdp.errors import BadRequest
from mdp_http.errors import BodyTimeout, Busy, TooLarge

MAX_SMALL_MAP = 15  # a msgpack fixmap holds up to 15 entries


class Budget:
    """Bytes of request bodies held at once; a body that does not fit is refused (429)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self.peak = 0

    def take(self, nbytes: int) -> None:
        if self.held + nbytes > self.max_bytes and self.held > 0:
            raise Busy(f"the gateway already holds {self.held} bytes of request bodies "
                       f"(--max-inflight-bytes {self.max_bytes}); try again shortly")
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def give(self, nbytes: int) -> None:
        self.held = max(0, self.held - nbytes)


def map_prefix(fields: Mapping[str, Any], last_key: str, last_len: int) -> bytes:
    """The msgpack of a map holding ``fields`` and then ``last_key`` with a bin value of
    ``last_len`` bytes, up to where that value's bytes begin."""
    if len(fields) + 1 > MAX_SMALL_MAP:
        raise ValueError("too many fields for a fixmap prefix")
    packed = pack(dict(fields))  # a fixmap: one header byte, then the entries
    header = bytes([0x80 | (len(fields) + 1)])
    return header + packed[1:] + pack(last_key) + _bin_header(last_len)


def _bin_header(length: int) -> bytes:
    if length < 256:
        return b"\xc4" + struct.pack(">B", length)
    if length < 65536:
        return b"\xc5" + struct.pack(">H", length)
    return b"\xc6" + struct.pack(">I", length)


@dataclass
class Frame:
    """A request frame assembled from a body, the body's SHA-256, and what it holds of the
    budget (give it back with :meth:`release`)."""

    data: bytearray | bytes
    sha256: bytes
    held: int
    budget: Budget

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0
        self.data = b""


async def read_into_frame(request: web.Request, fields: Mapping[str, Any], key: str,
                          *, max_bytes: int, timeout_s: float, budget: Budget) -> Frame:
    """Read the body as the bin value ``key`` after ``fields``; 413/408/429 as they apply."""
    length = request.content_length
    if length is None:
        raise BadRequest("an image POST needs a Content-Length", field="body")
    if length > max_bytes:
        raise TooLarge(f"the body is {length} bytes; the limit is {max_bytes}")
    if length == 0:
        raise BadRequest("the body is empty; POST the image's bytes", field="body")
    prefix = map_prefix(fields, key, length)
    budget.take(length)
    frame = Frame(bytearray(len(prefix) + length), b"", length, budget)
    try:
        frame.sha256 = await asyncio.wait_for(_fill(request, frame.data, prefix, length),
                                              timeout_s)
    except TimeoutError as exc:
        frame.release()
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from exc
    except BaseException:
        frame.release()
        raise
    return frame


async def _fill(request: web.Request, buffer: bytearray | bytes, prefix: bytes,
                length: int) -> bytes:
    assert isinstance(buffer, bytearray)  # noqa: S101 - ours, not peer input
    buffer[:len(prefix)] = prefix
    view = memoryview(buffer)
    digest = hashlib.sha256()
    at = len(prefix)
    end = at + length
    async for chunk in request.content.iter_any():
        if at + len(chunk) > end:
            raise TooLarge(f"the body is longer than its Content-Length of {length}")
        view[at:at + len(chunk)] = chunk
        digest.update(chunk)
        at += len(chunk)
    if at != end:
        raise BadRequest(f"the body ended after {at - len(prefix)} of {length} bytes",
                         field="body")
    return digest.digest()
