"""Waiting for a condition: one poll loop for the tests and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_POLL_S = 0.005
MAX_POLL_S = 0.05
SERVER_POLL_S = 0.02
"""How often a test's ``serve_forever`` loop looks for ``shutdown()``: its own 0.5 s held up
the end of every test with an HTTP origin by about that much."""


class WaitTimeout(AssertionError):
    """A condition did not come true in time (an AssertionError, so a test fails on it)."""


def wait_for(predicate: Callable[[], T | None], timeout_s: float = 10.0,
             what: str = "condition", error: type[Exception] = WaitTimeout) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    The polls come 5 ms apart at first, then up to 50 ms apart; they are a polling
    interval, not synchronisation: the predicate decides. After ``timeout_s`` raise
    ``error`` (a benchmark passes its own) naming ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout_s
    delay = FIRST_POLL_S
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, MAX_POLL_S)
