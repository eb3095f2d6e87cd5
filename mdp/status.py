"""``mmi.status``: the one schema of what a broker reports.

The answer is a msgpack map::

    {"broker": {"endpoint", "pid", "host", "version", "uptime_s", "instance"?},
     "services": {name: {"queue": n, "queue_bytes"?: n,
                         "workers": [{"identity", "state", "host", "pid", "version",
                                      "served", "uptime_s", "failures"?, "queued"?,
                                      "output"?}],
                         "counters"?: {"requests", "replies", "errors": {code: n},
                                       "expired", "requeued", "bounced", "poisoned"?,
                                       "coalesced"?},
                         "histograms"?: {"queue_seconds"?: H, "work_seconds"?: H},
                         "info"?: {"content_type", "fields": [[name, kind, required, doc]],
                                   "doc"}}},
     "counters": {"requests", "replies", "errors", "expired", "requeued", "bounced",
                  "dropped", "undeliverable", "refused", "poisoned"?, "coalesced"?}}

where ``H = {"le": [upper bounds, seconds, ascending, the last +inf], "counts": [per
bucket, not cumulative], "sum": seconds, "count": n}``. Queue time runs from a request's
arrival to its dispatch; work time from its dispatch to the worker's reply, both on the
broker's own clock. ``queue_bytes`` is the bytes of the queued requests' bodies (the
broker's ``--max-queue-bytes`` bounds their sum over its services). Keys marked ``?`` may
be absent (a broker of another version); a broker-wide counter that is absent reads as 0.

Each record is a small frozen dataclass with ``to_wire()`` and ``from_wire()``.
``from_wire`` takes the map as it came off the wire: it checks every type, ignores keys it
does not know (a newer broker) and raises :class:`~mdp.errors.ProtocolError` naming the
field that is wrong. Asking a broker for its status is :mod:`mdp.statusfetch`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from mdp.errors import ProtocolError

SERVING_STATES = frozenset({"idle", "busy", "away"})
"""Worker states in which a broker can hand the worker requests (now or soon)."""

MAX_BUCKETS = 64
T = TypeVar("T")
_EMPTY_MAP: Mapping[Any, Any] = {}
_EMPTY_LIST: Sequence[Any] = ()


# --- reading checked fields ------------------------------------------------------------------

def _bad(path: str, value: Any, expected: str) -> ProtocolError:
    return ProtocolError(f"mmi.status: {path} is not {expected}: {value!r:.60}")


def _map(value: Any, path: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _bad(path or "the answer", value, "a map")
    return value


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(path, value, "a count")
    return value


def _seconds(value: Any, path: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            or value < 0):
        raise _bad(path, value, "a number of seconds")
    return float(value)


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, value, "a string")
    return value


def _flag(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(path, value, "a boolean")
    return value


def _list(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise _bad(path, value, "a list")
    return value


def _example(value: Any, path: str) -> dict[str, Any]:
    """A request map: string keys, any values."""
    if not (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
        raise _bad(path, value, "a request map")
    return dict(value)


def _need(data: Mapping[Any, Any], key: str, path: str,
          read: Callable[[Any, str], T]) -> T:
    """A key every broker sends: absent is an error."""
    if key not in data:
        raise ProtocolError(f"mmi.status: {path}{key} is missing")
    return read(data[key], path + key)


def _may(data: Mapping[Any, Any], key: str, path: str, read: Callable[[Any, str], T],
         default: T) -> T:
    """A key some brokers send: absent is ``default``."""
    return read(data[key], path + key) if key in data else default


# --- the records -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Histogram:
    """Bucket counts as a broker keeps them: ``counts[i]`` observations <= ``le[i]`` and
    above ``le[i-1]`` (not cumulative); the last bound is +inf."""

    le: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float = 0.0
    count: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"le": list(self.le), "counts": list(self.counts), "sum": self.sum,
                "count": self.count}

    @classmethod
    def from_wire(cls, data: Any, path: str = "histogram") -> Histogram:
        data = _map(data, path)
        where = path + "."
        le = _need(data, "le", where, _list)
        counts = _need(data, "counts", where, _list)
        if not 1 <= len(le) <= MAX_BUCKETS or len(le) != len(counts):
            raise _bad(where + "counts", counts, f"one count per bound ({len(le)})")
        bounds: list[float] = []
        for i, bound in enumerate(le):
            if isinstance(bound, bool) or not isinstance(bound, int | float) \
                    or math.isnan(bound) or (bounds and bound <= bounds[-1]):
                raise _bad(f"{where}le[{i}]", bound, "a bound above the one before")
            bounds.append(float(bound))
        if bounds[-1] != math.inf:
            raise _bad(where + "le", le, "a list of bounds ending with +inf")
        buckets = tuple(_count(c, f"{where}counts[{i}]") for i, c in enumerate(counts))
        total = _need(data, "count", where, _count)
        if total != sum(buckets):
            raise _bad(where + "count", total, f"the sum of the counts ({sum(buckets)})")
        return cls(tuple(bounds), buckets, _need(data, "sum", where, _seconds), total)

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


_READERS: dict[str, Callable[[Any, str], Any]] = {"str": _text, "int": _count,
                                                  "float": _seconds}


def _plain_from_wire(cls: type, data: Any, path: str) -> dict[str, Any]:
    """The plain fields of record ``cls`` (annotated ``str``, ``int`` for a count or
    ``float`` for seconds), each under its own key in the map ``data``; a field with no
    default must be there. Other fields are the record's own to read."""
    data, where = _map(data, path), path + "."
    values: dict[str, Any] = {}
    for f in fields(cls):
        read = _READERS.get(str(f.type))
        if read is not None and (f.name in data or f.default is MISSING):
            values[f.name] = _need(data, f.name, where, read)
    return values


