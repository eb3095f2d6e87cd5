"""Request bodies read once, into the frame that goes to the brokers (no re-packing).

An image POSTed to an image URL becomes the last value of the msgpack request map: the map's
other entries and the ``image`` key's bin header are packed first, and the body's bytes are
read straight after them into one buffer of the final size (one copy, hashed as they
arrive). :class:`Budget` bounds the bytes of all bodies held at once, so the door's memory
is bounded by the images in flight.

A body holds its share of the budget from its first byte, so a sender may not hold it for
long without sending: once :data:`PACE_GRACE_S` has passed, a body must keep up the pace
that brings its last byte within the body timeout (its Content-Length spread evenly over
the time after the grace). One that falls behind is answered 408 at once and its share
given back, rather than at the timeout; a slow sender that declared a large body holds the
door's memory only while it sends as fast as its size needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mdp.body import pack
from mdp.errors import BadRequest
from mdp_http.errors import BodyTimeout, Busy, TooLarge

MAX_SMALL_MAP = 15  # a msgpack fixmap holds up to 15 entries
PACE_GRACE_S = 2.0  # how long a body may take to start (or stall) before its pace counts


async def paced_chunks(request: web.Request, length: int,
                       timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; BodyTimeout once it falls behind the pace that
    ends it within ``timeout_s`` (see the module docstring), TooLarge past ``length``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    spread = max(timeout_s - PACE_GRACE_S, 1e-3)
    got = 0
    while got < length:
        due = start + PACE_GRACE_S + spread * got / length  # when more than ``got`` is owed
        wait = min(due, start + timeout_s) - loop.time()
        try:  # (bytes already buffered are taken even past the time: no suspension)
            async with asyncio.timeout(max(wait, 0.0)):
                chunk = await request.content.readany()
        except TimeoutError:
            if _received(request) > got and loop.time() < start + timeout_s:
                continue  # they came meanwhile: a busy loop saw them late, not the sender
            raise BodyTimeout(
                f"the body came too slowly: {got} of {length} bytes after "
                f"{loop.time() - start:.1f} s, at a pace that would not end within "
                f"{timeout_s:g} s") from None
        if not chunk:
            break  # the sender ended the body (short: the caller says so)
        got += len(chunk)
        if got > length:
            raise TooLarge(f"the body is longer than its Content-Length of {length}")
        yield chunk


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


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """A whole body: at its pace when its length is declared (``paced_chunks``), else
    within ``timeout_s`` (aiohttp bounds its size by the app's client_max_size)."""
    length = request.content_length
    if not length:
        try:
            async with asyncio.timeout(timeout_s):
                return await request.read()
        except TimeoutError:
            raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    parts = [chunk async for chunk in paced_chunks(request, length, timeout_s)]
    body = b"".join(parts)
    if len(body) != length:
        raise BadRequest(f"the body ended after {len(body)} of {length} bytes", field="body")
    return body


def _received(request: web.Request) -> int:
    """Bytes of the body the connection has taken so far (0 if aiohttp does not say)."""
    total = getattr(request.content, "total_bytes", 0)
    return total if isinstance(total, int) else 0


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
        frame.sha256 = await _fill(request, frame.data, prefix, length, timeout_s)
    except BaseException:
        frame.release()
        raise
    return frame


async def _fill(request: web.Request, buffer: bytearray | bytes, prefix: bytes,
                length: int, timeout_s: float) -> bytes:
    assert isinstance(buffer, bytearray)  # noqa: S101 - ours, not peer input
    buffer[:len(prefix)] = prefix
    view = memoryview(buffer)
    digest = hashlib.sha256()
    at = len(prefix)
    end = at + length
    async for chunk in paced_chunks(request, length, timeout_s):
        view[at:at + len(chunk)] = chunk
        digest.update(chunk)
        at += len(chunk)
    if at != end:
        raise BadRequest(f"the body ended after {at - len(prefix)} of {length} bytes",
                         field="body")
    return digest.digest()
