"""A caller's request, checked and encoded as both client shells do before the core sees it.

:func:`service_name`, :func:`encode_request` and :func:`check_frame` are what
:class:`mdp.client.MDPClient` and :class:`mdp.aio.AsyncMDPClient` do with a caller's input
before they submit it to :class:`mdp.clientcore.ClientCore` (which takes bodies already
encoded and never sees a caller's map); :func:`decode_status`, the one reply they decode
themselves (``mmi.status``). One place, so that the two shells refuse the same input.
"""

from __future__ import annotations

from typing import Any

from mdp import protocol as p
from mdp.errors import BadRequest, ProtocolError

_SERVICES: dict[str, bytes] = {}  # names already checked (a caller uses a few, often)


def service_name(service: str) -> bytes:
    name = _SERVICES.get(service)
    if name is None:
        name = service.encode()
        if not p.valid_service(name):
            raise BadRequest(f"invalid service name {service!r}", "service")
        if len(_SERVICES) < 1024:
            _SERVICES[service] = name
    return name


def encode_request(request: dict[str, Any], max_bytes: int) -> bytes:
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a map, got {type(request).__name__}")
    try:
        body = p.pack(request)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"request cannot be encoded as msgpack: {exc}") from exc
    if len(body) > max_bytes:
        raise BadRequest(f"request is {len(body)} bytes; the limit is {max_bytes}")
    return body


def check_frame(frame: bytes, max_bytes: int) -> bytes:
    """An already-encoded request frame (``send_frame``), checked as far as a client can
    without decoding it: bytes, within the size limit (the worker checks the map)."""
    if not isinstance(frame, bytes):
        raise BadRequest(f"a request frame is bytes, got {type(frame).__name__}")
    if len(frame) > max_bytes:
        raise BadRequest(f"request is {len(frame)} bytes; the limit is {max_bytes}")
    return frame


def decode_status(reply: list[bytes]) -> dict[str, Any]:
    """The map of an ``mmi.status`` reply."""
    status = p.unpack(reply[0]) if len(reply) == 1 else None
    if not isinstance(status, dict):
        raise ProtocolError("mmi.status reply is not a map (not a DIPS broker?)")
    return status
