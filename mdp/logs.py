"""Logging helpers shared by the roles: the line format their ``main`` configures, a log
that rate-limits a warning peers can repeat at will (dropped messages, refused keys, failed
jobs), so that a flood of bad input does not flood the log, and one that lets through bursts
of lines about peers coming and going, and counts the rest.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class RateLimitedLog:
    """Lines at ``level`` (WARNING; ERROR for a process's own failures that a peer may find
    how to repeat) at most ``per_second`` a second to ``logger``; the rest are counted and
    reported as one line when the next second's first goes out. It reads no clock: the
    caller passes ``now`` (a core its own; a shell ``time.monotonic()``)."""

    def __init__(self, logger: logging.Logger, per_second: int = 10,
                 level: int = logging.WARNING) -> None:
        self.logger = logger
        self.per_second = per_second
        self.level = level
        self._window_start = -math.inf
        self._count = 0
        self._suppressed = 0

    def __call__(self, now: float, msg: str, *args: object) -> None:
        if now - self._window_start >= 1.0:
            if self._suppressed:
                self.logger.log(self.level, "%d similar lines suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            self.logger.log(self.level, msg, *args)
        else:
            self._suppressed += 1


class BurstLog:
    """INFO lines of events peers cause at will but that are worth a line each in an ordinary
    fleet (a worker joining, leaving): up to ``burst`` at once (a fleet of that many
    restarting logs every worker), then ``per_second`` on average (a token bucket). The rest
    are counted by kind and reported in one line at most once a second, by the next event
    or by :meth:`flush` (the caller's timer), so that one peer churning, or a flood, logs a
    bounded number of lines that still say how much happened. It reads no clock."""

    def __init__(self, logger: logging.Logger, burst: int = 100,
                 per_second: float = 2.0) -> None:
        self.logger = logger
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._at = -math.inf  # when the tokens were last counted
        self._suppressed: dict[str, int] = {}
        self._since = 0.0  # when the first event now counted was suppressed

    def __call__(self, now: float, kind: str, msg: str, *args: object) -> None:
        """``kind``: what the event is, in the summary of those suppressed ("ready")."""
        tokens = self._tokens + (now - self._at) * self.per_second
        self._tokens = tokens if tokens < self.burst else float(self.burst)
        self._at = now
        if self._suppressed:
            self.flush(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.logger.info(msg, *args)
            return
        suppressed = self._suppressed
        if not suppressed:
            self._since = now
        suppressed[kind] = suppressed.get(kind, 0) + 1

    def flush(self, now: float) -> None:
        """Report what was suppressed, if anything was and a second has passed since."""
        suppressed = self._suppressed
        if not suppressed or now - self._since < 1.0:
            return
        self.logger.info("%d more such lines in %.0fs not logged: %s", sum(suppressed.values()),
                         now - self._since,
                         ", ".join(f"{n} {kind}" for kind, n in sorted(suppressed.items())))
        self._suppressed = {}


def loop_errors(logger: logging.Logger | None = None
                ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An asyncio exception handler (``loop.set_exception_handler``) that logs asyncio's own
    error reports (a failed ``accept()``, a callback's exception) at ERROR, ten a second at
    most: a cause a peer can repeat (descriptors run out) must not flood the log."""
    limited = RateLimitedLog(logger or logging.getLogger("asyncio"), level=logging.ERROR)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)).rstrip() if exc is not None else ""
        limited(time.monotonic(), "%s%s", context.get("message", "asyncio error"),
                f"\n{detail}" if detail else "")

    return handle
