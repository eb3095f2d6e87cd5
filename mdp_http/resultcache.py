"""Rendered results, cached: in the door's memory (bounded by bytes), and in Redis for a
fleet of doors.

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

    @property
    def size(self) -> int:
        return len(self.image) + 200

    def to_bytes(self) -> bytes:
        return pack([1, self.image, self.content_type, self.width, self.height,
                     self.source_etag, self.last_modified])

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry | None:
        """The entry in ``data``, or None when it is not one (another program's value)."""
        try:
            value = unpack(data)
        except ProtocolError:
            return None
        if not (isinstance(value, list) and len(value) == 7 and value[0] == 1):
            return None
        _, image, kind, width, height, tag, modified = value
        if not (isinstance(image, bytes) and isinstance(kind, str) and isinstance(width, int)
                and isinstance(height, int) and isinstance(tag, str)
                and isinstance(modified, str)):
            return None
        return cls(image, kind, width, height, tag, modified)


class Cache(Protocol):
    async def get(self, key: bytes) -> Entry | None: ...
    async def put(self, key: bytes, entry: Entry) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """Least recently used entries up to ``max_bytes``, each kept at most ``ttl_s``."""

    def __init__(self, max_bytes: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, Entry]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_now(self, key: bytes) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if expires < self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def get(self, key: bytes) -> Entry | None:
        return self.get_now(key)

    async def put(self, key: bytes, entry: Entry) -> None:
        self.put_now(key, entry)

    def put_now(self, key: bytes, entry: Entry) -> None:
        if entry.size > self.max_bytes // 4:  # one result never flushes the cache
            return
        self._drop(key)
        self._entries[key] = (self.clock() + self.ttl_s, entry)
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= found[1].size

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
    """Entries in Redis (``SET key value PX ttl``); every failure is only a miss."""

    def __init__(self, url: str, ttl_s: float, timeout_s: float = 0.25) -> None:
        import redis.asyncio as aioredis  # the http extra; only when Redis is configured

        self.url = url
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
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

    async def get(self, key: bytes) -> Entry | None:
        if not self.breaker.allows():
            return None
        data = await self._guarded(self._client.get(PREFIX + key))
        return Entry.from_bytes(data) if isinstance(data, bytes) else None

    async def put(self, key: bytes, entry: Entry) -> None:
        if self.breaker.allows():
            await self._guarded(self._client.set(PREFIX + key, entry.to_bytes(),
                                                 px=self.ttl_ms))

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

    async def get(self, key: bytes) -> Entry | None:
        entry = self.memory.get_now(key)
        if entry is not None or self.shared is None:
            return entry
        entry = await self.shared.get(key)
        if entry is not None:
            await self.memory.put(key, entry)
        return entry

    async def put(self, key: bytes, entry: Entry) -> None:
        await self.memory.put(key, entry)
        if self.shared is not None:
            await self.shared.put(key, entry)

    async def close(self) -> None:
        await self.memory.close()
        if self.shared is not None:
            await self.shared.close()
