"""What a broker counts while it runs: totals and latency buckets (mutable, broker-side).

These are the broker's own accumulators; what it *reports* in ``mmi.status`` is the
schema of :mod:`mdp.status`, which also names the wire keys.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
             10.0, math.inf)


class LatencyTally:
    """Counts of observations per bucket of ``BUCKETS_S``."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        self.total += seconds
        self.count += 1

    def to_wire(self) -> dict[str, Any]:
        return {"le": list(BUCKETS_S), "counts": list(self.counts),
                "sum": round(self.total, 6), "count": self.count}


@dataclass(slots=True)
class BrokerTally:
    """The broker's totals."""

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
    coalesced: int = 0  # requests attached to one with the same coalescing key

    def to_wire(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class ServiceTally:
    """One service's totals and latency histograms."""

    requests: int = 0
    replies: int = 0
    expired: int = 0
    requeued: int = 0
    bounced: int = 0
    poisoned: int = 0  # requests given up after workers were lost running them
    coalesced: int = 0  # requests attached to one with the same coalescing key
    errors: dict[str, int] = field(default_factory=dict)
    queue_time: LatencyTally = field(default_factory=LatencyTally)
    work_time: LatencyTally = field(default_factory=LatencyTally)

    def error(self, code: str) -> None:
        if code in self.errors or len(self.errors) < 64:  # a peer cannot grow this forever
            self.errors[code] = self.errors.get(code, 0) + 1
        else:
            self.errors["other"] = self.errors.get("other", 0) + 1

    def to_wire(self) -> tuple[dict[str, Any], dict[str, Any]]:
        counters = {"requests": self.requests, "replies": self.replies,
                    "errors": dict(self.errors), "expired": self.expired,
                    "requeued": self.requeued, "bounced": self.bounced,
                    "poisoned": self.poisoned, "coalesced": self.coalesced}
        histograms = {"queue_seconds": self.queue_time.to_wire(),
                      "work_seconds": self.work_time.to_wire()}
        return counters, histograms
