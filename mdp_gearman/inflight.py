"""What incomplete packets may hold, sans I/O: one budget of bytes across every connection,
and the deadline by which a packet must have arrived.

A packet whose header has come in and whose body has not is *in progress*: the door buffers
its body until the last byte. Without bounds, a peer that declares 32 MiB packets and sends
all but the last byte of each would hold 32 MiB per connection for as long as it liked.
Two bounds stop that:

- **a deadline per packet**: it must arrive at the link floor (``--link-floor``, the slowest
  link a big body is allowed, 10 MB/s by default) plus a grace (``--packet-grace``,
  :data:`GRACE_S` by default); else the connection
  gets ERROR ``packet_stalled`` and is closed (:func:`packet_deadline`);
- **one budget** (``--max-inflight-bytes``) of the bytes packets in progress declared, across
  every connection (:class:`InflightBudget`). A packet that does not fit waits, its
  connection not read, until the budget frees, first come first served. Waiting cannot
  deadlock: every byte of the budget is held by a packet under its deadline, which arrives
  or is cut by then, and a connection holds at most one packet in progress.

A connection that sends nothing holds nothing and is never cut: Gearman workers sleep on
idle connections for hours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

GRACE_S = 5.0  # how long any packet may take beyond its size at the link floor
DEFAULT_MAX_INFLIGHT_BYTES = 256 * 1024 * 1024


def packet_deadline(start: float, size: int, link_floor: int, grace_s: float) -> float:
    """When a packet of ``size`` body bytes whose header came at ``start`` must be whole."""
    return start + grace_s + size / link_floor


class InflightBudget:
    """Bytes that packets in progress may hold, across every connection.

    :meth:`take` reserves a packet's declared size at once if it fits and nobody waits;
    else :meth:`wait` queues a grant, called (in arrival order) when :meth:`release` frees
    enough. A waiter that leaves first is removed with :meth:`cancel`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def take(self, size: int) -> bool:
        if self._waiting or self.used + size > self.limit:
            return False
        self.used += size
        return True

    def wait(self, size: int, grant: Callable[[], None]) -> None:
        """Call ``grant`` once ``size`` bytes are reserved for it (``size`` <= limit)."""
        self._waiting.append((size, grant))

    def cancel(self, grant: Callable[[], None]) -> None:
        """Remove a waiter (compared by equality: a bound method made again is the same)."""
        kept = [(size, g) for size, g in self._waiting if g != grant]
        if len(kept) != len(self._waiting):
            self._waiting = deque(kept)
            self._grant()  # the head may have been the one that did not fit

    def release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.limit:
            size, grant = self._waiting.popleft()
            self.used += size
            grant()
