"""A small per-process cache of fetched sources, bounded by bytes, keyed by URL.

So that five sizes of one source asked for in a row fetch it once per worker. An entry is
used as it is for ``source_cache_ttl`` seconds (or the origin's shorter ``max-age``); after
that it is revalidated with the origin's ETag or Last-Modified (a 304 costs no body), or
fetched again when the origin gave neither. Local files are checked by their stat.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class Entry:
    """One cached source."""

    data: bytes
    etag: str | None
    last_modified: str | None
    checked_at: float  # monotonic time of the last fetch or revalidation
    fresh_for: float  # seconds after checked_at that it is used without asking
    # local files: (mtime_ns, size, inode, ctime_ns); remote: the origin lists
    stamp: Hashable = None

    def fresh(self, now: float) -> bool:
        return now - self.checked_at < self.fresh_for

    def validators(self) -> dict[str, str]:
        return conditional(self.etag, self.last_modified)


def conditional(etag: str | None, last_modified: str | None) -> dict[str, str]:
    """The request headers that ask an origin for a source only if it is not the version
    with these validators."""
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    return headers


class SourceCache:
    """Least recently used entries go first once ``max_bytes`` is exceeded."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: Entry, max_bytes: int) -> None:
        """Keep ``entry`` unless it alone would take more than half the cache."""
        with self._lock:
            self._drop(key)
            if len(entry.data) > max_bytes // 2:
                return
            self._entries[key] = entry
            self._bytes += _charge(key, entry)
            while self._bytes > max_bytes and self._entries:
                oldest = next(iter(self._entries))
                self._drop(oldest)

    def forget(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= _charge(key, entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


ENTRY_OVERHEAD = 400  # bytes an entry costs beyond its data and key (objects, dict slot)


def _charge(key: str, entry: Entry) -> int:
    """What an entry is counted as: its data, its key (a URL of up to 8 KiB), its
    validators (an origin's headers) and its bookkeeping, so that many tiny sources under
    long URLs cannot outgrow the bound."""
    return (len(entry.data) + len(key) + len(entry.etag or "") + len(entry.last_modified or "")
            + ENTRY_OVERHEAD)
