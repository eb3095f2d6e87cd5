"""Strict, friendly checks of request fields.

Each reader takes the request map, the field name and the path ``prefix`` that locates the map
inside the request (``""`` at the top, ``"ops[1]."`` for the second operation of a chain), and
either returns a clean value or raises :class:`~mdp.errors.BadRequest` naming the field and
what was expected. ``bool`` is never accepted where a number is expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mdp.errors import BadRequest
from mdp.protocol import as_bytes

RGB = tuple[int, int, int]

GRAVITIES = (
    "center",
    "north",
    "south",
    "east",
    "west",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
)

_COLOUR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_MISSING = object()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _get(request: Mapping[str, Any], name: str) -> Any:
    value = request.get(name, _MISSING)
    return _MISSING if value is None else value


def integer(
    request: Mapping[str, Any],
    name: str,
    prefix: str,
    *,
    lo: int,
    hi: int,
    default: int | None = None,
) -> int | None:
    """An int in ``lo..hi``; ``default`` when absent or null."""
    value = _get(request, name)
    if value is _MISSING:
        return default
    field = prefix + name
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{field} must be an integer {lo}-{hi}, got {_type_name(value)}", field)
    if not lo <= value <= hi:
        raise BadRequest(f"{field} must be {lo}-{hi}, got {value}", field)
    return value


def required_integer(
    request: Mapping[str, Any], name: str, prefix: str, *, lo: int, hi: int
) -> int:
    value = integer(request, name, prefix, lo=lo, hi=hi)
    if value is None:
        raise BadRequest(f"{prefix + name} is required: an integer {lo}-{hi}", prefix + name)
    return value


def number(
    request: Mapping[str, Any], name: str, prefix: str, *, lo: float, hi: float, default: float
) -> float:
    """A finite int or float in ``lo..hi``; ``default`` when absent or null."""
    value = _get(request, name)
    if value is _MISSING:
        return default
    field = prefix + name
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{field} must be a number {lo}-{hi}, got {_type_name(value)}", field)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise BadRequest(f"{field} must be {lo}-{hi}, got {value}", field)
    return float(value)


def boolean(request: Mapping[str, Any], name: str, prefix: str, *, default: bool) -> bool:
    value = _get(request, name)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        field = prefix + name
        raise BadRequest(f"{field} must be true or false, got {_type_name(value)}", field)
    return value


def choice(
    request: Mapping[str, Any],
    name: str,
    prefix: str,
    choices: tuple[str, ...],
    *,
    default: str | None,
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """One of ``choices`` (case-insensitive; ``aliases`` maps other spellings)."""
    value = _get(request, name)
    if value is _MISSING:
        return default
    field = prefix + name
    if isinstance(value, str):
        key = value.strip().lower()
        key = (aliases or {}).get(key, key)
        if key in choices:
            return key
    raise BadRequest(f"{field} must be one of {', '.join(choices)}; got {value!r:.40}", field)


def text(request: Mapping[str, Any], name: str, prefix: str, *, max_chars: int) -> str | None:
    """A non-blank string of at most ``max_chars`` characters, or ``None`` when absent."""
    value = _get(request, name)
    if value is _MISSING:
        return None
    field = prefix + name
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, got {_type_name(value)}", field)
    if not value.isascii() and not _is_utf8(value):
        raise BadRequest(f"{field} is not valid UTF-8 text", field)
    if not value.strip() or len(value) > max_chars:
        raise BadRequest(f"{field} must have 1 to {max_chars} characters", field)
    return value


def _is_utf8(value: str) -> bool:
    """False for a str that came off the wire as bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def blob(request: Mapping[str, Any], name: str, prefix: str) -> bytes | None:
    """Binary data, or ``None`` when absent.

    msgpack bin, or str: PHP's msgpack packs every string as str, image bytes included,
    and the wire decodes such a str without loss (``mdp.protocol.as_bytes``).
    """
    value = _get(request, name)
    if value is _MISSING:
        return None
    field = prefix + name
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    elif isinstance(value, str):
        value = as_bytes(value)
    if not isinstance(value, bytes):
        raise BadRequest(f"{field} must be bytes, got {_type_name(value)}", field)
    if not value:
        raise BadRequest(f"{field} is empty", field)
    return value


def one_of(first: tuple[str, Any], second: tuple[str, Any], prefix: str = "",
           field: str | None = None) -> None:
    """Exactly one of two alternative fields, each given as ``(label, value)``, the value
    ``None`` when absent: a request with neither is told to give one, a request with both
    to drop one. A label starts with its field's name (``"mark (an image)"``). The error
    names ``field``, by default the first field when neither was given, the second when
    both were."""
    (first_label, first_value), (second_label, second_value) = first, second
    if (first_value is None) != (second_value is None):
        return
    both = first_value is not None
    name = prefix + (field or (second_label if both else first_label).split()[0])
    where = f"{prefix.rstrip('.')}: " if prefix else ""
    if both:
        raise BadRequest(f"{where}give either {first_label} or {second_label}, not both", name)
    raise BadRequest(f"{where}give one of {first_label} or {second_label}", name)


def colour(request: Mapping[str, Any], name: str, prefix: str, *, default: RGB) -> RGB:
    """A colour written ``#rgb`` or ``#rrggbb``."""
    value = _get(request, name)
    if value is _MISSING:
        return default
    field = prefix + name
    match = _COLOUR.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadRequest(f"{field} must be a colour like '#1a2b3c', got {value!r:.40}", field)
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(ch * 2 for ch in digits)
    r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    return (r, g, b)
