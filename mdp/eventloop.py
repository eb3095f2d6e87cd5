"""The doors' event loop: uvloop where it is installed, else asyncio's own.

A door does little per call but move bytes (read a request, send it to a broker, read the
reply, write it back), so the event loop's own work is a large share of its CPU; uvloop
(libuv, in C) does that part for less (``docs/GEARMAN.md``, ``docs/HTTP.md``).
``--event-loop auto`` takes uvloop when it can be imported (the doors' extras install it),
``uvloop`` insists on it, ``asyncio`` keeps the standard loop. The core never imports
uvloop: only a door that asks for it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mdp.errors import ConfigError

EVENT_LOOPS = ("auto", "uvloop", "asyncio")
EVENT_LOOP_HELP = ("the event loop: uvloop (less CPU per call) or asyncio's own; auto takes "
                   "uvloop when it is installed")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def check_event_loop(choice: str) -> None:
    """ConfigError naming ``--event-loop`` when ``choice`` is not one of EVENT_LOOPS."""
    if choice not in EVENT_LOOPS:
        raise ConfigError(f"--event-loop is one of {', '.join(EVENT_LOOPS)}, not {choice!r}")


def loop_factory(choice: str, extra: str) -> tuple[LoopFactory | None, str]:
    """For ``--event-loop choice`` (one of EVENT_LOOPS): the factory for
    :class:`asyncio.Runner` (None: the standard loop) and a name for the log. ConfigError if
    uvloop is asked for and cannot be imported, naming the package ``extra`` that brings it
    (``dips[gearman]``, say)."""
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(f"--event-loop uvloop: uvloop cannot be imported ({exc}); "
                              f"install it with pip install '{extra}'") from None
        return None, "asyncio (uvloop is not installed)"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
