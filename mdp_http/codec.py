"""HTTP bodies and query strings to request maps, and results to HTTP bodies (no I/O).

Requests:
  * ``application/json``: a map. Fields the service's renderer declares as bytes take
    base64 strings; anywhere, a ``data:...;base64,...`` URI string becomes bytes.
  * ``application/msgpack`` (or ``application/x-msgpack``): a map, bytes as msgpack bin.
  * ``multipart/form-data`` or ``application/x-www-form-urlencoded``: one field per request
    field; file parts are bytes, text parts are read as a JSON scalar or list when they parse
    as one (``256``, ``true``, ``[1,2]``) and as a string otherwise (``0123`` stays a string).
    A text part named ``request`` may carry a JSON map that the other fields extend.
  * Query strings (GET): as text form fields; a repeated key gives a list.
Replies: bytes are sent as they are (their Content-Type from :mod:`mdp_http.content`);
anything else as JSON (bytes inside, and strs that are not UTF-8, as ``{"base64": ...}``) or
msgpack when the client asks for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any

from mdp import protocol as p
from mdp.body import as_bytes
from mdp.errors import BadRequest
from mdp_http.errors import UnsupportedMediaType
from mdp_http.peertext import is_unicode, unicode_text

JSON_TYPE = "application/json"  # also any */*+json, and a body with no Content-Type
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
ACCEPTED_TYPES = (JSON_TYPE, *MSGPACK_TYPES, *FORM_TYPES)  # what a POST body may be
_DATA_URI = re.compile(r"^data:[\w.+/-]*(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)
_JSONISH = re.compile(r"^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|\[.*\])$",
                      re.DOTALL)
MAX_DEPTH = p.DEFAULT_LIMITS.max_depth


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"expected base64: {exc}", field=where) from exc


def _data_uris(value: Any, where: str, depth: int = 0) -> Any:
    """Replace data-URI strings by their bytes, anywhere in ``value``."""
    if depth > MAX_DEPTH:
        raise BadRequest(f"the request is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        match = _DATA_URI.match(value)
        return _b64(value[match.end():], where) if match else value
    if isinstance(value, dict):
        return {k: _data_uris(v, f"{where}.{k}" if where else k, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_data_uris(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def from_json(body: bytes, bytes_fields: frozenset[str] = frozenset()) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest(f"the body's JSON is nested deeper than {MAX_DEPTH} levels") from exc
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a JSON object, got {type(request).__name__}")
    request = _data_uris(request, "")
    for name in bytes_fields:
        if isinstance(request.get(name), str):
            request[name] = _b64(request[name], name)
    return request


def from_msgpack(body: bytes) -> dict[str, Any]:
    return p.decode_request([body])


def msgpack_frame(body: bytes) -> bytes:
    """A msgpack body as the request frame it already is. Only its first byte is looked at
    (a map); the worker decodes it with its own limits, so the door never unpacks and packs
    a large image again."""
    first = body[0] if body else 0
    if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        raise BadRequest("a msgpack request is a map")
    return body


def text_value(text: str) -> Any:
    """A form or query value: a JSON number, boolean, null or list if it is one, else text."""
    if _JSONISH.match(text):
        try:
            return json.loads(text)
        except ValueError:
            pass
        except RecursionError as exc:
            raise BadRequest(f"a value is nested deeper than {MAX_DEPTH} levels") from exc
    return _data_uris(text, "")


def from_fields(fields: Iterable[tuple[str, str | bytes]]) -> dict[str, Any]:
    """Form parts or query pairs (bytes for file parts); repeated names make a list."""
    request: dict[str, Any] = {}
    repeated: set[str] = set()
    for name, raw in fields:
        if name == "request" and isinstance(raw, str):
            base = from_json(raw.encode())
            request = {**base, **request}
            continue
        value = raw if isinstance(raw, bytes) else text_value(raw)
        if name in request and name not in repeated:
            request[name] = [request[name]]
            repeated.add(name)
        if name in repeated:
            request[name].append(value)
        else:
            request[name] = value
    return request


def from_form(fields: list[tuple[str, str | bytes]]) -> dict[str, Any]:
    """A form body's request map. JSON sent as a form (``curl --data @card.json`` sends
    application/x-www-form-urlencoded) arrives as one field named by the whole JSON text:
    that is refused saying so, not as an unknown field."""
    if fields and fields[0][0].lstrip().startswith("{"):
        raise BadRequest(
            "the body looks like JSON but was sent as a form (Content-Type "
            "application/x-www-form-urlencoded, what curl --data sends by default); send "
            f"it with Content-Type: {JSON_TYPE} (curl -H 'Content-Type: {JSON_TYPE}' "
            "--data @FILE ...)")
    return from_fields(fields)


def parse_body(content_type: str, body: bytes, bytes_fields: frozenset[str]) -> dict[str, Any]:
    """The request map of a JSON or msgpack body (forms are read by the caller)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in (JSON_TYPE, "") or kind.endswith("+json"):
        return from_json(body, bytes_fields)
    if kind in MSGPACK_TYPES:
        return from_msgpack(body)
    raise UnsupportedMediaType(f"Content-Type {kind!r} is not read here; send one of "
                               f"{', '.join(ACCEPTED_TYPES)}")


def _jsonable(value: Any) -> Any:
    """A result as JSON can hold it: bytes as ``{"base64": ...}``, and so a str that is not
    UTF-8 (a peer's msgpack str holding bytes, as PHP's msgpack packs them: it *is* bytes,
    and JSON text cannot carry it); a map key that is not UTF-8 has its bad bytes replaced
    by U+FFFD (keys are text; msgpack replies keep them exact)."""
    if isinstance(value, str):
        return value if value.isascii() or is_unicode(value) else _jsonable(as_bytes(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {unicode_text(str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def wants_msgpack(accept: str) -> bool:
    return any(kind in accept for kind in MSGPACK_TYPES)


def encode_result(result: Any, accept: str) -> tuple[bytes, str]:
    """A non-bytes result as (body, content type): msgpack if accepted, else JSON."""
    if wants_msgpack(accept):  # mdp.body.pack: a peer's non-UTF-8 str as the bytes it sent
        return p.pack(result), MSGPACK_TYPES[0]
    return json.dumps(_jsonable(result), separators=(",", ":")).encode(), "application/json"
