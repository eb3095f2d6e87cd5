"""A service's queue of requests: three priorities, FIFO within each, starvation bounded.

Higher priorities are served first. A priority that is passed over ``STARVE_LIMIT`` times
in a row while it has requests waiting gets the next turn, so low requests still finish
under a flood of high ones. No sockets, no clock: the dispatcher owns the requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

STARVE_LIMIT = 8  # turns a waiting priority may be passed over in a row


class _Prioritised(Protocol):
    priority: int


T = TypeVar("T", bound=_Prioritised)


class ServiceQueue(Generic[T]):
    """Requests waiting for a worker, by priority (-1 low, 0 normal, 1 high)."""

    __slots__ = ("_levels", "_passed", "length")

    def __init__(self) -> None:
        self._levels: tuple[deque[T], deque[T], deque[T]] = (deque(), deque(), deque())
        self._passed = [0, 0, 0]  # turns each level was passed over while waiting
        self.length = 0  # how many wait (what len() says; read on hot paths, no call)

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        return self.length > 0

    def __iter__(self) -> Iterator[T]:
        high, normal, low = self._levels[2], self._levels[1], self._levels[0]
        yield from high
        yield from normal
        yield from low

    def append(self, item: T) -> None:
        self._levels[item.priority + 1].append(item)
        self.length += 1

    def appendleft(self, item: T) -> None:
        """Put an item back at the head of its priority (a requeued request)."""
        self._levels[item.priority + 1].appendleft(item)
        self.length += 1

    def popleft(self) -> T:
        """The next item to serve; IndexError when empty."""
        low, normal, high = self._levels
        if not low and not high:  # the common case: one priority in use
            item = normal.popleft()
            self.length -= 1
            return item
        level = self._choose()
        self.length -= 1
        return self._levels[level].popleft()

    def _choose(self) -> int:
        waiting = [i for i in (2, 1, 0) if self._levels[i]]
        if not waiting:
            raise IndexError("pop from an empty queue")
        chosen = waiting[0]
        for level in reversed(waiting):  # the lowest starved level first
            if self._passed[level] >= STARVE_LIMIT:
                chosen = level
                break
        for level in waiting:
            self._passed[level] = 0 if level == chosen else self._passed[level] + 1
        return chosen

    def remove_if(self, drop: Callable[[T], bool]) -> list[T]:
        """Remove and return every item for which ``drop`` is true (order kept)."""
        removed: list[T] = []
        for i, level in enumerate(self._levels):
            if not level:
                continue
            keep: deque[T] = deque()
            for item in level:
                (removed if drop(item) else keep).append(item)
            self._levels[i].clear()  # type: ignore[union-attr]
            self._levels[i].extend(keep)  # type: ignore[union-attr]
        self.length -= len(removed)
        return removed

    def head_arrivals(self) -> Iterator[T]:
        """The first item of each priority, highest first (for the grace check)."""
        for level in (2, 1, 0):
            if self._levels[level]:
                yield self._levels[level][0]
