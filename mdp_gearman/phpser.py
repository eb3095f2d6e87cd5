"""PHP ``serialize()`` format, strictly: arrays, strings, ints, floats, bools and null.

:func:`loads` is iterative (a 10,000-deep nesting costs a list, never the C stack) and has
limits on input length, nesting depth and item count. Objects (``O:``, ``C:``), enums
(``E:``), references (``r:``, ``R:``) and anything else are refused with a
:class:`PhpSerializeError` that names the byte offset and what was wrong.

PHP strings are bytes (``s:N:`` counts bytes): a string that is valid UTF-8 becomes a ``str``,
any other a ``bytes``. An array whose keys are 0, 1, ... n-1 in that order becomes a list;
any other a dict whose integer keys become decimal strings (PHP turns the key "7" into 7,
so this is its inverse, and msgpack maps need string keys).

:func:`dumps` writes the same subset the way PHP 7.1 and later write it (floats in their
shortest round-trip form, ``1.0E+17`` past 17 digits; keys that are canonical decimal integers
as ``i:``), so ``dumps(loads(data)) == data`` for what PHP's serialize() produced: a Gearman
worker behind the door reads the bytes its client sent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mdp.errors import BadRequest

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_ITEMS = 100_000

_INT = re.compile(rb"[+-]?[0-9]{1,20}")
_FLOAT = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {b"INF": math.inf, b"-INF": -math.inf, b"NAN": math.nan}
_REFUSED = {
    ord("O"): "objects (O:) are not accepted",
    ord("C"): "custom-serialized objects (C:) are not accepted",
    ord("E"): "enums (E:) are not accepted",
    ord("r"): "references (r:) are not accepted",
    ord("R"): "references (R:) are not accepted",
    ord("S"): "escaped strings (S:) are not accepted",
}


class PhpSerializeError(BadRequest):
    """A workload that looks like PHP serialize() but breaks its rules or our limits."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_items: int = DEFAULT_MAX_ITEMS


class _Array:
    __slots__ = ("pairs", "left", "key", "has_key")

    def __init__(self, count: int) -> None:
        self.pairs: list[tuple[int | str, Any]] = []
        self.left = count
        self.key: int | str = 0
        self.has_key = False


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> PhpSerializeError:
        return PhpSerializeError(f"PHP serialize(): {what} at byte {self.pos}", field="workload")

    def expect(self, token: bytes) -> None:
        if self.data[self.pos:self.pos + len(token)] != token:
            raise self.fail(f"expected {token.decode()!r}")
        self.pos += len(token)

    def until(self, stop: bytes, pattern: re.Pattern[bytes], what: str) -> bytes:
        end = self.data.find(stop, self.pos, self.pos + 400)
        if end < 0:
            raise self.fail(f"unterminated {what}")
        token = self.data[self.pos:end]
        if not pattern.fullmatch(token) and not (pattern is _FLOAT and token in _SPECIAL_FLOATS):
            raise self.fail(f"bad {what} {token[:40]!r}")
        self.pos = end + len(stop)
        return token


def loads(data: bytes, limits: Limits = Limits()) -> Any:
    """Decode one serialized value that must fill ``data`` exactly."""
    if len(data) > limits.max_bytes:
        raise PhpSerializeError(f"PHP serialize(): {len(data)} bytes; the limit is "
                                f"{limits.max_bytes}", field="workload")
    flat = _flat_map(data, limits.max_items) if limits.max_depth >= 1 else None
    if flat is not None:
        return flat
    reader = _Reader(data)
    stack: list[_Array] = []
    items = 0
    result: Any = None
    while True:
        top = stack[-1] if stack else None
        if top is not None and top.left == 0:
            reader.expect(b"}")
            value: Any = _finish(stack.pop())
        else:
            want_key = top is not None and not top.has_key
            tag = data[reader.pos:reader.pos + 2]
            if tag == b"a:":
                if want_key:
                    raise reader.fail("an array cannot be a key")
                if len(stack) >= limits.max_depth:
                    raise reader.fail(f"arrays nested deeper than {limits.max_depth}")
                reader.pos += 2
                count = int(reader.until(b":", _INT, "array size"))
                reader.expect(b"{")
                items += max(count, 0)
                if count < 0 or items > limits.max_items:
                    raise reader.fail(f"more than {limits.max_items} items")
                stack.append(_Array(count))
                continue
            value = _scalar(reader, tag, want_key)
        top = stack[-1] if stack else None  # after a pop, the array below takes the value
        if top is None:
            result = value
            break
        if not top.has_key:
            top.key, top.has_key = value, True
        else:
            top.pairs.append((top.key, value))
            top.has_key = False
            top.left -= 1
    if reader.pos != len(data):
        raise reader.fail("trailing bytes after the value")
    return result


INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # PHP's integers (and msgpack's)
_FLAT_HEAD = re.compile(rb"a:([0-9]{1,9}):\{")
_FLAT_STRING = re.compile(rb's:([0-9]{1,10}):"')
_FLAT_INT = re.compile(rb"i:([+-]?[0-9]{1,20});")


