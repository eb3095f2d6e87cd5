"""A worker program for the poisoned-request tests: ``--service`` NAME echoes its request,
except that a request holding ``"die": true`` kills the process that runs it (SIGKILL, as a
crash of a native decoder on one malformed image would), and ``"sleep"`` waits that many
seconds first. The reply is the request plus the worker's pid.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from mdp import handlers
from mdp.worker import prepare, serve


def handle(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("die") is True:
        os.kill(os.getpid(), signal.SIGKILL)
    delay = request.get("sleep", 0)
    if isinstance(delay, int | float) and delay > 0:
        time.sleep(delay)
    return {**request, "pid": os.getpid()}


def main() -> int:
    config = prepare(sys.argv[1:])
    return serve(config, handlers.Handler(config.service, handle))


if __name__ == "__main__":
    raise SystemExit(main())
