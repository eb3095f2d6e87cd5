"""Gearman's wire, sans I/O: binary packets and admin text lines in, packets and lines out.

A binary packet is a 12-byte header (``\\0REQ`` or ``\\0RES``, big-endian type and size)
followed by ``size`` bytes of NUL-separated arguments; the last argument takes the rest and
may hold NULs. A connection may also send text lines (the admin protocol): any byte other
than NUL where a header would start begins a line, ended by LF (CR LF accepted).

:class:`Decoder` never touches a socket: the caller feeds it bytes and asks for events. It
refuses, with :class:`WireError`, anything it cannot frame (bad magic, a declared size past
the limit, an over-long line); the caller then answers ERROR and closes, because the stream
cannot be resynchronised. A well-framed packet with the wrong number of arguments is a
:class:`BadPacket` event instead, and the connection goes on.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from mdp.errors import ProtocolError

REQ = b"\0REQ"
RES = b"\0RES"
HEADER = struct.Struct(">4sII")
HEADER_BYTES = HEADER.size  # 12
DEFAULT_MAX_PACKET_BYTES = 32 * 1024 * 1024  # the DIPS request limit
DEFAULT_MAX_LINE_BYTES = 4096


class T(enum.IntEnum):
    """Packet types (gearman.org PROTOCOL)."""

    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34
    SUBMIT_JOB_SCHED = 35
    SUBMIT_JOB_EPOCH = 36
    SUBMIT_REDUCE_JOB = 37
    SUBMIT_REDUCE_JOB_BACKGROUND = 38
    GRAB_JOB_ALL = 39
    JOB_ASSIGN_ALL = 40
    GET_STATUS_UNIQUE = 41
    STATUS_RES_UNIQUE = 42


# How many arguments each request carries (the last one may hold NULs; 0: none, any body
# is ignored). Clients and workers may send any of them on the same connection.
ARGUMENTS: dict[int, int] = {
    T.SUBMIT_JOB: 3, T.SUBMIT_JOB_BG: 3, T.SUBMIT_JOB_HIGH: 3, T.SUBMIT_JOB_HIGH_BG: 3,
    T.SUBMIT_JOB_LOW: 3, T.SUBMIT_JOB_LOW_BG: 3, T.SUBMIT_JOB_EPOCH: 4,
    T.SUBMIT_JOB_SCHED: 8, T.SUBMIT_REDUCE_JOB: 4, T.SUBMIT_REDUCE_JOB_BACKGROUND: 4,
    T.GET_STATUS: 1, T.GET_STATUS_UNIQUE: 1, T.ECHO_REQ: 1, T.OPTION_REQ: 1,
    T.SET_CLIENT_ID: 1,
    # the worker side
    T.CAN_DO: 1, T.CAN_DO_TIMEOUT: 2, T.CANT_DO: 1, T.RESET_ABILITIES: 0, T.PRE_SLEEP: 0,
    T.GRAB_JOB: 0, T.GRAB_JOB_UNIQ: 0, T.GRAB_JOB_ALL: 0, T.ALL_YOURS: 0,
    T.WORK_STATUS: 3, T.WORK_DATA: 2, T.WORK_WARNING: 2, T.WORK_COMPLETE: 2,
    T.WORK_EXCEPTION: 2, T.WORK_FAIL: 1,
}

# Requests only a worker sends: the door plays the job server for them (mdp_gearman.workers).
WORKER_REQUESTS = frozenset({
    T.CAN_DO, T.CANT_DO, T.RESET_ABILITIES, T.PRE_SLEEP, T.GRAB_JOB, T.GRAB_JOB_UNIQ,
    T.GRAB_JOB_ALL, T.WORK_STATUS, T.WORK_COMPLETE, T.WORK_FAIL, T.WORK_EXCEPTION,
    T.WORK_DATA, T.WORK_WARNING, T.CAN_DO_TIMEOUT, T.ALL_YOURS,
})


class WireError(ProtocolError):
    """The byte stream cannot be framed any further; the connection must be closed."""


@dataclass(frozen=True, slots=True)
class Packet:
    """A well-framed request: its type and arguments."""

    type: int
    args: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BadPacket:
    """A framed request that cannot be used (unknown type, wrong argument count, ...)."""

    type: int
    reason: str


@dataclass(frozen=True, slots=True)
class InProgress:
    """A packet whose header has come in and whose body has not, yet."""

    offset: int  # where it starts in the connection's stream (one packet, one offset)
    type: int
    size: int  # its body's declared bytes
    received: int  # of them


@dataclass(frozen=True, slots=True)
class AdminLine:
    """One line of the admin text protocol, without its line end."""

    text: str


Event = Packet | BadPacket | AdminLine


def type_name(packet_type: int) -> str:
    try:
        return T(packet_type).name
    except ValueError:
        return f"type {packet_type}"


class Decoder:
    """Frames one connection's inbound bytes into events."""

    def __init__(self, max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_packet_bytes = max_packet_bytes
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._start = 0
        self._dropped = 0  # bytes of the stream compacted out of the buffer
        self._need = HEADER_BYTES  # bytes the next event needs before it can be parsed

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        """Forget what is buffered (the connection is gone)."""
        self._dropped += len(self._buffer)
        self._buffer = bytearray()
        self._start = 0

    def empty(self) -> bool:
        """Nothing is buffered (every byte fed so far was an event already)."""
        return self._start >= len(self._buffer)

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def in_progress(self) -> InProgress | None:
        """The packet under way when :meth:`next_event` has said None: its header is in,
        and its body is not whole yet (None: nothing is, or only part of a header or a
        line, which are small)."""
        available = len(self._buffer) - self._start
        if available < HEADER_BYTES or self._buffer[self._start] != 0:
            return None
        _, packet_type, size = HEADER.unpack_from(self._buffer, self._start)
        received = available - HEADER_BYTES
        if received >= size:
            return None
        return InProgress(self._dropped + self._start, packet_type, size, received)

    def next_event(self) -> Event | None:
        """The next complete event, or None until more bytes arrive; WireError if hopeless."""
        available = len(self._buffer) - self._start
        if available == 0:
            self._compact()
            return None
        if self._buffer[self._start] != 0:
            return self._line()
        if available < HEADER_BYTES:
            if not REQ.startswith(bytes(self._buffer[self._start:self._start + 4])):
                raise WireError("bad magic: a request starts with \\0REQ")
            return None
        magic, packet_type, size = HEADER.unpack_from(self._buffer, self._start)
        if magic != REQ:
            raise WireError(f"bad magic {magic!r}: a request starts with \\0REQ")
        if size > self.max_packet_bytes:
            raise WireError(f"{type_name(packet_type)} declares {size} bytes; "
                            f"the limit is {self.max_packet_bytes}")
        end = self._start + HEADER_BYTES + size
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[self._start + HEADER_BYTES:end])
        self._start = end
        self._compact()
        return parse_packet(packet_type, body)

    def _line(self) -> AdminLine | None:
        end = self._buffer.find(b"\n", self._start, self._start + self.max_line_bytes + 1)
        if end < 0:
            if len(self._buffer) - self._start > self.max_line_bytes:
                raise WireError(f"an admin line is longer than {self.max_line_bytes} bytes")
            return None
        raw = bytes(self._buffer[self._start:end]).rstrip(b"\r")
        self._start = end + 1
        self._compact()
        return AdminLine(raw.decode("utf-8", "replace"))

    def _compact(self) -> None:
        if self._start and (self._start >= len(self._buffer) or self._start > 65536):
            del self._buffer[:self._start]
            self._dropped += self._start
            self._start = 0


