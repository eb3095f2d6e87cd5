"""A worker for tests: ``--service`` NAME offers a handler with deliberate faults.

The request map may hold:
  sleep: seconds to sleep before answering;
  fail: raise an exception (the worker must answer with an error and live on);
  bad_field: raise BadRequest naming this field;
  unencodable_error: true: raise an error whose reply cannot be encoded (a handler's bug);
  allocate_mb: allocate this many megabytes (to cross --max-memory-mb);
  started_file: a path to create when the handler starts (tests wait for it);
  gate_file: a path the handler waits for before it answers (at most 60 s), so that a
    test decides when a long request ends;
  reply_bytes: the reply also holds "blob", this many bytes (a big reply to a small request);
  die: true: kill the process that runs it (SIGKILL), as a crash of a native decoder on
    one malformed image would (a poisoned request).
The reply is the request plus pid, start and end (time.time()) of the handling.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from mdp import handlers
from mdp.errors import BadRequest
from mdp.worker import prepare, serve


def handle(request: dict[str, Any]) -> dict[str, Any]:
    start = time.time()
    if isinstance(request.get("started_file"), str):
        with open(request["started_file"], "w"):
            pass
    if request.get("die") is True:
        os.kill(os.getpid(), signal.SIGKILL)
    if "bad_field" in request:
        raise BadRequest("this field is wrong on purpose", str(request["bad_field"]))
    if request.get("unencodable_error") is True:
        raise BadRequest("this error's field is no text", field={1, 2})  # type: ignore[arg-type]
    if request.get("fail"):
        raise RuntimeError("failing on purpose")
    if isinstance(request.get("allocate_mb"), int):
        ballast = bytearray(request["allocate_mb"] * 1024 * 1024)
        del ballast
    if isinstance(request.get("gate_file"), str):
        gate_until = time.monotonic() + 60
        while not os.path.exists(request["gate_file"]) and time.monotonic() < gate_until:
            time.sleep(0.01)
    delay = request.get("sleep", 0)
    if isinstance(delay, int | float) and delay > 0:
        time.sleep(delay)
    reply = {**request, "pid": os.getpid(), "start": start, "end": time.time()}
    if isinstance(request.get("reply_bytes"), int):
        reply["blob"] = b"\x5a" * request["reply_bytes"]
    return reply


def main() -> int:
    config = prepare(sys.argv[1:])
    return serve(config, handlers.Handler(config.service, handle))


if __name__ == "__main__":
    raise SystemExit(main())
