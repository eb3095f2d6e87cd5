"""Round trips: the raw pyzmq floor, DIPS through one broker, and gearmand, side by side.

Every system is set up at once for a client/worker shape; then, for each mode and body
size, each repetition runs every system's window back to back. On a shared machine whose
load drifts, that keeps each DIPS figure next to the floor and gearmand figures it is
compared with.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from benchlib.cluster import start_broker, start_workers
from benchlib.plan import Plan
from benchlib.procs import Child, Children
from benchlib.spy import Spy
from benchlib.stats import SYNC, Figure, Shape, combine, timed_window


def note(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def describe(figure: Figure) -> str:
    latency = ""
    if figure.p50_us is not None and figure.p99_us is not None:
        latency = f", p50 {figure.p50_us:.0f} us, p99 {figure.p99_us:.0f} us"
    errors = f", {figure.errors} ERRORS" if figure.errors else ""
    runs = "/".join(f"{r.rate:.0f}" for r in figure.runs)
    return (f"  {figure.system:<16} {figure.mode:<9} {figure.size:>6} B {figure.shape}: "
            f"{figure.rate:,.0f}/s (runs {runs}){latency}{errors}")


def start_clients(kids: Children, shape: Shape, kind: str, mode: str, size: int, plan: Plan,
                  *target: str) -> list[Child]:
    """``shape.clients`` load clients of ``benchlib.roles`` (not yet READY)."""
    args = ["--kind", kind, "--mode", "sync" if mode == SYNC else "pipe", "--size", str(size),
            "--window", str(plan.window), "--warmup", str(plan.warmup_s), *target]
    return [kids.role(f"{kind}-client", "client", *args) for _ in range(shape.clients)]


class System(Protocol):
    """One contender: its servers for a shape, and load clients for a cell."""

    name: str
    modes: tuple[str, ...]

    def start(self, shape: Shape) -> None: ...

    def clients(self, mode: str, size: int, shape: Shape) -> list[Child]: ...

    def stop(self) -> None: ...


class Floor:
    """Raw DEALER clients against ROUTER echo servers (one per 'worker'), no broker."""

    name = "floor (pyzmq)"

    def __init__(self, kids: Children, plan: Plan) -> None:
        self.kids, self.plan = kids, plan
        self.modes = tuple(plan.modes)
        self.servers: list[Child] = []
        self.target: list[str] = []

    def start(self, shape: Shape) -> None:
        self.servers = [self.kids.role("floor-server", "floor-server")
                        for _ in range(shape.workers)]
        self.target = []
        for server in self.servers:
            self.target += ["--endpoint", server.expect("READY", 30)]

    def clients(self, mode: str, size: int, shape: Shape) -> list[Child]:
        return start_clients(self.kids, shape, "floor", mode, size, self.plan, *self.target)

    def stop(self) -> None:
        self.kids.kill(*self.servers)


class Dips:
    """MDPClient -> one broker -> ``python -m mdp.worker --service echo`` processes."""

    name = "DIPS"

    def __init__(self, kids: Children, plan: Plan) -> None:
        self.kids, self.plan = kids, plan
        self.modes = tuple(plan.modes)
        self.broker: Child | None = None
        self.address = ""
        self.workers: list[Child] = []

    def start(self, shape: Shape) -> None:
        self.broker, self.address = start_broker(self.kids)
        self.workers = start_workers(self.kids, [self.address], shape.workers)

    def clients(self, mode: str, size: int, shape: Shape) -> list[Child]:
        return start_clients(self.kids, shape, "dips", mode, size, self.plan,
                             "--endpoint", self.address)

    def stop(self) -> None:
        if self.broker is not None:
            self.kids.kill(self.broker, *self.workers)


def cells(plan: Plan) -> Iterator[tuple[str, int]]:
    for mode in plan.modes:
        for size in plan.sizes:
            yield mode, size


def run(kids: Children, plan: Plan, systems: list[System], profile_dir: Path | None
        ) -> list[Figure]:
    figures: list[Figure] = []
    for shape in plan.shapes:
        started: list[System] = []
        try:
            for system in systems:
                system.start(shape)
                started.append(system)
            for mode, size in cells(plan):
                figures += run_cell(kids, plan, systems, mode, size, shape, profile_dir)
        finally:
            for system in started:
                system.stop()
    return figures


def run_cell(kids: Children, plan: Plan, systems: list[System], mode: str, size: int,
             shape: Shape, profile_dir: Path | None) -> list[Figure]:
    """Every system's clients for one cell; the repetitions interleaved across systems."""
    groups: list[tuple[Figure, list[Child], System]] = []
    for system in systems:
        if mode in system.modes:
            figure = Figure(system.name, mode, size, shape)
            groups.append((figure, system.clients(mode, size, shape), system))
    try:
        for _, clients, _ in groups:
            for child in clients:
                child.expect("READY", 60)
        for _ in range(plan.reps):
            for figure, clients, _ in groups:
                figure.runs.append(combine(timed_window(clients, plan.duration_s)))
        for figure, clients, system in groups:
            note(describe(figure))
            if profile_dir is not None and isinstance(system, Dips) and shape == Shape(1, 1):
                profile(kids, profile_dir, f"{mode}-{size}B", system, clients)
    finally:
        for _, clients, _ in groups:
            kids.kill(*clients)
    return [figure for figure, _, _ in groups]


def profile(kids: Children, profile_dir: Path, label: str, dips: Dips, clients: list[Child]
            ) -> None:
    """One extra (unmeasured) window with py-spy attached to broker, worker and client."""
    assert dips.broker is not None
    spy = Spy(kids, profile_dir)
    targets = {"broker": dips.broker, "worker": dips.workers[0], "client": clients[0]}
    if not spy.start(label, targets):
        return
    try:
        timed_window(clients, spy.window_s, lead_s=0.5)
    finally:
        spy.stop()
    note(f"  profiles: {', '.join(str(path) for path in spy.outputs)}")