def parse_packet(packet_type: int, body: bytes) -> Packet | BadPacket:
    """Split a request body into its arguments, checking their count for the type."""
    count = ARGUMENTS.get(packet_type)
    if count is None:
        return BadPacket(packet_type, f"unknown or unsupported request {type_name(packet_type)}")
    if count == 0:
        return Packet(packet_type, ())
    if packet_type == T.WORK_FAIL:  # the handle alone; some senders end it with a NUL
        return Packet(packet_type, (body.split(b"\0", 1)[0],))
    args = tuple(body.split(b"\0", count - 1))
    if len(args) != count:
        return BadPacket(packet_type, f"{type_name(packet_type)} needs {count} NUL-separated "
                         f"arguments, got {len(args)}")
    return Packet(packet_type, args)


def build(packet_type: int, *args: bytes) -> bytes:
    """A response packet (``\\0RES``) with NUL-separated arguments."""
    body = b"\0".join(args)
    return HEADER.pack(RES, packet_type, len(body)) + body


# the two packets of every foreground job, built without the general path's steps
def job_created(handle: bytes) -> bytes:
    """JOB_CREATED for ``handle``: ``build(T.JOB_CREATED, handle)``."""
    return HEADER.pack(RES, T.JOB_CREATED, len(handle)) + handle


def work_complete(handle: bytes, result: bytes) -> bytes:
    """WORK_COMPLETE: ``build(T.WORK_COMPLETE, handle, result)``, the result (a whole
    card, say) copied once."""
    return b"".join((HEADER.pack(RES, T.WORK_COMPLETE, len(handle) + 1 + len(result)),
                     handle, b"\0", result))


def build_request(packet_type: int, *args: bytes) -> bytes:
    """A request packet (``\\0REQ``): for tests and tools that play the client."""
    body = b"\0".join(args)
    return HEADER.pack(REQ, packet_type, len(body)) + body


def error(code: str, text: str) -> bytes:
    """An ERROR packet: a short code and a sentence (a NUL in it, say from a peer's text
    quoted there, would split it into another argument: shown as \\0)."""
    return build(T.ERROR, code.encode(), text.replace("\0", "\\0").encode("utf-8", "replace"))
