"""A worker for tests: ``--service`` NAME offers a handler with deliberate faults.

The request map may hold:
  sleep: seconds to sleep before answering;
  fail: raise an exception (the worker must answer with an error and live on);
  bad_field: raise BadRequest naming this field.
The reply is the request plus pid, start and end (time.time()) of the handling.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

from mdp.clock import LOG_FORMAT
from mdp.errors import BadRequest
from mdp.worker import Worker, parse_args


def handle(request: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    if "bad_field" in request:
        raise BadRequest("this field is wrong on purpose", str(request["bad_field"]))
    if request.get("fail"):
        raise RuntimeError("failing on purpose")
    delay = request.get("sleep", 0)
    if isinstance(delay, int | float) and delay > 0:
        time.sleep(delay)
    return {**request, "pid": os.getpid(), "start": start, "end": time.time()}


def main() -> int:
    config, level = parse_args(sys.argv[1:])
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    worker = Worker(config, handle)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    return worker.run()


if __name__ == "__main__":
    raise SystemExit(main())
