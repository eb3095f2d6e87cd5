"""The image server's own counters: cache hits and misses, 304s, renders, coalesced requests,
revalidations, damaged sources rendered, and slow origins (timed out, held, at their bound).

Requests coalesced by the brokers (one render for identical requests from any door) and
poisoned requests are the brokers' counters in ``mmi.status`` and reach Prometheus as
``dips_broker_coalesced_total`` and ``dips_broker_poisoned_total``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class ImageMetrics:
    """Counters of the image URLs, on the gateway's registry; :meth:`snapshot` for the
    dashboard."""

    def __init__(self, registry: CollectorRegistry,
                 held: Callable[[], int] | None = None) -> None:
        self.hits = Counter("dips_http_cache_hits", "Image requests answered from a cache",
                            ["tier"], registry=registry)
        self.misses = Counter("dips_http_cache_misses", "Image requests no cache could answer",
                              registry=registry)
        self.not_modified = Counter("dips_http_not_modified", "Image requests answered 304 "
                                    "(If-None-Match) without rendering", registry=registry)
        self.renders = Counter("dips_http_renders", "Image requests sent to the fleet",
                               ["service"], registry=registry)
        self.coalesced = Counter("dips_http_coalesced", "Image requests that waited for an "
                                 "identical one in flight at this door", registry=registry)
        self.cache_errors = Counter("dips_http_cache_errors", "Failed calls to the shared "
                                    "cache (each only cost a render)", registry=registry)
        self.revalidated = Counter("dips_http_revalidated", "Cached results past their TTL "
                                   "whose source the workers checked: unchanged (kept, not "
                                   "rendered) or changed (rendered again)", ["outcome"],
                                   registry=registry)
        self.damaged = Counter("dips_http_damaged_sources", "Renders whose source was "
                               "damaged or truncated and rendered as far as it decoded "
                               "(the reply says so in X-Image-Warning)", registry=registry)
        self.origin_timeouts = Counter("dips_http_origin_timeouts", "Renders answered "
                                       "source_timeout by a worker (the origin did not send "
                                       "the source within DIPS_SOURCE_TIMEOUT)",
                                       registry=registry)
        self.origin_refused = Counter("dips_http_origin_refused", "Image requests answered "
                                      "at once for their origin: held after timeouts "
                                      "(--origin-hold; 504 source_timeout) or at "
                                      "--origin-concurrency (busy; 503 overloaded)",
                                      ["reason"], registry=registry)
        if held is not None:
            Gauge("dips_http_origins_held", "Origins whose requests are answered at once "
                  "now (--origin-hold)", registry=registry).set_function(held)
        self._counts = {"hits": 0, "misses": 0, "not_modified": 0, "renders": 0,
                        "coalesced": 0, "cache_errors": 0, "revalidated": 0, "damaged": 0,
                        "origin_timeouts": 0, "origin_refused": 0}
        self._series: dict[tuple[str, str | None], Any] = {}  # labelled once, then at hand

    def count(self, what: str, label: str | None = None) -> None:
        self._counts[what] += 1
        series = self._series.get((what, label))
        if series is None:
            metric = getattr(self, what)
            series = self._series[(what, label)] = (
                metric.labels(label) if label is not None else metric)
        series.inc()

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)
