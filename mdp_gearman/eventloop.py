"""The door's event loop: uvloop where it is installed, else asyncio's own.

The door does little per job but move packets (read a SUBMIT_JOB, write JOB_CREATED, send
to a broker, read the RESULT, write WORK_COMPLETE), so the event loop's own work is a large
share of its CPU; uvloop (libuv, in C) does that part for less (``docs/GEARMAN.md``).
``--event-loop auto`` takes uvloop when it can be imported (``pip install 'dips[gearman]'``
installs it), ``uvloop`` insists on it, ``asyncio`` keeps the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mdp.errors import ConfigError

EVENT_LOOPS = ("auto", "uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> tuple[LoopFactory | None, str]:
    """For ``--event-loop choice`` (one of EVENT_LOOPS): the factory for
    :class:`asyncio.Runner` (None: the standard loop) and a name for the log. ConfigError if
    uvloop is asked for and cannot be imported."""
    if choice == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(f"--event-loop uvloop: uvloop cannot be imported ({exc}); "
                              "install it with pip install 'dips[gearman]'") from None
        return None, "asyncio (uvloop is not installed)"
    return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
