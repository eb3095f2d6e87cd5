"""A worker for tests: service NAME appends one line per request it runs to $RECORD_FILE:
``n pid start end`` (sleeping the request's ``sleep`` seconds first), and answers
``{"n": n, "pid": pid, "start": t}``. Counting lines by n counts runs; pid and times say
where and when each ran."""

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
        out.write(f"{request.get('n')} {os.getpid()} {start:.3f} {time.time():.3f}\n")
    return {"n": request.get("n"), "pid": os.getpid(), "start": start}


def main() -> int:
    worker = Worker(prepare(sys.argv[1:]), handle)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    return worker.run()


if __name__ == "__main__":
    raise SystemExit(main())
