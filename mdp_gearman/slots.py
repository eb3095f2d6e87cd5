"""A counting gate whose waiters are let in by priority, then in arrival order.

The gateway keeps at most ``--concurrency`` foreground jobs in DIPS; when more wait, a HIGH job
must not queue behind NORMAL and LOW ones here, before the brokers even see it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class PrioritySlots:
    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def take(self) -> bool:
        """A slot now, if one is free and nobody waits (no await: the usual case)."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def acquire(self, priority: int) -> None:
        if self.take():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # it was handed a slot just as it was cancelled
            raise

    def release(self) -> None:
        while self._waiting:
            future = heapq.heappop(self._waiting)[2]
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
