"""Link speeds and sizes as people write them, and the bounds of the link floor.

The *link floor* is the slowest link a big body is allowed: bytes a role sent, or that were
announced to it, may have arrived only once they may have gone at this rate
(:func:`mdp.protocol.sent_until`), so that a busy link is not taken for a dead or frozen
peer (docs/PROTOCOL.md, "Big messages on slow links"). Every role takes it as
``link_floor`` (bytes per second) in its settings and as ``--link-floor RATE`` on its
command line; this module is the one parser of such a rate and the one check of its bounds.

A rate is a number with a unit, ``10MB/s``, ``80Mbit/s``, ``500KB/s``, ``1.5GiB/s``, ``100Mbps``
(``B`` is a byte, ``b`` or ``bit`` a bit; ``K``/``k``, ``M``, ``G`` are powers of 1000 and
``Ki``, ``Mi``, ``Gi`` of 1024), or a plain number of bytes per second. A size is written
the same way without the ``/s`` and in bytes only: ``1GiB``, ``512MB``, ``1073741824``.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from mdp.errors import ConfigError
from mdp.protocol import DEFAULT_LINK_FLOOR

# Below this the default largest message (32 MiB) would be allowed over five minutes on its
# way, and a peer that really died while sending it would be taken for alive that long.
MIN_LINK_FLOOR = 100_000  # bytes per second: 100 KB/s, 800 kbit/s

_RATE = re.compile(r"\s*(?P<number>[+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>\S*)\s*")
_UNIT = re.compile(r"(?P<prefix>[kKMG]i?|)(?P<what>B|b|bit)(?:/s|ps)")
_PREFIXES = {"": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3,
             "ki": 1024, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
_SHOWN = ((1000**3, "GB/s"), (1000**2, "MB/s"), (1000, "KB/s"))
EXAMPLES = "10MB/s, 80Mbit/s, 500KB/s or a number of bytes per second"
_SIZE_UNIT = re.compile(r"(?P<prefix>[kKMG]i?|)B")
_SIZES_SHOWN = ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB"),
                (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))
SIZE_EXAMPLES = "1GiB, 512MB, 64KiB or a number of bytes"

__all__ = ["DEFAULT_LINK_FLOOR", "EXAMPLES", "MIN_LINK_FLOOR", "check_link_floor",
           "format_rate", "format_size", "link_floor_arg", "link_floor_flag", "link_floor_help",
           "parse_rate", "parse_size", "size_arg"]


def _number_and_unit(text: str, what: str) -> tuple[float, str]:
    """A number and the unit written after it; ConfigError saying what is wrong otherwise
    (``what``: "a rate like ...", "a size like ...")."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{text!r} is not {what}")
    try:
        return float(match["number"]), match["unit"]
    except ValueError:
        raise ConfigError(f"{text!r}: {match['number']!r} is not a number") from None


def parse_rate(text: str) -> int:
    """Bytes per second that ``text`` says (rounded to a whole number); ConfigError saying
    what is wrong with it otherwise. Its bounds are :func:`check_link_floor`'s."""
    number, unit = _number_and_unit(text, f"a rate like {EXAMPLES}")
    per_second = 1.0
    if unit:
        found = _UNIT.fullmatch(unit)
        if found is None:
            hint = f" (did you mean {text.strip()}/s?)" if _UNIT.fullmatch(unit + "/s") else ""
            raise ConfigError(f"{text!r}: unknown unit {unit!r}{hint}; write a rate like "
                              f"{EXAMPLES}")
        per_second = _PREFIXES[found["prefix"]] / (1 if found["what"] == "B" else 8)
    value = number * per_second
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a finite rate")
    return round(value)


def check_link_floor(value: object, name: str) -> int:
    """``value`` if it is a whole number of bytes per second of at least
    :data:`MIN_LINK_FLOOR`; ConfigError naming the setting ``name`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number of bytes per second, got {value!r}")
    if value < MIN_LINK_FLOOR:
        raise ConfigError(f"{name} must be at least {format_rate(MIN_LINK_FLOOR)} "
                          f"({MIN_LINK_FLOOR} bytes per second), got {format_rate(value)}")
    return value


def link_floor_arg(text: str) -> int:
    """argparse ``type=`` of every ``--link-floor``: a rate, checked (argparse names the
    flag in front of what is wrong)."""
    try:
        return check_link_floor(parse_rate(text), "the link floor")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def link_floor_help(effect: str) -> str:
    """Every program's ``--link-floor`` help: what the floor is and how it is written, then
    ``effect``, what it does in that program."""
    return (f"the slowest link a big body is allowed, e.g. 10MB/s, 80Mbit/s, 500KB/s (at least "
            f"{format_rate(MIN_LINK_FLOOR)}): {effect}")


def link_floor_flag(default: int, effect: str) -> dict[str, Any]:
    """argparse's arguments of a program's ``--link-floor`` (see :func:`link_floor_help`)."""
    return {"type": link_floor_arg, "default": format_rate(default), "metavar": "RATE",
            "help": link_floor_help(effect)}


def format_rate(bytes_per_second: int) -> str:
    """A rate as :func:`parse_rate` reads it back exactly: ``10MB/s``, ``6250KB/s``,
    ``123456`` (the largest unit that divides it)."""
    for size, unit in _SHOWN:
        if bytes_per_second and bytes_per_second % size == 0:
            return f"{bytes_per_second // size}{unit}"
    return str(bytes_per_second)


def parse_size(text: str) -> int:
    """Bytes that ``text`` says (``1GiB``, ``512MB``, a plain number; rounded to a whole
    number); ConfigError saying what is wrong with it otherwise."""
    number, unit = _number_and_unit(text, f"a size like {SIZE_EXAMPLES}")
    found = _SIZE_UNIT.fullmatch(unit) if unit else None
    if unit and found is None:
        raise ConfigError(f"{text!r}: unknown unit {unit!r}; write a size like {SIZE_EXAMPLES}")
    value = number * (_PREFIXES[found["prefix"]] if found is not None else 1)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{text!r} is not a size like {SIZE_EXAMPLES}")
    return round(value)


def size_arg(text: str) -> int:
    """argparse ``type=`` of a size flag (argparse names the flag in front of what is
    wrong)."""
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_size(size: int) -> str:
    """A size as :func:`parse_size` reads it back exactly: ``1GiB``, ``500MB``, ``1234``."""
    for unit_bytes, unit in _SIZES_SHOWN:
        if size and size % unit_bytes == 0:
            return f"{size // unit_bytes}{unit}"
    return str(size)
