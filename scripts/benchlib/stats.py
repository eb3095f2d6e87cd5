"""Figures: one measured configuration, the median of its repetitions."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchlib.procs import BenchError, Child

SYNC = "sync"
PIPE = "pipelined"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted ``values`` (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Shape:
    clients: int
    workers: int

    def __str__(self) -> str:
        return f"{self.clients}/{self.workers}"


@dataclass
class Run:
    """One timed window of every client of a configuration."""

    rate: float
    p50_us: float | None
    p99_us: float | None
    errors: int


@dataclass
class Figure:
    """A configuration's figures: the median of its runs."""

    system: str
    mode: str
    size: int
    shape: Shape
    runs: list[Run] = field(default_factory=list)
    note: str = ""

    @property
    def key(self) -> tuple[str, int, Shape]:
        return (self.mode, self.size, self.shape)

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs) if self.runs else float("nan")

    def _median(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return statistics.median(values) if values else None

    @property
    def p50_us(self) -> float | None:
        return self._median("p50_us")

    @property
    def p99_us(self) -> float | None:
        return self._median("p99_us")

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "mode": self.mode, "size": self.size,
                "shape": str(self.shape), "rate": self.rate, "p50_us": self.p50_us,
                "p99_us": self.p99_us, "errors": self.errors,
                "runs": [round(r.rate, 1) for r in self.runs], "note": self.note}


def combine(results: list[dict[str, Any]]) -> Run:
    """All clients' results of one window: total rate, merged latency percentiles."""
    count = sum(int(r["count"]) for r in results)
    elapsed = max(float(r["elapsed"]) for r in results)
    latencies = [x for r in results for x in r["lat_us"]]
    p50 = percentile(latencies, 50) if latencies else None
    p99 = percentile(latencies, 99) if latencies else None
    errors = sum(int(r["errors"]) for r in results)
    return Run(count / elapsed if elapsed > 0 else 0.0, p50, p99, errors)


def timed_window(clients: list[Child], duration_s: float, lead_s: float = 0.1
                 ) -> list[dict[str, Any]]:
    """Start every client at the same moment for ``duration_s``; their RESULT maps."""
    start = time.time() + lead_s
    for child in clients:
        child.tell(f"GO {start:.6f} {start + duration_s:.6f}")
    results = []
    for child in clients:
        text = child.expect("RESULT", duration_s + lead_s + 60)
        try:
            results.append(json.loads(text))
        except ValueError as exc:
            raise BenchError(f"{child.name} sent a bad RESULT line: {text[:80]!r}") from exc
    return results