def _plain_to_wire(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record) if str(f.type) in _READERS}


@dataclass(frozen=True, slots=True)
class Counters:
    """A broker's totals since it started."""

    requests: int = 0
    replies: int = 0
    errors: int = 0
    expired: int = 0
    requeued: int = 0
    bounced: int = 0
    dropped: int = 0  # malformed or unexpected input
    undeliverable: int = 0  # replies to clients that had gone
    refused: int = 0  # messages a CURVE key's role does not allow
    poisoned: int = 0  # requests given up after workers were lost running them
    coalesced: int = 0  # requests attached to a running one with the same key

    def to_wire(self) -> dict[str, Any]:
        return _plain_to_wire(self)

    @classmethod
    def from_wire(cls, data: Any, path: str = "counters") -> Counters:
        return cls(**_plain_from_wire(cls, data, path))


@dataclass(frozen=True, slots=True)
class ServiceCounters:
    """One service's totals at one broker; ``errors`` counts error replies by code."""

    requests: int = 0
    replies: int = 0
    expired: int = 0
    requeued: int = 0
    bounced: int = 0
    poisoned: int = 0
    coalesced: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {**_plain_to_wire(self), "errors": dict(self.errors)}

    @classmethod
    def from_wire(cls, data: Any, path: str = "counters") -> ServiceCounters:
        counts = _plain_from_wire(cls, data, path)
        raw = _may(_map(data, path), "errors", path + ".", _map, _EMPTY_MAP)
        errors = {_text(code, f"{path}.errors key"): _count(n, f"{path}.errors.{code}")
                  for code, n in raw.items()}
        return cls(**counts, errors=errors)

    @property
    def failed(self) -> int:
        """Error replies of every code."""
        return sum(self.errors.values())


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker as one broker sees it."""

    identity: str
    state: str  # idle, busy, away, draining (a newer broker may add states)
    host: str
    pid: int
    version: str
    served: int
    uptime_s: float
    failures: int = 0  # error replies that were its fault (mdp.errors.a_worker_failed)
    queued: int = 0
    output: str = ""  # what its results depend on (mdp.handlers); "" from older workers

    @property
    def serving(self) -> bool:
        return self.state in SERVING_STATES

    def to_wire(self) -> dict[str, Any]:
        return _plain_to_wire(self)

    @classmethod
    def from_wire(cls, data: Any, path: str = "worker") -> WorkerStatus:
        return cls(**_plain_from_wire(cls, data, path))


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One request field a service declares: ``[name, kind, required, doc]`` on the wire."""

    name: str
    kind: str  # free text; a kind that starts with "bytes" holds binary data
    required: bool = False
    doc: str = ""

    @property
    def is_bytes(self) -> bool:
        return self.kind.startswith("bytes")

    def to_wire(self) -> list[Any]:
        return [self.name, self.kind, self.required, self.doc]

    @classmethod
    def from_wire(cls, data: Any, path: str = "field") -> FieldInfo:
        items = _list(data, path)
        if len(items) < 2:
            raise _bad(path, data, "[name, kind, required, doc]")
        return cls(_text(items[0], path + "[0]"), _text(items[1], path + "[1]"),
                   _flag(items[2], path + "[2]") if len(items) > 2 else False,
                   _text(items[3], path + "[3]") if len(items) > 3 else "")


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What a service's workers say of it: the content type of its replies ("" when the
    request chooses it), its request fields, a line of documentation, and a small request
    that works (None when they give none)."""

    content_type: str = ""
    fields: tuple[FieldInfo, ...] = ()
    doc: str = ""
    example: Mapping[str, Any] | None = field(default=None, hash=False)

    @property
    def bytes_fields(self) -> frozenset[str]:
        """Top-level request fields that hold binary data."""
        return frozenset(f.name for f in self.fields if f.is_bytes)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"content_type": self.content_type,
                                "fields": [f.to_wire() for f in self.fields], "doc": self.doc}
        if self.example is not None:
            wire["example"] = dict(self.example)
        return wire

    @classmethod
    def from_wire(cls, data: Any, path: str = "info") -> ServiceInfo:
        data, where = _map(data, path), path + "."
        raw = _may(data, "fields", where, _list, _EMPTY_LIST)
        return cls(_may(data, "content_type", where, _text, ""),
                   tuple(FieldInfo.from_wire(f, f"{where}fields[{i}]")
                         for i, f in enumerate(raw)),
                   _may(data, "doc", where, _text, ""),
                   _may(data, "example", where, _example, None))


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service at one broker. ``counters`` and the histograms are None when the
    broker does not report them; ``info`` is None until a worker has described it."""

    name: str
    queue: int
    workers: tuple[WorkerStatus, ...] = ()
    queue_bytes: int | None = None  # bodies of the queued requests; None: not reported
    counters: ServiceCounters | None = None
    queue_seconds: Histogram | None = None
    work_seconds: Histogram | None = None
    info: ServiceInfo | None = None

    def workers_in(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)

    @property
    def serving(self) -> int:
        """Workers the broker can hand requests to (now or soon)."""
        return sum(1 for w in self.workers if w.serving)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"queue": self.queue,
                                "workers": [w.to_wire() for w in self.workers]}
        if self.queue_bytes is not None:
            wire["queue_bytes"] = self.queue_bytes
        if self.counters is not None:
            wire["counters"] = self.counters.to_wire()
        histograms = {key: hist.to_wire() for key, hist in (
            ("queue_seconds", self.queue_seconds), ("work_seconds", self.work_seconds))
            if hist is not None}
        if histograms:
            wire["histograms"] = histograms
        if self.info is not None:
            wire["info"] = self.info.to_wire()
        return wire

    @classmethod
    def from_wire(cls, name: str, data: Any, path: str = "") -> ServiceStatus:
        path = path or f"services.{name}"
        data, where = _map(data, path), path + "."
        workers = _need(data, "workers", where, _list)
        histograms = _may(data, "histograms", where, _map, _EMPTY_MAP)

        def hist(key: str) -> Histogram | None:
            return _may(histograms, key, where + "histograms.", Histogram.from_wire, None)

        return cls(
            name=name,
            queue=_need(data, "queue", where, _count),
            queue_bytes=_may(data, "queue_bytes", where, _count, None),
            workers=tuple(WorkerStatus.from_wire(w, f"{where}workers[{i}]")
                          for i, w in enumerate(workers)),
            counters=_may(data, "counters", where, ServiceCounters.from_wire, None),
            queue_seconds=hist("queue_seconds"),
            work_seconds=hist("work_seconds"),
            info=_may(data, "info", where, ServiceInfo.from_wire, None),
        )


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """Which broker answered: its endpoints, process, code version and start."""

    endpoint: str  # every endpoint it binds, space-separated
    pid: int
    host: str
    version: str
    uptime_s: float
    instance: str = ""  # differs after a restart even with the same pid

    def to_wire(self) -> dict[str, Any]:
        return _plain_to_wire(self)

    @classmethod
    def from_wire(cls, data: Any, path: str = "broker") -> BrokerInfo:
        return cls(**_plain_from_wire(cls, data, path))


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """One broker's whole ``mmi.status`` answer."""

    broker: BrokerInfo
    services: Mapping[str, ServiceStatus] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)

    def workers(self, service: str) -> tuple[WorkerStatus, ...]:
        entry = self.services.get(service)
        return entry.workers if entry else ()

    def all_workers(self) -> list[WorkerStatus]:
        return [w for s in self.services.values() for w in s.workers]

    def find(self, service: str, pid: int, host: str | None = None) -> WorkerStatus | None:
        """The worker of ``service`` with this pid (and host, when given)."""
        for worker in self.workers(service):
            if worker.pid == pid and (host is None or worker.host == host):
                return worker
        return None

    def to_wire(self) -> dict[str, Any]:
        return {"broker": self.broker.to_wire(),
                "services": {name: s.to_wire() for name, s in self.services.items()},
                "counters": self.counters.to_wire()}

    @classmethod
    def from_wire(cls, data: Any) -> BrokerStatus:
        data = _map(data, "")
        services: dict[str, ServiceStatus] = {}
        for name, entry in _need(data, "services", "", _map).items():
            if not isinstance(name, str) or not name:
                raise _bad("services key", name, "a service name")
            services[name] = ServiceStatus.from_wire(name, entry)
        return cls(_need(data, "broker", "", BrokerInfo.from_wire), services,
                   _may(data, "counters", "", Counters.from_wire, Counters()))


@dataclass(frozen=True, slots=True)
class BrokerView:
    """What asking one broker found: its status, or (``status`` None) why there is none."""

    endpoint: str
    status: BrokerStatus | None
    error: str = ""
    taken_at: float = 0.0  # time.monotonic() of the answer, for rates between two views

    @property
    def up(self) -> bool:
        return self.status is not None
