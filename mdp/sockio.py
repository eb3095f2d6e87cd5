"""Fast multipart send and receive.

pyzmq's ``send_multipart``/``recv_multipart`` spend most of their time in Python-level
checks and flag enums (about 20 us for six small frames on our machines, against 2.5 us
for the same frames sent through the backend's ``send`` with integer flags). The broker,
worker and client move every message through these two functions instead.
"""

from __future__ import annotations

import sys
from typing import Any

import zmq
from zmq.backend import Socket as _BackendSocket

_send: Any = _BackendSocket.send  # (typed loosely: copy is chosen per frame)
_recv = _BackendSocket.recv
_set = _BackendSocket.set
_get = _BackendSocket.get

NOBLOCK = int(zmq.NOBLOCK)
BIG = 65536  # a frame this long or longer may be passed on as it came (``keep_big``)
HEAD = 4  # frames from the start that are never kept as zmq.Frame (identity, "", header, ...)
ZERO_COPY = 1 << 20  # a frame this long or longer is sent without a copy (measured: from
# about 1 MiB on, copying costs more than pyzmq's release of a zero-copy frame)
_SNDMORE = int(zmq.SNDMORE)
_RCVTIMEO = int(zmq.RCVTIMEO)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_Again = zmq.Again
_TIMEOUT_SET = "_dips_rcvtimeo"  # recv_wait: the receive timeout set on a socket


def send(sock: zmq.Socket, frames: list[bytes], flags: int = NOBLOCK) -> None:
    """Send a multipart message; raises zmq.Again (and others) as ``send`` does.

    A last frame (where a body goes) of ``ZERO_COPY`` bytes or more is not copied: libzmq
    sends it from the object's own memory (a copy is cheaper below that: a zero-copy frame
    is released through pyzmq's garbage-collector thread); a mutable one is copied, unless
    the caller hands it over as a read-only ``memoryview`` (a promise not to change it)."""
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], more)
    frame = frames[last]  # (a big body is the last frame: batches gather small ones)
    if len(frame) < ZERO_COPY:
        _send(sock, frame, flags)
    else:
        handed_over = type(frame) is bytes or (isinstance(frame, memoryview)
                                               and frame.readonly)
        _send(sock, frame, flags, copy=not handed_over)


def readable(sock: zmq.Socket) -> bool:
    """Whether a message waits: ~1.4 us, where a receive that finds none costs ~4 us (pyzmq
    builds a ``zmq.Again``). Worth it where the answer is usually no: after the one message
    a quiet peer sent."""
    events = _get(sock, _EVENTS)
    return isinstance(events, int) and bool(events & _POLLIN)


def recv(sock: zmq.Socket, keep_big: bool = False) -> list[bytes] | None:
    """Receive one whole multipart message without blocking; None when there is none.

    Frames are taken as zero-copy ``Frame`` objects and their ``more`` flag read directly:
    cheaper than a ``getsockopt(RCVMORE)`` per frame. An empty socket is found by the
    receive itself, the one ``Again`` at the end of a batch; where the socket is usually
    empty, :func:`readable` asks first.

    ``keep_big``: a frame of ``BIG`` bytes or more, past the first ``HEAD``, stays the
    ``zmq.Frame`` it came as (it has a length and the buffer protocol, and sending it again
    shares its memory rather than copying it): the broker passes bodies on this way.
    """
    try:
        frame = _recv(sock, NOBLOCK, copy=False)
    except _Again:
        return None
    return _rest(sock, frame, keep_big)


def recv_ready(sock: zmq.Socket) -> list[list[bytes]]:
    """Every message waiting on ``sock``, without blocking. Asking before each receive is
    cheaper than a receive that finds nothing (pyzmq builds a ``zmq.Again``), and a pass
    usually finds one or two messages."""
    messages = []
    while readable(sock) and (frames := recv(sock)) is not None:
        messages.append(frames)
    return messages


def _rest(sock: zmq.Socket, frame: zmq.Frame, keep_big: bool) -> list[bytes]:
    """The message's frames from ``frame`` on; with ``keep_big``, big ones after the head
    are ``zmq.Frame`` (typed as bytes: what the broker does with a body, a Frame does)."""
    frames: list[Any] = [frame.bytes]
    append = frames.append
    if not keep_big:
        while frame.more:
            frame = _recv(sock, 0, copy=False)
            append(frame.bytes)
        return frames
    head = HEAD - 1
    while frame.more:
        frame = _recv(sock, 0, copy=False)
        if head:
            head -= 1
            append(frame.bytes)
        else:
            append(frame.bytes if frame.__len__() < BIG else frame)
    return frames


def recv_with_user(sock: zmq.Socket,
                   keep_big: bool = False) -> tuple[list[bytes] | None, str]:
    """Like :func:`recv`, and the ZAP User-Id of the connection the message came on."""
    try:
        frame = _recv(sock, NOBLOCK, copy=False)
    except _Again:
        return None, ""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:
        user = ""
    return _rest(sock, frame, keep_big), user if isinstance(user, str) else ""


def recv_wait(
    sock: zmq.Socket, timeout_ms: int, with_user: bool = False, keep_big: bool = False
) -> tuple[list[bytes] | None, str]:
    """Block up to ``timeout_ms`` for one whole message (and the ZAP User-Id if asked;
    ``keep_big`` as for :func:`recv`).

    Blocking in the socket's own receive costs fewer system calls than a poll followed by
    a receive. A signal's handler runs meanwhile; the wait then ends by its timeout.
    """
    if timeout_ms > 20:  # waking a little early is harmless, and the same timeout as last
        timeout_ms -= timeout_ms % 10  # time is not set again
    state = sock.__dict__  # the timeout last set: most waits use the same one again
    if state.get(_TIMEOUT_SET) != timeout_ms:
        _set(sock, _RCVTIMEO, timeout_ms)  # not ``sock.rcvtimeo``: that costs 4x as much
        state[_TIMEOUT_SET] = timeout_ms
    try:
        frame = _recv(sock, 0, copy=False)
    except _Again:
        return None, ""
    user = ""
    if with_user:
        try:
            found = frame.get("User-Id")
            user = found if isinstance(found, str) else ""
        except zmq.ZMQError:
            pass
    return _rest(sock, frame, keep_big), user


def monitor_event(frames: list[bytes]) -> int:
    """The event number of a socket monitor's message (libzmq's: a first frame of a 16-bit
    event and a 32-bit value, in the machine's byte order, then the endpoint); 0 for
    anything else. Read here rather than with ``zmq.utils.monitor``, which loads asyncio."""
    first = frames[0] if frames else b""
    return int.from_bytes(first[:2], sys.byteorder) if len(first) == 6 else 0
