"""Figures: one measured configuration, the median of its repetitions."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchlib.procs import BenchError, Child, CpuWindow

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


# --- CPU per request, by role ---------------------------------------------------------------


@dataclass
class CpuTally:
    """CPU seconds of each role and the requests they served, summed over timed windows.

    Sums over every window, not a median of per-window ratios: ``/proc`` counts CPU in clock
    ticks (10 ms), so the longer the total, the finer the figure.
    """

    count: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # a role's own requests, if not all
    rates: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, results: list[dict[str, Any]], cpu_s: dict[str, float]) -> Run:
        """One window: every client's RESULT and each role's CPU seconds."""
        run = combine(results)
        self.count += sum(int(r["count"]) for r in results)
        self.rates.append(run.rate)
        self.errors += run.errors
        for role, seconds in cpu_s.items():
            self.cpu_s[role] = self.cpu_s.get(role, 0.0) + seconds
        return run

    def count_for(self, role: str, served: int) -> None:
        self.counts[role] = self.counts.get(role, 0) + served

    def us(self, *roles: str) -> float:
        """Microseconds of CPU per request of the roles together (all roles if none given)."""
        names = roles or tuple(self.cpu_s)
        served = self.counts.get(names[0], self.count) if len(names) == 1 else self.count
        if not served or any(name not in self.cpu_s for name in names):
            return float("nan")
        return 1e6 * sum(self.cpu_s[name] for name in names) / served

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


def cpu_window(clients: list[Child], roles: dict[str, list[int]], duration_s: float
               ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A :func:`timed_window` with the CPU each role's processes spent over it."""
    windows = {role: [CpuWindow(pid) for pid in pids] for role, pids in roles.items()}
    results = timed_window(clients, duration_s)
    cpu = {role: sum(w.stop().cpu_s for w in group) for role, group in windows.items()}
    return results, cpu
