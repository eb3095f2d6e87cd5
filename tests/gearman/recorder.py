"""A worker for the gateway's tests: service ``record`` appends ``n`` of each request it runs
to the file named by $RECORD_FILE (one line per run), sleeps ``sleep`` seconds and answers
``{"n": n, "pid": pid, "start": t}``. Counting lines counts runs."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from mdp.worker import Worker, prepare


def handle(request: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    delay = request.get("sleep", 0)
    if isinstance(delay, int | float) and 0 < delay < 10:
        time.sleep(delay)
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(f"{request.get('n')}\n")
    return {"n": request.get("n"), "pid": os.getpid(), "start": start}


def main() -> int:
    worker = Worker(prepare(sys.argv[1:]), handle)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    return worker.run()


if __name__ == "__main__":
    raise SystemExit(main())
