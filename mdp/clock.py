"""Small timing helpers shared by the broker, worker and client loops."""

from __future__ import annotations

import logging
import math
import time

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


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


class RateLimitedLog:
    """Log at most ``per_second`` messages a second; count and report the rest."""

    def __init__(self, logger: logging.Logger, per_second: int = 10) -> None:
        self.logger = logger
        self.per_second = per_second
        self._window_start = 0.0
        self._count = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            if self._suppressed:
                self.logger.warning("%d similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            self.logger.warning(msg, *args)
        else:
            self._suppressed += 1