def _flat_map(data: bytes, max_items: int) -> dict[str, Any] | None:
    """The usual workload, a flat array of string keys with string or integer values, in
    one pass without the general reader (a job's workload is decoded on every job). None
    for anything else, valid or not: the general reader then decides, and says why."""
    head = _FLAT_HEAD.match(data)
    if head is None:
        return None
    count, pos = int(head.group(1)), head.end()
    if not 0 < count <= max_items:  # PHP's empty array is a list
        return None
    out: dict[str, Any] = {}
    string, integer = _FLAT_STRING.match, _FLAT_INT.match
    for _ in range(count):
        found = string(data, pos)
        if found is None:
            return None
        start = found.end()
        end = start + int(found.group(1))
        if data[end:end + 2] != b'";':
            return None
        try:
            key = data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        pos = end + 2
        found = string(data, pos)
        if found is not None:
            start = found.end()
            end = start + int(found.group(1))
            if data[end:end + 2] != b'";':
                return None
            raw = data[start:end]
            try:
                value: Any = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw
            pos = end + 2
        else:
            found = integer(data, pos)
            if found is None:
                return None
            value, pos = int(found.group(1)), found.end()
            if not INT_MIN <= value <= INT_MAX:
                return None  # the general reader says why
        out[key] = value
    if pos != len(data) - 1 or data[pos:] != b"}":
        return None
    return out


def _scalar(reader: _Reader, tag: bytes, want_key: bool) -> Any:
    if not tag:
        raise reader.fail("unexpected end of input")
    if want_key and tag not in (b"i:", b"s:"):
        raise reader.fail("an array key must be an int (i:) or a string (s:)")
    if tag == b"s:":
        reader.pos += 2
        length = int(reader.until(b":", _INT, "string length"))
        reader.expect(b'"')
        raw = reader.data[reader.pos:reader.pos + length]
        if length < 0 or len(raw) != length:
            raise reader.fail(f"string of {length} bytes runs past the end")
        reader.pos += length
        reader.expect(b'";')
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if tag == b"i:":
        reader.pos += 2
        number = int(reader.until(b";", _INT, "integer"))
        if not INT_MIN <= number <= INT_MAX:
            raise reader.fail("an integer beyond 64 bits (PHP has none)")
        return number
    if tag == b"d:":
        reader.pos += 2
        token = reader.until(b";", _FLOAT, "float")
        return _SPECIAL_FLOATS[token] if token in _SPECIAL_FLOATS else float(token)
    if tag == b"b:":
        reader.pos += 2
        flag = reader.data[reader.pos:reader.pos + 2]
        if flag not in (b"0;", b"1;"):
            raise reader.fail("a bool is b:0; or b:1;")
        reader.pos += 2
        return flag == b"1;"
    if tag[:2] == b"N;":
        reader.pos += 2
        return None
    refused = _REFUSED.get(tag[0]) if tag else None
    if refused:
        raise reader.fail(refused)
    raise reader.fail("expected a value (a:, s:, i:, d:, b: or N;)" if tag else
                      "unexpected end of input")


def _finish(array: _Array) -> list[Any] | dict[str, Any]:
    pairs = array.pairs
    if all(isinstance(key, int) and key == index for index, (key, _) in enumerate(pairs)):
        return [value for _, value in pairs]
    return {str(key): value for key, value in pairs}


def is_serialized_array(data: bytes) -> bool:
    """Whether ``data`` claims to be a serialized PHP array (``a:N:{``)."""
    return data[:2] == b"a:" and data[2:3].isdigit()


def dumps(value: Any, max_depth: int = 64) -> bytes:
    """Serialize ``value`` as PHP would; TypeError for what PHP arrays cannot hold."""
    out: list[bytes] = []
    _dump(value, out, max_depth)
    return b"".join(out)


def _dump(value: Any, out: list[bytes], depth: int) -> None:
    if depth < 0:
        raise TypeError("value nested too deep for PHP serialize()")
    if value is None:
        out.append(b"N;")
    elif isinstance(value, bool):
        out.append(b"b:1;" if value else b"b:0;")
    elif isinstance(value, int):
        out.append(b"i:%d;" % value)
    elif isinstance(value, float):
        out.append(b"d:" + _float(value) + b";")
    elif isinstance(value, str | bytes):
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        out.append(b's:%d:"' % len(raw) + raw + b'";')
    elif isinstance(value, list | tuple | dict):
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        out.append(b"a:%d:{" % len(value))
        for key, item in pairs:
            if not isinstance(key, int | str) or isinstance(key, bool):
                raise TypeError(f"PHP array keys are ints or strings, not {type(key).__name__}")
            _dump(_php_key(key), out, depth - 1)
            _dump(item, out, depth - 1)
        out.append(b"}")
    else:
        raise TypeError(f"PHP serialize() cannot hold {type(value).__name__}")


_CANONICAL_INT = re.compile(r"-?[1-9][0-9]{0,18}|0")
_INT64 = range(-2**63, 2**63)


def _php_key(key: int | str) -> int | str:
    """The key as PHP stores it: a string that is a canonical decimal integer is an int."""
    if isinstance(key, str) and _CANONICAL_INT.fullmatch(key) and int(key) in _INT64:
        return int(key)
    return key


def _float(value: float) -> bytes:
    """A float as PHP >= 7.1 serializes it (``serialize_precision`` -1): the shortest digits
    that read back to it, in fixed notation unless the decimal point lies more than 17
    digits right of the first digit or more than 4 left of it."""
    if math.isnan(value):
        return b"NAN"
    if math.isinf(value):
        return b"INF" if value > 0 else b"-INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0".encode()
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # the decimal point's place after the first digit
    if point > 17 or point < -3:
        mantissa = digits[0] + "." + (digits[1:] or "0")
        return f"{sign}{mantissa}E{point - 1:+d}".encode()
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}".encode()
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}".encode()
    return f"{sign}{digits[:point]}.{digits[point:]}".encode()
