"""The brokers' ``mmi.status`` maps, read defensively into small typed views (no I/O).

A status map comes off the wire: every field is checked for its type and anything odd is
read as absent, never trusted. Fields that core v2 adds (per-service counters and
histograms, per-worker failures, the broker instance id) are optional: a view built from an
older broker simply has none of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_BUCKETS = 64
MAX_CODES = 32


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: Any) -> int:
    """A non-negative integer, or 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if not math.isfinite(value) or value < 0:
        return 0
    return int(value)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def _text(value: Any, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


@dataclass(frozen=True)
class Histogram:
    """Bucket counts as the brokers keep them: ``counts[i]`` observations <= ``le[i]``
    and above ``le[i-1]`` (not cumulative); the last bound is +Inf."""

    le: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    @classmethod
    def parse(cls, value: Any) -> Histogram | None:
        """The histogram in ``value``, or None when it is absent or malformed."""
        data = _map(value)
        le, counts = data.get("le"), data.get("counts")
        if not isinstance(le, Sequence) or not isinstance(counts, Sequence):
            return None
        if isinstance(le, str | bytes) or isinstance(counts, str | bytes):
            return None
        if not 1 <= len(le) <= MAX_BUCKETS or len(le) != len(counts):
            return None
        bounds: list[float] = []
        for bound in le:
            if isinstance(bound, bool) or not isinstance(bound, int | float) or math.isnan(bound):
                return None
            if bounds and bound <= bounds[-1]:
                return None
            bounds.append(float(bound))
        if bounds[-1] != math.inf:
            return None
        buckets = tuple(_count(c) for c in counts)
        return cls(tuple(bounds), buckets, _seconds(data.get("sum")), sum(buckets))

    def cumulative(self) -> list[int]:
        total, out = 0, []
        for count in self.counts:
            total += count
            out.append(total)
        return out

    def minus(self, earlier: Histogram | None) -> Histogram:
        """The observations made since ``earlier`` (self when the bounds differ or it reset)."""
        if earlier is None or earlier.le != self.le or earlier.count > self.count:
            return self
        counts = tuple(max(0, a - b) for a, b in zip(self.counts, earlier.counts, strict=True))
        return Histogram(self.le, counts, max(0.0, self.sum - earlier.sum), sum(counts))

    def plus(self, other: Histogram) -> Histogram:
        """Both together (same bounds); self when the bounds differ."""
        if other.le != self.le:
            return self
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Histogram(self.le, counts, self.sum + other.sum, self.count + other.count)

    def quantile(self, q: float) -> float | None:
        """Prometheus's ``histogram_quantile``: linear within the bucket; None when empty."""
        if self.count == 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, total in zip(self.le, self.cumulative(), strict=True):
            if total >= rank and total > 0:
                if bound == math.inf:
                    return lower
                inside = total - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, total
        return lower


@dataclass(frozen=True)
class WorkerView:
    """One worker as one broker sees it."""

    service: str
    identity: str
    state: str
    host: str
    pid: int
    version: str
    served: int
    uptime_s: float
    failures: int | None = None  # core v2
    queued: int | None = None  # core v2


@dataclass(frozen=True)
class ServiceView:
    """One service at one broker."""

    name: str
    queue: int
    workers: tuple[WorkerView, ...]
    requests: int | None = None  # the per-service counters are core v2: None before
    replies: int | None = None
    errors: Mapping[str, int] = field(default_factory=dict)
    expired: int | None = None
    requeued: int | None = None
    bounced: int | None = None
    queue_seconds: Histogram | None = None
    work_seconds: Histogram | None = None

    def workers_in(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)


@dataclass(frozen=True)
class BrokerView:
    """What one poll of one broker found: ``up`` False with ``error`` when it did not answer."""

    endpoint: str
    up: bool
    taken_at: float
    error: str = ""
    version: str = ""
    host: str = ""
    pid: int = 0
    instance: str = ""
    uptime_s: float = 0.0
    counters: Mapping[str, int] = field(default_factory=dict)
    services: Mapping[str, ServiceView] = field(default_factory=dict)

    @classmethod
    def down(cls, endpoint: str, taken_at: float, error: str) -> BrokerView:
        return cls(endpoint, False, taken_at, error=error)


def parse_status(endpoint: str, status: Any, taken_at: float) -> BrokerView:
    """Read one broker's ``mmi.status`` map; fields of the wrong type count as absent."""
    if not isinstance(status, Mapping):
        return BrokerView.down(endpoint, taken_at, "mmi.status reply is not a map")
    broker = _map(status.get("broker"))
    counters = {_text(k, 40): _count(v) for k, v in _map(status.get("counters")).items()
                if isinstance(k, str) and not isinstance(v, Mapping)}
    services = {}
    for name, entry in _map(status.get("services")).items():
        if isinstance(name, str) and name:
            services[name[:200]] = _service(name[:200], _map(entry))
    return BrokerView(
        endpoint=endpoint,
        up=True,
        taken_at=taken_at,
        version=_text(broker.get("version")),
        host=_text(broker.get("host")),
        pid=_count(broker.get("pid")),
        instance=_text(broker.get("instance"), 64),
        uptime_s=_seconds(broker.get("uptime_s")),
        counters=counters,
        services=services,
    )


def _optional_count(data: Mapping[str, Any], key: str) -> int | None:
    return _count(data[key]) if key in data else None


def _service(name: str, entry: Mapping[str, Any]) -> ServiceView:
    raw_workers = entry.get("workers")
    workers = tuple(
        _worker(name, _map(w)) for w in (raw_workers if isinstance(raw_workers, list) else ())
    )
    counters = _map(entry.get("counters"))
    errors = {
        _text(code, 40): _count(n)
        for code, n in list(_map(counters.get("errors")).items())[:MAX_CODES]
        if isinstance(code, str)
    }
    histograms = _map(entry.get("histograms"))
    return ServiceView(
        name=name,
        queue=_count(entry.get("queue")),
        workers=workers,
        requests=_optional_count(counters, "requests"),
        replies=_optional_count(counters, "replies"),
        errors=errors,
        expired=_optional_count(counters, "expired"),
        requeued=_optional_count(counters, "requeued"),
        bounced=_optional_count(counters, "bounced"),
        queue_seconds=Histogram.parse(histograms.get("queue_seconds")),
        work_seconds=Histogram.parse(histograms.get("work_seconds")),
    )


def _worker(service: str, entry: Mapping[str, Any]) -> WorkerView:
    return WorkerView(
        service=service,
        identity=_text(entry.get("identity"), 64),
        state=_text(entry.get("state"), 20) or "unknown",
        host=_text(entry.get("host")),
        pid=_count(entry.get("pid")),
        version=_text(entry.get("version")),
        served=_count(entry.get("served")),
        uptime_s=_seconds(entry.get("uptime_s")),
        failures=_optional_count(entry, "failures"),
        queued=_optional_count(entry, "queued"),
    )
