"""A worker for tests whose handler holds the GIL in C: ``{"hold_gil": SECONDS}`` calls libc's
``usleep`` through ``ctypes.PyDLL``, which (unlike ``ctypes.CDLL``) keeps the GIL for the
whole call, as a C extension that never releases it does (``re`` backtracking, a ``sort`` or
big-integer arithmetic on huge inputs, a large ``json`` document). No other thread of the
process runs meanwhile. The reply is ``{"pid": ..., "held": SECONDS}``.

``--yields-gil`` makes the handler declare, falsely, that it never holds the GIL for long
(``mdp.handlers.YIELDS_GIL``), as a provider that declared it without measuring would."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from typing import Any

from mdp import handlers
from mdp.worker import prepare, serve

LIBC = ctypes.PyDLL(ctypes.util.find_library("c"))


def handle(request: dict[str, Any]) -> dict[str, Any]:
    seconds = request.get("hold_gil", 0)
    start = time.monotonic()
    if isinstance(seconds, int | float) and 0 < seconds <= 60:
        LIBC.usleep(int(seconds * 1_000_000))
    return {"pid": os.getpid(), "held": time.monotonic() - start}


def main() -> int:
    argv = sys.argv[1:]
    declared = "--yields-gil" in argv
    config = prepare([arg for arg in argv if arg != "--yields-gil"])
    return serve(config, handlers.Handler(config.service, handle, yields_gil=declared))


if __name__ == "__main__":
    raise SystemExit(main())
