"""A DIPS worker that answers what a hostile or foreign peer would, for the doors' tests.

Its READY says host ``$ODD_HOST`` when set (a host name holding newlines, say). The request's
``odd`` chooses the result:

  ``str``: a msgpack *str* whose bytes are not UTF-8 (``ff fe fd``), as a PHP msgpack worker
    sends image bytes;
  ``nested``: ``{"k": <that str>}``;
  ``key``: ``{<that str>: 1}`` (a map key that is not UTF-8);
  ``error``: a bad_request error whose message holds that str;
  ``deep``: lists nested 1,000 deep (msgpack carries them; Python's json cannot encode them);
  anything else: the request.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from mdp.errors import BadRequest
from mdp.worker import Worker, prepare

ODD = b"\xff\xfe\xfd".decode("utf-8", "surrogateescape")  # packs back as those three bytes


def handle(request: dict[str, Any]) -> Any:
    odd = request.get("odd")
    if odd == "str":
        return ODD
    if odd == "nested":
        return {"k": ODD}
    if odd == "key":
        return {ODD: 1}
    if odd == "error":
        raise BadRequest(f"cannot read {ODD}", field="odd")
    if odd == "deep":
        deep: list[Any] = []
        for _ in range(999):
            deep = [deep]
        return deep
    return request


def main() -> int:
    host = os.environ.get("ODD_HOST")
    if host:  # the worker names its host by socket.gethostname() in its READY
        socket.gethostname = lambda: host
    return Worker(prepare(sys.argv[1:]), handle).run()


if __name__ == "__main__":
    raise SystemExit(main())
