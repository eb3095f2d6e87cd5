"""Numbers given on mdpctl's command line, checked at once with one clear line.

Each function is an argparse ``type=``: a value out of range (a negative count, a timeout
of 0, ``nan`` or ``inf`` seconds) is a usage error (exit 2) before anything is started or
sent, rather than a wait that ends at once, never ends, or a traceback.
"""

from __future__ import annotations

import argparse
import math

MAX_SECONDS = 30 * 24 * 3600.0  # a month: beyond it a deadline overflows some clocks


def seconds(text: str) -> float:
    """A positive, finite number of seconds, at most :data:`MAX_SECONDS`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a number of seconds must be more than 0 and at most {MAX_SECONDS:.0f}"
        )
    return value


def count(text: str) -> int:
    """A whole number, 0 or more."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot be negative")
    return value


def positive(text: str) -> int:
    """A whole number, 1 or more."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
