"""Sources fetched by the worker: ``http(s)://`` from allowed origins, ``local:///`` files.

:func:`load` turns a request's ``source`` (a URL) or ``image`` (bytes) into a
:class:`Source`. Remote sources pass :mod:`renderers.sources.remote` (allow-list, address
checks on every hop, bounds, sniffing), local ones :mod:`renderers.sources.local` (roots,
no escape). Remote sources go through one per-process
:class:`~renderers.sources.cache.SourceCache`, and concurrent requests for one URL in one
process fetch it once; a local file is read where it lies, never copied into the cache (the
page cache holds it once for every process). The HTTP client is imported on the first
remote fetch, so a worker that serves local files never loads it. Errors are the
``source_*`` codes of :mod:`renderers.sources.errors`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mdp.errors import BadRequest
from renderers import fields
from renderers.decode import Blob, InMemory, sniff
from renderers.settings import Settings
from renderers.sources import local
from renderers.sources.cache import Entry, SourceCache, conditional
from renderers.sources.errors import (
    CODES,
    SourceError,
    SourceForbidden,
    SourceNotFound,
    SourceNotImage,
    SourceTimeout,
    SourceTooLarge,
)

if TYPE_CHECKING:
    from renderers.sources.remote import HttpFetcher

log = logging.getLogger(__name__)

MAX_URL_CHARS = 8192
MAX_VALIDATOR_CHARS = 1024


@dataclass(frozen=True)
class Source:
    """A source's bytes (in memory, or a local file read where it lies) and what identifies
    its version. Close it when done (``with``): a local file is held open until then."""

    blob: Blob
    etag: str | None = None
    last_modified: str | None = None
    closer: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    not_modified: bool = False  # the origin said 304 to the caller's validators: no bytes

    @classmethod
    def of(cls, data: bytes, etag: str | None = None,
           last_modified: str | None = None) -> Source:
        return cls(InMemory(data), etag, last_modified)

    @property
    def data(self) -> bytes:
        """All its bytes (a local file is read now)."""
        return self.blob.read()

    def matches(self, known: Mapping[str, str]) -> bool:
        """Whether this is the version of the source that ``known`` (the ``etag`` and
        ``last_modified`` a reply gave) describes: the ETags are equal, or where neither
        side has one, the Last-Modified dates are."""
        if self.not_modified:
            return True
        if known.get("etag") or self.etag:
            return bool(known.get("etag")) and known.get("etag") == self.etag
        return bool(known.get("last_modified")) and known.get("last_modified") == self.last_modified

    def describe(self) -> dict[str, Any]:
        """The reply's ``source`` map."""
        described: dict[str, Any] = {} if self.not_modified else {"length": self.blob.size}
        if self.etag:
            described["etag"] = self.etag
        if self.last_modified:
            described["last_modified"] = self.last_modified
        return described

    def close(self) -> None:
        if self.closer is not None:
            self.closer()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sources:
    """The fetchers and the cache of one process."""

    def __init__(
        self, http: HttpFetcher | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._http = http
        self.cache = SourceCache()
        self.clock = clock
        self.fetches = 0  # remote bodies fetched (for tests and the bench)
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()

    @property
    def http(self) -> HttpFetcher:
        """The HTTP fetcher, made (and its client imported) on first use."""
        if self._http is None:
            from renderers.sources.remote import HttpFetcher

            self._http = HttpFetcher()
        return self._http

    def load(self, url: str, limits: Settings, known: Mapping[str, str] | None = None) -> Source:
        """The source at ``url`` (``http(s)://`` or ``local:///``).

        ``known``: the validators of a version the caller holds (``etag``,
        ``last_modified``); a remote source not in this process's cache is then asked for
        conditionally, and an origin's 304 gives a source without bytes that
        :meth:`Source.matches` them (a local file is only opened: its stat is the answer).
        """
        scheme = url.partition(":")[0].lower()
        if scheme == local.SCHEME:
            return self._local(url, limits)
        if scheme in ("http", "https"):
            with self._flight(url):
                return self._remote(url, limits, known)
        raise BadRequest("source: expected an http(s):// or local:/// URL", "source")

    def _remote(self, url: str, limits: Settings,
                known: Mapping[str, str] | None = None) -> Source:
        now = self.clock()
        # An entry fetched under other origin lists is not used, not even to revalidate: the
        # fetch that replaces it checks the origin and its addresses under the lists in force.
        policy = (limits.sources_allow, limits.sources_internal)
        entry = self.cache.get(url)
        if entry is not None and entry.stamp != policy:
            entry = None
        if entry is not None and entry.fresh(now):
            self.cache.hits += 1
            return Source.of(entry.data, entry.etag, entry.last_modified)
        known = known or {}
        validators = (entry.validators() if entry is not None
                      else conditional(known.get("etag"), known.get("last_modified")))
        fetched = self.http.fetch(url, limits, validators or None)
        fresh_for = limits.source_cache_ttl
        if fetched.max_age is not None:
            fresh_for = min(fresh_for, fetched.max_age)
        if fetched.not_modified and entry is not None:
            self.cache.hits += 1
            entry.checked_at, entry.fresh_for = self.clock(), fresh_for
            return Source.of(entry.data, entry.etag, entry.last_modified)
        if fetched.not_modified:  # to the caller's validators: it holds this version
            return Source(InMemory(b""), known.get("etag"), known.get("last_modified"),
                          not_modified=True)
        self.cache.misses += 1
        self.fetches += 1
        if fresh_for > 0 or fetched.etag or fetched.last_modified:
            stored = Entry(
                fetched.data, fetched.etag, fetched.last_modified, self.clock(), fresh_for, policy
            )
            self.cache.put(url, stored, limits.source_cache_bytes)
        return Source.of(fetched.data, fetched.etag, fetched.last_modified)

    def _local(self, url: str, limits: Settings) -> Source:
        blob = local.open_file(local.find(url, limits), limits)
        try:
            head = blob.head(12)
            if sniff(head) is None:
                raise SourceNotImage(
                    f"source: not a JPEG, PNG, WebP or GIF image (starts with {head[:8]!r})"
                )
        except BaseException:
            blob.close()
            raise
        return Source(blob, blob.etag, blob.last_modified, blob.close)

    @contextmanager
    def _flight(self, key: str) -> Iterator[None]:
        """One fetch of ``key`` at a time in this process; the others then find it cached."""
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        try:
            with lock:
                yield
        finally:
            with self._flights_lock:
                if not lock.locked():
                    self._flights.pop(key, None)


_default: Sources | None = None
_default_lock = threading.Lock()


def default() -> Sources:
    """The process's sources (made on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sources()
        return _default


def if_changed(request: Mapping[str, Any]) -> dict[str, str] | None:
    """The request's ``if_changed`` validators (None: render in any case)."""
    value = request.get("if_changed")
    if value is None:
        return None
    if (
        not isinstance(value, Mapping)
        or not value
        or not set(value) <= {"etag", "last_modified"}
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_VALIDATOR_CHARS and v.isascii()
                   and v.isprintable() for v in value.values())
    ):
        raise BadRequest(
            "if_changed must be a map of etag and/or last_modified (printable ASCII, as a "
            "reply's source map gave them)", "if_changed",
        )
    return dict(value)


def from_request(
    request: Mapping[str, Any], limits: Settings, sources: Sources | None = None,
    known: Mapping[str, str] | None = None,
) -> Source:
    """The source a request names: ``source`` (a URL) or ``image`` (bytes), not both;
    ``known`` as for :meth:`Sources.load`."""
    data = fields.blob(request, "image", "")
    url = request.get("source")
    fields.one_of(("source (a URL)", url), ("image (bytes)", data), field="source")
    if data is not None:
        return Source.of(data)
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise BadRequest(f"source must be a URL of 1-{MAX_URL_CHARS} characters", "source")
    return (sources or default()).load(url, limits, known)


__all__ = [
    "CODES",
    "Source",
    "SourceError",
    "SourceForbidden",
    "SourceNotFound",
    "SourceNotImage",
    "SourceTimeout",
    "SourceTooLarge",
    "Sources",
    "conditional",
    "default",
    "from_request",
    "if_changed",
]
