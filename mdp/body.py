"""The body codec: msgpack request maps and ``{"result"}`` / ``{"error"}`` replies.

Bodies are msgpack. A request is a map; a DIPS reply is ``{"result": value}`` or
``{"error": {"code", "message", "field"?}}``. The doors use this module (and the client's
public API) and nothing else of the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from mdp.errors import BadRequest, ProtocolError, RequestError, from_wire

_REPLY_PREFIX = b"\x81\xa6result"  # msgpack: a map of one entry whose key is "result"
_ERROR_PREFIX = b"\x81\xa5error"  # msgpack: a map of one entry whose key is "error"


@dataclass(frozen=True)
class BodyLimits:
    """What a decoded request may hold: nesting depth and entries per array or map."""

    max_depth: int = 32
    max_items: int = 100_000


DEFAULT_LIMITS = BodyLimits()


def pack(obj: Any) -> bytes:
    """Encode a value as msgpack.

    A str with surrogate escapes (a peer's str that was not valid UTF-8, as :func:`unpack`
    keeps it) goes back out as the very bytes that peer sent, so that a request's field,
    echoed in a result or named in an error, never makes its reply impossible to send."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except UnicodeEncodeError:
        return msgpack.packb(obj, use_bin_type=True, unicode_errors="surrogateescape")


def unpack(data: bytes, max_items: int = -1) -> Any:
    """Decode msgpack; raise ProtocolError for anything that is not one valid object.

    A msgpack *str* that is not valid UTF-8 (PHP's msgpack packs every string, bytes
    included, as str) decodes to a Python str with surrogate escapes, so that nothing is
    lost: :func:`as_bytes` turns it back into the exact bytes.
    """
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True,
                               unicode_errors="surrogateescape",
                               max_array_len=max_items, max_map_len=max_items)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"body is not valid msgpack: {type(exc).__name__}: {exc}") from exc


def as_bytes(value: str | bytes) -> bytes:
    """The bytes a peer meant: bin as it is, str (even one with surrogate escapes) encoded;
    a lone surrogate of another kind (a JSON ``"\\ud800"``) as UTF-8 would spell it."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def decode_request(body: list[bytes], limits: BodyLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The request map of a body; BadRequest naming what is wrong with anything else."""
    if len(body) != 1:
        raise BadRequest(f"a request body is one msgpack frame, got {len(body)} frames")
    try:
        request = unpack(body[0], limits.max_items)
    except ProtocolError as exc:
        raise BadRequest(f"{exc} (at most {limits.max_items} entries per array or map)") from exc
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a msgpack map, got {type(request).__name__}")
    if _too_deep(request, limits.max_depth):
        raise BadRequest(f"the request is nested deeper than {limits.max_depth} levels")
    return request


_CONTAINERS = frozenset((dict, list))


def _too_deep(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        # (in C: most containers hold no container; unpacked msgpack holds only exact
        # dicts and lists, no subclasses)
        if not _CONTAINERS.isdisjoint(map(type, children)):
            stack.extend((child, depth + 1) for child in children
                         if isinstance(child, dict | list))
    return False


def result_body(result: Any) -> bytes:
    """A success reply."""
    return pack({"result": result})


def raw_result_body(packed: bytes) -> bytes:
    """A success reply whose result is already msgpack-encoded (no re-encoding)."""
    return _REPLY_PREFIX + packed


def error_body(error: RequestError) -> bytes:
    """An error reply."""
    return pack({"error": error.to_wire()})


def is_error_body(body: list[bytes]) -> bool:
    """Whether a reply body is a DIPS error reply (a cheap prefix test)."""
    return len(body) == 1 and body[0].startswith(_ERROR_PREFIX)


def error_code(body: list[bytes]) -> str:
    """The ``code`` of a DIPS error reply body ("unknown" when it has none)."""
    try:
        error = unpack(body[0]).get("error")
        code = error.get("code") if isinstance(error, dict) else None
    except (ProtocolError, AttributeError, IndexError):
        return "unknown"
    return code[:40] if isinstance(code, str) else "unknown"


def decode_reply(body: list[bytes]) -> Any:
    """The result of a reply body; raise the RequestError it carries.

    A DIPS reply is ``{"result": value}`` or ``{"error": {...}}``. Anything else comes
    from a standard 7/MDP worker and is handed back as it is: its one frame as ``bytes``,
    several frames as a list of ``bytes``.
    """
    if len(body) == 1:
        frame = body[0]
        if frame.startswith(_REPLY_PREFIX) or frame.startswith(_ERROR_PREFIX):
            try:
                reply = unpack(frame)
            except ProtocolError:
                return frame
            if isinstance(reply, dict) and len(reply) == 1:
                if "result" in reply:
                    return reply["result"]
                if "error" in reply:
                    raise from_wire(reply["error"])
        return frame
    return list(body)
