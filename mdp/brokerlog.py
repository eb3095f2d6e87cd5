"""The broker core's log: one logger (``mdp.broker``, the shell's too) for the core and the
parts it hands work to, and WARNING lines rate-limited against a peer that floods them.

Apart from :mod:`mdp.brokercore` because the core and :mod:`mdp.brokerworkers` both warn,
through one :class:`Warnings` (one budget a second for the whole broker). It reads no
clock: the caller passes ``now``.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("mdp.broker")


class Warnings:
    """WARNING logs, at most ``per_second`` a second (a peer must not flood the log)."""

    def __init__(self, per_second: int = 10) -> None:
        self.per_second = per_second
        self._window_start = -math.inf
        self._count = 0
        self._suppressed = 0

    def __call__(self, now: float, msg: str, *args: object) -> None:
        if now - self._window_start >= 1.0:
            if self._suppressed:
                log.warning("%d similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._suppressed += 1
