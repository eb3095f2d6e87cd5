"""Rendered results, cached: in the door's memory (bounded by bytes), and in Redis for a
fleet of doors.

A result is *fresh* for ``ttl_s`` after it was rendered or last revalidated, and served
without asking anyone; it is *kept* (stale) until ``keep_s`` so that the door can ask the
workers whether its source changed (sending the source's ETag and Last-Modified, which
the entry records) instead of rendering it again. :meth:`TieredCache.lookup` returns the
entry and whether it is fresh.

A cache never fails a request: every Redis call has a short timeout, and a failure opens a
breaker that skips Redis for a while (doubling up to ``MAX_BACKOFF_S``) so an outage costs
renders, not latency; it is logged once when it starts and once when Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mdp.body import pack, unpack
from mdp.errors import ProtocolError

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
PREFIX = b"dips:img:"


@dataclass(frozen=True)
class Entry:
    """One rendered result and what the reply's headers need of it."""

    image: bytes
    content_type: str
    width: int = 0
    height: int = 0
    source_etag: str = ""
    last_modified: str = ""
    warning: str = ""  # the worker's: a damaged source rendered as far as it decoded

    @property
    def size(self) -> int:
        return len(self.image) + 200

    def validators(self) -> dict[str, str]:
        """The source's validators as the worker gave them (empty: none known)."""
        known = {"etag": self.source_etag, "last_modified": self.last_modified}
        return {name: value for name, value in known.items() if value}

    def to_bytes(self, checked_at: float | None = None) -> bytes:
        """For Redis; ``checked_at`` (unix time of the render or last revalidation) makes
        the entry's freshness travel with it. An entry with a warning is version 3 (the
        warning last); others stay version 1 or 2, which every door reads."""
        fields = [self.image, self.content_type, self.width, self.height, self.source_etag,
                  self.last_modified]
        if self.warning:
            return pack([3, *fields, checked_at if checked_at is not None else 0.0,
                         self.warning])
        if checked_at is None:
            return pack([1, *fields])
        return pack([2, *fields, checked_at])

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry | None:
        """The entry in ``data``, or None when it is not one (another program's value)."""
        found = cls.read(data)
        return None if found is None else found[0]

    @classmethod
    def read(cls, data: bytes) -> tuple[Entry, float | None] | None:
        """(entry, when it was last checked: None for a version-1 value) or None."""
        try:
            value = unpack(data)
        except ProtocolError:
            return None
        if not isinstance(value, list) or (value[:1], len(value)) not in (
                ([1], 7), ([2], 8), ([3], 9)):
            return None
        image, kind, width, height, tag, modified = value[1:7]
        checked = value[7] if len(value) >= 8 else None
        warning = value[8] if len(value) == 9 else ""
        if not (isinstance(image, bytes) and isinstance(kind, str) and isinstance(width, int)
                and isinstance(height, int) and isinstance(tag, str)
                and isinstance(modified, str) and isinstance(warning, str)
                and (checked is None or isinstance(checked, int | float))):
            return None
        return cls(image, kind, width, height, tag, modified, warning), checked


@dataclass(frozen=True)
class Cached:
    """A cache's answer: the entry, and whether it is still fresh (else: revalidate it)."""

    entry: Entry
    fresh: bool


