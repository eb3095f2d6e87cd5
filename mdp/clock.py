"""Small timing helpers shared by the broker, worker and client loops."""

from __future__ import annotations

import math


def poll_timeout_ms(deadline: float, now: float) -> int:
    """Milliseconds to poll so that the loop wakes at ``deadline`` (never negative)."""
    if deadline <= now:
        return 0
    return max(1, math.ceil((deadline - now) * 1000))


class Backoff:
    """Exponential backoff: ``initial_s``, doubling up to ``max_s``; ``reset`` after success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next_s = initial_s

    def next(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.initial_s
