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
    """Warnings and errors of aiohttp's server logger through one :class:`RateLimitedLog`
    (to this module's logger); the originals are dropped."""

    def __init__(self, limited: RateLimitedLog | None = None) -> None:
        super().__init__()
        self.limited = limited or RateLimitedLog(log)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.limited(time.monotonic(), "%s%s", record.getMessage(), _detail(record))
        return False


def _detail(record: logging.LogRecord) -> str:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return ""
    if isinstance(exc, HttpProcessingError):  # the peer's mistake: one line says it
        reason = " ".join(str(exc).split())
        return f": {type(exc).__name__}: {reason[:MAX_DETAIL]}"
    return "\n" + "".join(traceback.format_exception(exc)).rstrip()


def install() -> PeerErrorFilter:
    """Put the filter on aiohttp's server logger (once per process: ``main``)."""
    server = logging.getLogger(SERVER_LOGGER)
    for existing in server.filters:
        if isinstance(existing, PeerErrorFilter):
            return existing
    installed = PeerErrorFilter()
    server.addFilter(installed)
    return installed
