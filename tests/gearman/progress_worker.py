"""A Python DIPS worker for the door's tests: service ``py_progress`` reports what the PHP test
worker's ``php_progress`` sends (1/3, a data chunk, a warning, 3/3) and answers ``done``."""

from __future__ import annotations

import sys
from typing import Any

from mdp import handlers
from mdp.worker import prepare, serve


def handle(request: dict[str, Any]) -> bytes:
    handlers.progress(1, 3)
    handlers.send_data(b"chunk-1")
    handlers.warn("careful")
    handlers.progress(3, 3)
    return b"done"


def main() -> int:
    config = prepare(sys.argv[1:])
    return serve(config, handlers.Handler(config.service, handle))


if __name__ == "__main__":
    raise SystemExit(main())
