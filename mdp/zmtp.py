"""ZMTP 3.x for one connection, DEALER to ROUTER or ROUTER to DEALER/REQ, without sockets
(RFC 23/ZMTP, 37/ZMTP 3.1).

:class:`ZmtpConnection` is the wire of a ZeroMQ connection with the NULL security mechanism,
as a state machine that never touches a socket (h11's ``Connection`` is the model): its
owner feeds it the bytes that arrived (:meth:`~ZmtpConnection.receive_data`, which returns
the whole multipart messages they completed), hands it messages to send
(:meth:`~ZmtpConnection.send_message`), and writes out what :meth:`~ZmtpConnection.data_to_send`
gives back. It does what libzmq's I/O thread does for a DEALER (the clients' and workers'
plain links) or a ROUTER's one connection (the broker's plain router,
:mod:`mdp.plainrouter`, with ``socket_type=b"ROUTER"`` and ``peer_types``
:data:`ROUTER_PEERS`), and no more:

* **Greeting**: signature ``0xFF``, 8 bytes of padding, ``0x7F``; version 3.1; mechanism
  ``NULL``; as-server 0; filler. The peer's is checked as it arrives, so a peer that is not
  ZMTP 3 (an HTTP server, say) is refused after its first bytes, not after 64.
* **Handshake** (NULL): our READY (``Socket-Type`` ours, empty ``Identity``) goes out with
  the greeting; the peer's READY must name a socket type we may talk to (ROUTER for a
  DEALER; DEALER or REQ for a ROUTER), else an ERROR command naming why is queued for the
  peer (its owner writes it before it closes the socket, as libzmq does); an ERROR command
  in place of READY ends the connection with the peer's reason. The peer's properties
  (its ``Identity``, which a ROUTER takes for the routing id) are in ``peer_properties``.
  Messages sent before the handshake is done wait for it.
* **Traffic**: frames (short and long sizes; MORE; COMMAND); a PING is answered with a PONG
  carrying its context (brokers set ZMTP heartbeats; libzmq sends a PING when its timer
  fires, between two frames of a multipart message too); :meth:`~ZmtpConnection.ping`
  queues our own PING (the owner keeps the timers, and reads any bytes as a sign of life);
  an ERROR ends the connection.
* **Big frames** (``keep_big_from``, the broker's router): a frame of ``DIRECT_BYTES`` or
  more, from that frame of a message on, is received into its own buffer, which the owner
  may fill straight from the socket (:meth:`~ZmtpConnection.big_target`,
  :meth:`~ZmtpConnection.big_received`); it is an anonymous mapping whose pages are
  committed only as the bytes come, so a peer that announces a big frame and sends a few
  bytes costs no more than those. It comes out as a read-only ``memoryview`` of it
  (as a pyzmq socket's big frame comes out as a ``zmq.Frame``): a body of tens of MB is
  copied once, by the kernel.
* **Limits**: a frame larger than ``max_frame_bytes`` (the client's ``max_reply_bytes``, the
  worker's ``max_message_bytes``, as ``zmq.MAXMSGSIZE`` does for a pyzmq socket), a message
  of more than ``max_frames`` frames, or a command larger than :data:`MAX_COMMAND_BYTES` is
  refused as soon as its size is read.

Anything malformed raises :class:`~mdp.errors.ProtocolError` naming what was wrong; the
connection is then dead (every later call raises again) and its owner closes the socket.
The whole messages the same bytes completed before the fault are kept in
``messages_before_failure``, for an owner that delivers them first, as libzmq does.
"""

from __future__ import annotations

import enum
import mmap
from collections.abc import Sequence
from typing import Any

from mdp.errors import ProtocolError

GREETING_BYTES = 64
VERSION = (3, 1)
MECHANISM = b"NULL"
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
_RESERVED = 0xF8  # frame flag bits that must be zero
MAX_COMMAND_BYTES = 65536  # READY with its metadata, PING, ERROR: all far smaller
MAX_PING_CONTEXT = 16  # RFC 37: a PING's context is 0 to 16 octets
JOIN_BELOW = 65536  # a frame smaller than this is copied into one buffer with its neighbours
# a rest kept from the last receive shorter than this is joined with the next one into one
# bytes (a message cut by the receive); a longer one grows in place, so that a frame sent a
# few bytes at a time is not copied again with each piece
JOIN_REST_BELOW = 4096
DIRECT_BYTES = 262144  # a frame this big may be received into its own buffer (keep_big_from)

