"""Run a blocking call with a hard deadline, so that no broker can hang mdpctl.

MDPClient has its own timeouts; this is the backstop when a call does not return in
time anyway (say, while no broker can even be connected to).  The call runs in a
daemon thread; when the deadline passes the thread is abandoned, and it cannot keep
the process alive at exit.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from mdpctl.errors import Unreachable, WaitTimeout

T = TypeVar("T")


def call_bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """``fn()``'s result or exception; WaitTimeout when it runs past ``timeout_s``."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"mdpctl {what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if failure:
        raise failure[0]
    if not outcome:
        raise WaitTimeout(f"{what} did not finish within {timeout_s:g} s")
    return outcome[0]


def check_listening(endpoint: str, timeout_s: float) -> None:
    """Raise Unreachable unless something accepts TCP connections at ``tcp://HOST:PORT``."""
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Unreachable(f"{endpoint}: {reason}") from exc
