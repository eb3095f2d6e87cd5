"""Logging helpers shared by the roles: the line format their ``main`` configures, and a
log that rate-limits a warning peers can repeat at will (dropped messages, refused keys,
failed jobs), so that a flood of bad input does not flood the log.
"""

from __future__ import annotations

import logging
import math

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class RateLimitedLog:
    """WARNING lines at most ``per_second`` a second to ``logger``; the rest are counted and
    reported as one line when the next second's first goes out. It reads no clock: the
    caller passes ``now`` (a core its own; a shell ``time.monotonic()``)."""

    def __init__(self, logger: logging.Logger, per_second: int = 10) -> None:
        self.logger = logger
        self.per_second = per_second
        self._window_start = -math.inf
        self._count = 0
        self._suppressed = 0

    def __call__(self, now: float, msg: str, *args: object) -> None:
        if now - self._window_start >= 1.0:
            if self._suppressed:
                self.logger.warning("%d similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            self.logger.warning(msg, *args)
        else:
            self._suppressed += 1