READY, ERROR, PING, PONG = b"READY", b"ERROR", b"PING", b"PONG"
ROUTER_PEERS = frozenset({b"DEALER", b"REQ"})  # the socket types a ROUTER talks to (RFC 28)


class Phase(enum.Enum):
    """Where a connection is: the peer's greeting, its READY, messages; or failed."""

    GREETING = "greeting"
    HANDSHAKE = "handshake"
    TRAFFIC = "traffic"
    FAILED = "failed"


def greeting(mechanism: bytes = MECHANISM, as_server: bool = False) -> bytes:
    """Our 64-byte greeting."""
    return (b"\xff" + bytes(8) + b"\x7f" + bytes(VERSION) + mechanism.ljust(20, b"\x00")
            + bytes([as_server]) + bytes(31))


def frame_header(flags: int, size: int) -> bytes:
    """A frame's flags and size, short form below 256 bytes."""
    if size < 256:
        return bytes((flags, size))
    return bytes((flags | LONG,)) + size.to_bytes(8, "big")


def command(name: bytes, data: bytes = b"") -> bytes:
    """A whole command frame."""
    body = bytes((len(name),)) + name + data
    return frame_header(COMMAND, len(body)) + body


def properties(props: dict[bytes, bytes]) -> bytes:
    """READY's metadata: name (1-byte size), value (4-byte size), for each property."""
    return b"".join(bytes((len(name),)) + name + len(value).to_bytes(4, "big") + value
                    for name, value in props.items())


_SHORT_MORE = tuple(bytes((MORE, n)) for n in range(256))  # short headers, made once
_SHORT_LAST = tuple(bytes((0, n)) for n in range(256))


def encode_message(frames: Sequence[Any], start: int = 0) -> list[Any]:
    """A multipart message (``frames[start:]``) as chunks to write in order: small frames
    are joined with the headers around them into one chunk; a frame of ``JOIN_BELOW``
    bytes or more is its own chunk, not copied (a big body goes out from the caller's
    memory)."""
    if start:
        frames = frames[start:]
    if not frames:
        return []
    parts: list[Any] = []
    add = parts.append
    try:  # (the common case: every frame short, one chunk; a long one ends the try)
        for frame in frames:
            add(_SHORT_MORE[len(frame)])
            add(frame)
    except IndexError:
        return _encode_long(frames)
    parts[-2] = _SHORT_LAST[len(frames[-1])]
    return [b"".join(parts)]


def _encode_long(frames: Sequence[Any]) -> list[Any]:
    """:func:`encode_message` for a message with a frame of 256 bytes or more."""
    chunks: list[Any] = []
    parts: list[Any] = []
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        size = len(frame)
        parts.append(frame_header(MORE if i < last else 0, size))
        if size < JOIN_BELOW:
            parts.append(frame)
        else:
            chunks.append(b"".join(parts))
            chunks.append(frame)
            parts = []
    if parts:
        chunks.append(b"".join(parts))
    return chunks


def parse_properties(data: bytes) -> dict[str, bytes]:
    """READY's metadata, names lower-cased (they are case-insensitive); ProtocolError for
    a truncated or malformed property or a name given twice."""
    props: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        name_size = data[pos]
        pos += 1
        if name_size == 0 or pos + name_size + 4 > end:
            raise ProtocolError("malformed READY metadata: a property name is empty or cut off")
        try:
            name = data[pos:pos + name_size].decode("ascii").lower()
        except UnicodeDecodeError:
            raise ProtocolError("malformed READY metadata: a property name is not ASCII") \
                from None
        pos += name_size
        value_size = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + value_size > end:
            raise ProtocolError(f"malformed READY metadata: property {name!r} is cut off")
        if name in props:
            raise ProtocolError(f"malformed READY metadata: property {name!r} given twice")
        props[name] = data[pos:pos + value_size]
        pos += value_size
    return props


