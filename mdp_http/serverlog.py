"""What aiohttp's server logs about peers, at a bounded rate.

aiohttp logs each malformed request (a bad Content-Length, an over-long header line, a
method that is no method, ...) as ``ERROR Error handling request`` with a traceback: eleven
lines a request, so a peer sending garbage as fast as it can writes the log as fast as it
can. :class:`PeerErrorFilter` sits on aiohttp's server logger and passes such lines through
the project's one rate-limited log (:class:`mdp.logs.RateLimitedLog`, ten a second, the rest
counted): a malformed request as one line naming what was wrong, anything else (a bug in
aiohttp's path, not a peer's mistake) with its traceback. Debug lines pass as they are.
"""

from __future__ import annotations

import logging
import time
import traceback

from aiohttp.http_exceptions import HttpProcessingError

from mdp.logs import RateLimitedLog

SERVER_LOGGER = "aiohttp.server"
MAX_DETAIL = 300  # characters of a malformed request's reason (it may quote the peer)

log = logging.getLogger(__name__)


class PeerErrorFilter(logging.Filter):
    """Warnings and errors of aiohttp's server logger through rate-limited logs (to this
    module's logger); the originals are dropped. A peer's mistake is one WARNING line; any
    other failure keeps its traceback at ERROR, under a limit of its own, so that a flood
    of malformed requests cannot hide it among "similar lines suppressed"."""

    def __init__(self, limited: RateLimitedLog | None = None,
                 failures: RateLimitedLog | None = None) -> None:
        super().__init__()
        self.limited = limited or RateLimitedLog(log)
        self.failures = failures or RateLimitedLog(log, level=logging.ERROR)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or isinstance(exc, HttpProcessingError):
            self.limited(time.monotonic(), "%s%s", record.getMessage(), _mistake(exc))
        else:
            self.failures(time.monotonic(), "%s\n%s", record.getMessage(),
                          "".join(traceback.format_exception(exc)).rstrip())
        return False


def _mistake(exc: BaseException | None) -> str:
    """A peer's mistake in one line (the peer's: its reason, whitespace folded)."""
    if exc is None:
        return ""
    reason = " ".join(str(exc).split())
    return f": {type(exc).__name__}: {reason[:MAX_DETAIL]}"


def install() -> PeerErrorFilter:
    """Put the filter on aiohttp's server logger (once per process: ``main``)."""
    server = logging.getLogger(SERVER_LOGGER)
    for existing in server.filters:
        if isinstance(existing, PeerErrorFilter):
            return existing
    installed = PeerErrorFilter()
    server.addFilter(installed)
    return installed
