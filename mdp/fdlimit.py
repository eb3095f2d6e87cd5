"""File descriptors for a door's connections: the one budget both doors keep.

A door holds one descriptor per peer connection, and needs more of its own: its ZeroMQ
sockets (each with libzmq's signalling descriptors, more while it reconnects), a Redis
connection, its log, and the connections an accept burst brings in before any is looked at.
If peers may take them all, ``accept()`` fails with EMFILE over and over (asyncio logs each
failure with a traceback) and the door's own sockets cannot be made: a flood of idle peers
would silence it. So a door's connection limit is kept below the process's descriptor limit
by :data:`RESERVE`, raising the soft limit towards the hard one where that is needed (as
servers do: a service manager's soft limit is often 1024).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

RESERVE = 256  # descriptors kept for the door's own sockets and files, and an accept burst
MIN_CONNECTIONS = 16  # a door that can hold fewer peers than this cannot serve; refuse to start


@dataclass(frozen=True)
class Fit:
    """The descriptors a door's peers may take, after raising the soft limit."""

    wanted: int  # descriptors asked for, beside the reserve
    limit: int | None  # the soft RLIMIT_NOFILE after raising it; None: unlimited
    available: int  # descriptors peers may take: ``wanted``, or what the limit leaves

    def shortfall(self, what: str) -> str | None:
        """A line for the log if the limit is below what was asked for, else None."""
        if self.available >= self.wanted:
            return None
        return (f"the file-descriptor limit is {self.limit}, and {what} need {self.wanted} "
                f"descriptors beside the {RESERVE} kept for the door's own use (raise the "
                f"limit: ulimit -n, systemd's LimitNOFILE, supervisord's minfds)")


def fit(wanted: int, reserve: int = RESERVE) -> Fit:
    """Raise this process's soft descriptor limit so that ``wanted`` descriptors fit beside
    ``reserve`` (never past the hard limit), and say how many of them fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = wanted + reserve
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError):
                pass  # a limit we may not raise: work within it
    if soft == resource.RLIM_INFINITY:
        return Fit(wanted, None, wanted)
    return Fit(wanted, soft, max(0, min(wanted, soft - reserve)))