class ZmtpConnection:
    """One ZMTP 3 connection of a ``socket_type`` socket (DEALER) to a ``peer_types`` peer
    (ROUTER), NULL mechanism. See the module docstring."""

    def __init__(self, max_frame_bytes: int, *, max_frames: int = 100_000,
                 socket_type: bytes = b"DEALER",
                 peer_types: frozenset[bytes] = frozenset({b"ROUTER"}),
                 limit_name: str = "max_reply_bytes", keep_big_from: int | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.keep_big_from = keep_big_from  # (see "Big frames" in the module docstring)
        self.limit_name = limit_name  # the setting behind max_frame_bytes, for errors
        self.max_frames = max_frames
        self.peer_types = peer_types
        self.phase = Phase.GREETING
        self.peer_version: tuple[int, int] | None = None
        self.peer_properties: dict[str, bytes] = {}
        self.failure: ProtocolError | None = None
        # the whole messages the bytes that failed completed before the fault (an owner
        # that wants them, as libzmq delivers them, reads them here after the ProtocolError)
        self.messages_before_failure: list[list[bytes]] = []
        ready = command(READY, properties({b"Socket-Type": socket_type, b"Identity": b""}))
        self._out: list[Any] = [greeting() + ready]
        self._later: list[Any] = []  # messages sent before the handshake was done
        self._in = bytearray()  # bytes received and not yet parsed
        self._frames: list[bytes] = []  # the message being received
        self._big: mmap.mmap | None = None  # a big frame being received into its own buffer
        self._big_have = 0  # bytes of it received
        self._big_more = False  # its MORE flag

    # --- what the owner reads --------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The handshake is done: messages flow both ways."""
        return self.phase is Phase.TRAFFIC

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def data_to_send(self) -> list[Any]:
        """The chunks to write, in order (bytes-like), and forget them."""
        out, self._out = self._out, []
        return out

    # --- sending ---------------------------------------------------------------------------

    def ping(self, ttl_ds: int = 0, context: bytes = b"") -> None:
        """Queue a PING (once the handshake is done: before it, nothing is): ``ttl_ds``, in
        tenths of a second, tells the peer to drop the connection if it hears nothing from
        us for that long (0: never, libzmq's default); the peer's PONG carries ``context``."""
        if self.phase is Phase.TRAFFIC:
            self._out.append(command(PING, min(ttl_ds, 0xFFFF).to_bytes(2, "big")
                                     + context[:MAX_PING_CONTEXT]))

    def send_message(self, frames: Sequence[Any], start: int = 0) -> None:
        """Queue the multipart message ``frames[start:]`` (it waits for the handshake, if
        that is not done)."""
        if self.phase is Phase.FAILED:
            raise self._dead()
        if len(frames) <= start:
            raise ValueError("a message has at least one frame")
        chunks = encode_message(frames, start)
        if self.phase is Phase.TRAFFIC:
            self._out += chunks
        else:
            self._later += chunks

    # --- receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[list[bytes]]:
        """Feed bytes that arrived; the whole messages they complete, in order. Raises
        ProtocolError for anything malformed (the connection is then dead; the messages
        completed before the fault are in ``messages_before_failure``)."""
        if self.phase is Phase.FAILED:
            raise self._dead()
        messages: list[list[bytes]] = []
        try:
            if self._big is None:
                if self._in or self.phase is not Phase.TRAFFIC:
                    self._receive(data, messages)
                else:  # (the common case: nothing kept, the handshake done)
                    pos = self._frames_from(data, 0, messages)
                    if pos < len(data):
                        self._keep(data, pos)
                return messages
            big, have = self._big, self._big_have
            used = min(len(big) - have, len(data))
            with memoryview(data) as view:
                big[have:have + used] = view[:used]
                messages += self._big_received(used)
                if used < len(data):
                    self._receive(bytes(view[used:]), messages)
            return messages
        except ProtocolError as exc:
            self._fail(exc, messages)
            raise

    def _fail(self, exc: ProtocolError, messages: list[list[bytes]]) -> None:
        self.phase = Phase.FAILED
        self.failure = exc
        self.messages_before_failure = messages

    def big_target(self) -> memoryview | None:
        """Where the rest of a big frame being received goes (receive into it, then call
        :meth:`big_received`); None when no big frame is being received."""
        if self._big is None:
            return None
        return memoryview(self._big)[self._big_have:]

    def big_received(self, size: int) -> list[list[bytes]]:
        """``size`` more bytes of the big frame were put into :meth:`big_target`; the
        message it completes, if it does."""
        if self.phase is Phase.FAILED:
            raise self._dead()
        try:
            return self._big_received(size)
        except ProtocolError as exc:
            self._fail(exc, [])
            raise

    def _big_received(self, size: int) -> list[list[bytes]]:
        big = self._big
        if big is None:
            return []
        self._big_have += size
        if self._big_have < len(big):
            return []
        self._big = None
        frame: Any = memoryview(big).toreadonly()  # (bytes-like, as a zmq.Frame is)
        return self._add_frame(frame, self._big_more)

    def _dead(self) -> ProtocolError:
        return ProtocolError(f"the ZMTP connection has failed ({self.failure})")

    def _receive(self, data: bytes, messages: list[list[bytes]]) -> None:
        """Parse ``data`` after what was kept; the whole messages go to ``messages`` as
        they are parsed (so those before a fault are there when it raises)."""
        buf: bytes | bytearray
        if not self._in:
            buf = data
        elif len(self._in) < JOIN_REST_BELOW:  # a short rest (a message cut by the receive): one
            buf = b"".join((self._in, data))  # bytes, whose frames take the fast path
            self._in = bytearray()
        else:  # (a long frame coming in pieces: no copy of what came before)
            self._in += data
            buf = self._in
        pos = 0
        if self.phase is Phase.GREETING:
            pos = self._greeting(buf)
            if self.phase is Phase.GREETING:
                self._keep(buf, 0)
                return
        pos = self._frames_from(buf, pos, messages)
        self._keep(buf, pos)

    def _keep(self, buf: bytes | bytearray, pos: int) -> None:
        """Keep ``buf[pos:]`` for the next feed."""
        if buf is self._in:
            del self._in[:pos]
        elif pos < len(buf):
            with memoryview(buf) as view:
                self._in = bytearray(view[pos:])

    def _greeting(self, buf: bytes | bytearray) -> int:
        """Check what has come of the peer's greeting; its length once it is whole."""
        have = len(buf)
        if have >= 1 and buf[0] != 0xFF:
            raise ProtocolError(f"the peer is not a ZMTP peer: its greeting starts with "
                                f"0x{buf[0]:02x}, not 0xff")
        if have >= 10 and buf[9] != 0x7F:
            raise ProtocolError(f"the peer is not a ZMTP 3 peer: its signature ends with "
                                f"0x{buf[9]:02x}, not 0x7f")
        if have >= 11 and buf[10] < 3:
            raise ProtocolError(f"the peer speaks ZMTP {buf[10]}; ZMTP 3 is required")
        if have < GREETING_BYTES:
            return 0
        mechanism = bytes(buf[12:32]).rstrip(b"\x00")
        if b"\x00" in mechanism or buf[32] > 1:
            raise ProtocolError("malformed ZMTP greeting: bad mechanism padding or as-server")
        if mechanism != MECHANISM:
            shown = mechanism.decode("ascii", "replace")[:20] or "(none)"
            hint = " (configure its CURVE keys)" if mechanism == b"CURVE" else ""
            raise ProtocolError(f"the peer requires the {shown} security mechanism; this "
                                f"connection offers NULL{hint}")
        self.peer_version = (buf[10], buf[11])
        self.phase = Phase.HANDSHAKE
        return GREETING_BYTES

    def _frames_from(self, buf: bytes | bytearray, pos: int,
                     messages: list[list[bytes]]) -> int:
        """Parse whole frames from ``buf[pos:]``; where the first incomplete one starts."""
        end = len(buf)
        frames = self._frames
        # short data frames (flags 0 or MORE) of a peer in traffic take the fast path: one
        # test for the flags, no limit to check (a short frame is within any limit of 255
        # bytes or more), a slice of the bytes for the frame
        fast = (self.phase is Phase.TRAFFIC and type(buf) is bytes
                and self.max_frame_bytes >= 255)
        max_frames = self.max_frames
        # (a frame takes 2 bytes at least: when what came cannot reach max_frames, short
        # frames need no count)
        counting = len(frames) + (end - pos) // 2 >= max_frames
        while end - pos >= 2:
            flags = buf[pos]
            if flags < 2 and fast:
                start = pos + 2
                pos = start + buf[pos + 1]
                if pos > end:
                    return start - 2
                frames.append(buf[start:pos])  # type: ignore[arg-type]  # (bytes: fast)
                if not flags:
                    messages.append(frames)
                    frames = self._frames = []
                elif counting and len(frames) >= max_frames:
                    raise ProtocolError(f"a message of more than {max_frames} frames")
                continue
            if flags & LONG:
                if end - pos < 9:
                    break
                size = int.from_bytes(buf[pos + 1:pos + 9], "big")
                start = pos + 9
            else:
                size = buf[pos + 1]
                start = pos + 2
            if flags & _RESERVED:
                raise ProtocolError(f"malformed ZMTP frame: reserved flag bits set (0x{flags:02x})")
            if flags & COMMAND:  # (libzmq may put a PING between a message's frames)
                if flags & MORE:
                    raise ProtocolError("malformed ZMTP frame: a command with the MORE flag")
                if size > MAX_COMMAND_BYTES:
                    raise ProtocolError(f"a ZMTP command of {size} bytes is larger than the "
                                        f"limit of {MAX_COMMAND_BYTES}")
            elif size > self.max_frame_bytes:
                raise ProtocolError(f"a frame of {size} bytes is larger than the limit of "
                                    f"{self.max_frame_bytes} ({self.limit_name})")
            stop = start + size
            if stop > end:
                if size >= DIRECT_BYTES and self._takes_big(flags):
                    self._start_big(buf, start, end, size, flags)
                    pos = end
                break
            frame = bytes(buf[start:stop])
            pos = stop
            if flags & COMMAND:
                self._command(frame)
                fast = (self.phase is Phase.TRAFFIC and type(buf) is bytes
                        and self.max_frame_bytes >= 255)
            elif self.phase is not Phase.TRAFFIC:
                raise ProtocolError("the peer sent a message before its READY")
            else:
                frames.append(frame)
                if not flags & MORE:
                    messages.append(frames)
                    frames = self._frames = []
                elif len(frames) >= max_frames:
                    raise ProtocolError(f"a message of more than {max_frames} frames")
        return pos

    def _takes_big(self, flags: int) -> bool:
        """Whether a big data frame starting now goes into its own buffer."""
        return (self.keep_big_from is not None and not flags & COMMAND
                and self.phase is Phase.TRAFFIC and len(self._frames) >= self.keep_big_from)

    def _start_big(self, buf: bytes | bytearray, start: int, end: int, size: int,
                   flags: int) -> None:
        # an anonymous mapping: its pages are committed only as the bytes come (a peer that
        # announces max_message_bytes and sends 20 costs a page, not the whole size)
        big = mmap.mmap(-1, size)
        with memoryview(buf) as view:
            big[:end - start] = view[start:end]
        self._big, self._big_have, self._big_more = big, end - start, bool(flags & MORE)

    def _add_frame(self, frame: bytes, more: bool) -> list[list[bytes]]:
        """A whole data frame: the message it ends, if it does."""
        frames = self._frames
        frames.append(frame)
        if not more:
            self._frames = []
            return [frames]
        if len(frames) >= self.max_frames:
            raise ProtocolError(f"a message of more than {self.max_frames} frames")
        return []

    # --- commands --------------------------------------------------------------------------

    def _command(self, body: bytes) -> None:
        if not body or body[0] == 0 or 1 + body[0] > len(body):
            raise ProtocolError("malformed ZMTP command: its name is empty or cut off")
        name = body[1:1 + body[0]]
        data = body[1 + body[0]:]
        if name == ERROR:
            raise ProtocolError(f"the peer closed the connection with ERROR: {error_reason(data)}")
        if self.phase is Phase.HANDSHAKE:
            if name != READY:
                raise ProtocolError(f"the peer sent {_shown(name)} where READY was expected")
            self._ready(data)
        elif name == PING:
            if len(data) < 2:
                raise ProtocolError(f"malformed ZMTP PING of {len(data)} bytes")
            # its context is at most 16 bytes (RFC 37); a longer one is cut, as libzmq does
            self._out.append(command(PONG, data[2:2 + MAX_PING_CONTEXT]))
        elif name == READY:
            raise ProtocolError("the peer sent READY again, after its handshake")
        # any other command in traffic (a PONG: we send no PING; SUBSCRIBE, CANCEL, or one
        # from a later ZMTP) is ignored, as libzmq ignores it

    def _ready(self, data: bytes) -> None:
        props = parse_properties(data)
        kind = props.get("socket-type")
        if kind is None:
            raise ProtocolError("the peer's READY names no Socket-Type")
        if kind not in self.peer_types:
            expected = "/".join(sorted(t.decode() for t in self.peer_types))
            self._out.append(error_command(b"invalid socket type"))  # (libzmq's words)
            hint = "is this address a DIPS broker?" if b"ROUTER" in self.peer_types \
                else "is it a DIPS client or worker?"
            raise ProtocolError(f"the peer is a {_shown(kind)} socket; a {expected} was "
                                f"expected ({hint})")
        self.peer_properties = props
        self.phase = Phase.TRAFFIC
        self._out += self._later
        self._later = []


def error_command(reason: bytes) -> bytes:
    """A whole ERROR command: the reason, at most 255 bytes, after its size."""
    reason = reason[:255]
    return command(ERROR, bytes((len(reason),)) + reason)


def error_reason(data: bytes) -> str:
    """An ERROR command's reason, for a log line."""
    if not data or 1 + data[0] > len(data):
        return "(no reason given)"
    return data[1:1 + data[0]].decode("utf-8", "replace")


def _shown(name: bytes) -> str:
    return repr(name.decode("ascii", "replace")[:40])
