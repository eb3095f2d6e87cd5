"""A worker for fault harnesses: service NAME writes ``S n pid t`` to $RECORD_FILE when it
starts a request and ``E n pid t`` when it ends it (one ``write`` each, O_APPEND), so that
counting ``S`` lines by n counts runs, also of requests whose worker died in them. The
request map may hold ``n`` (any value, written as is), ``sleep`` (seconds, below 10) and
``die`` (true: SIGKILL the process once the start is written: a poisoned request). The
reply is ``{"n": n, "pid": pid, "start": t}``. The tests start it with
``clusterkit.Cluster.recorder`` and read it with ``clusterkit.recorded``."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from mdp import handlers
from mdp.worker import prepare, serve


def _write(line: str) -> None:
    fd = os.open(os.environ["RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def handle(request: dict[str, Any]) -> dict[str, Any]:
    n = request.get("n")
    start = time.time()
    _write(f"S {n} {os.getpid()} {start:.4f}\n")
    if request.get("die") is True:
        os.kill(os.getpid(), signal.SIGKILL)
    delay = request.get("sleep", 0)
    if isinstance(delay, int | float) and 0 < delay < 10:
        time.sleep(delay)
    _write(f"E {n} {os.getpid()} {time.time():.4f}\n")
    return {"n": n, "pid": os.getpid(), "start": start}


def main() -> int:
    config = prepare(sys.argv[1:])
    return serve(config, handlers.Handler(config.service, handle))


if __name__ == "__main__":
    raise SystemExit(main())
