"""Fast multipart send and receive.

pyzmq's ``send_multipart``/``recv_multipart`` spend most of their time in Python-level
checks and flag enums (about 20 us for six small frames on our machines, against 2.5 us
for the same frames sent through the backend's ``send`` with integer flags). The broker,
worker and client move every message through these two functions instead.
"""

from __future__ import annotations

import zmq
from zmq.backend import Socket as _BackendSocket

_send = _BackendSocket.send
_recv = _BackendSocket.recv
_get = _BackendSocket.get

NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send(sock: zmq.Socket, frames: list[bytes], flags: int = NOBLOCK) -> None:
    """Send a multipart message; raises zmq.Again (and others) as ``send`` does."""
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], more)
    _send(sock, frames[last], flags)


def recv(sock: zmq.Socket) -> list[bytes] | None:
    """Receive one whole multipart message without blocking; None when there is none."""
    if not _get(sock, _EVENTS) & _POLLIN:  # type: ignore[operator]
        return None
    frames = [_recv(sock, NOBLOCK)]
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, 0))
    return frames


def recv_with_user(sock: zmq.Socket) -> tuple[list[bytes] | None, str]:
    """Like :func:`recv`, and the ZAP User-Id of the connection the message came on."""
    if not _get(sock, _EVENTS) & _POLLIN:  # type: ignore[operator]
        return None, ""
    first = _recv(sock, NOBLOCK, copy=False)
    try:
        user = first.get("User-Id")
    except zmq.ZMQError:
        user = ""
    frames = [first.bytes]
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, 0))
    return frames, user if isinstance(user, str) else ""