class Cache(Protocol):
    async def get(self, key: bytes) -> Entry | None: ...
    async def put(self, key: bytes, entry: Entry) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """Least recently used entries up to ``max_bytes``; each fresh for ``ttl_s`` and kept
    (stale, for revalidation) until ``keep_s`` (default: ``ttl_s``, never less)."""

    def __init__(self, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic, keep_s: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.keep_s = max(keep_s, ttl_s)
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup_now(self, key: bytes) -> Cached | None:
        found = self._entries.get(key)
        if found is None:
            return None
        fresh_until, keep_until, entry = found
        now = self.clock()
        if keep_until < now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return Cached(entry, now <= fresh_until)

    def get_now(self, key: bytes) -> Entry | None:
        """A fresh entry only."""
        found = self.lookup_now(key)
        return found.entry if found is not None and found.fresh else None

    async def get(self, key: bytes) -> Entry | None:
        return self.get_now(key)

    async def put(self, key: bytes, entry: Entry) -> None:
        self.put_now(key, entry)

    def put_now(self, key: bytes, entry: Entry, fresh_for: float | None = None) -> None:
        """Keep ``entry``, fresh for ``fresh_for`` seconds (default ``ttl_s``)."""
        if entry.size > self.max_bytes // 4:  # one result never flushes the cache
            return
        self._drop(key)
        now = self.clock()
        fresh_for = self.ttl_s if fresh_for is None else fresh_for
        self._entries[key] = (now + fresh_for, now + self.keep_s, entry)
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= found[2].size

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class Breaker:
    """Skip a failing dependency for a growing while; log each outage once."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.open_until = 0.0
        self.backoff_s = MIN_BACKOFF_S
        self.down = False

    def allows(self) -> bool:
        return self.clock() >= self.open_until

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            log.warning("%s failed (%s: %s); serving without it, retrying with backoff",
                        self.what, type(exc).__name__, exc)
            self.down = True
            self.backoff_s = MIN_BACKOFF_S
        else:
            self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        self.open_until = self.clock() + self.backoff_s

    def succeeded(self) -> None:
        if self.down:
            log.warning("%s answers again", self.what)
        self.down = False
        self.backoff_s = MIN_BACKOFF_S
        self.open_until = 0.0


class RedisCache:
    """Entries in Redis (``SET key value PX keep``), each with the unix time it was last
    checked; every failure is only a miss."""

    def __init__(self, url: str, ttl_s: float, timeout_s: float = 0.25,
                 keep_s: float = 0.0, wall: Callable[[], float] = time.time) -> None:
        import redis.asyncio as aioredis  # the http extra; only when Redis is configured

        self.url = url
        self.ttl_s = ttl_s
        self.keep_ms = max(1, int(max(keep_s, ttl_s) * 1000))
        self.timeout_s = timeout_s
        self.wall = wall
        self.breaker = Breaker(f"redis at {url}")
        self.errors = 0
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry_on_timeout=False, health_check_interval=0)

    async def _guarded(self, call: Any) -> Any:
        if not self.breaker.allows():
            return None
        try:
            result = await asyncio.wait_for(call, self.timeout_s * 2)
        except Exception as exc:  # any failure of the cache is a miss, never the request's
            self.errors += 1
            self.breaker.failed(exc)
            return None
        self.breaker.succeeded()
        return result

    async def lookup(self, key: bytes) -> tuple[Cached, float] | None:
        """(the entry and its freshness, seconds it stays fresh) or None."""
        if not self.breaker.allows():
            return None
        data = await self._guarded(self._client.get(PREFIX + key))
        found = Entry.read(data) if isinstance(data, bytes) else None
        if found is None:
            return None
        entry, checked = found
        if checked is None:  # a version-1 value lives only for the TTL: fresh while there
            return Cached(entry, True), self.ttl_s
        left = checked + self.ttl_s - self.wall()
        return Cached(entry, left > 0), max(0.0, left)

    async def get(self, key: bytes) -> Entry | None:
        found = await self.lookup(key)
        return found[0].entry if found is not None and found[0].fresh else None

    async def put(self, key: bytes, entry: Entry) -> None:
        if self.breaker.allows():
            await self._guarded(self._client.set(PREFIX + key, entry.to_bytes(self.wall()),
                                                 px=self.keep_ms))

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a broken connection may fail; nothing to save
            log.debug("closing redis: %s", exc)


class TieredCache:
    """Memory in front of Redis: a hit in memory costs no round trip."""

    def __init__(self, memory: MemoryCache, shared: RedisCache | None) -> None:
        self.memory = memory
        self.shared = shared

    async def lookup(self, key: bytes) -> Cached | None:
        """The freshest entry of the two (memory first: a fresh one there ends the search)."""
        found = self.memory.lookup_now(key)
        if (found is not None and found.fresh) or self.shared is None:
            return found
        shared = await self.shared.lookup(key)
        if shared is None:
            return found
        cached, fresh_for = shared
        if cached.fresh or found is None:
            self.memory.put_now(key, cached.entry, fresh_for)
            return cached
        return found

    async def get(self, key: bytes) -> Entry | None:
        found = await self.lookup(key)
        return found.entry if found is not None and found.fresh else None

    async def put(self, key: bytes, entry: Entry) -> None:
        await self.memory.put(key, entry)
        if self.shared is not None:
            await self.shared.put(key, entry)

    async def close(self) -> None:
        await self.memory.close()
        if self.shared is not None:
            await self.shared.close()
