"""CPU per request by role, beside the raw pyzmq floor, so a regression shows where it is.

The echo service with a small body, pipelined (``send_many``, window 64) and sync (one
client, one worker). DIPS: a client that talks to one broker (the client-facing one), and a
second broker that every worker is attached to but no client uses (the other broker: what
it spends is what keeping it informed costs). The floor: raw pyzmq DEALER clients and ROUTER
echo servers. Floor and DIPS windows alternate; each role's CPU comes from ``/proc/PID/stat``
(utime+stime, all threads) and is summed over every window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import guide
from benchlib.cluster import start_broker, start_workers
from benchlib.markdown import met, num, table
from benchlib.plan import SMALL, Plan
from benchlib.procs import Child, Children
from benchlib.roundtrip import Floor, note, start_clients
from benchlib.stats import PIPE, SYNC, CpuTally, Shape, cpu_window

CLIENT = "client"
SERVER = "echo server"
FACING = "client-facing broker"
OTHER = "other broker"
WORKER = "worker"
FLOOR_ROLES = (CLIENT, SERVER)
DIPS_ROLES = (CLIENT, FACING, OTHER, WORKER)
GUIDE_BROKER = "broker"
GUIDE_ROLES = (CLIENT, GUIDE_BROKER, WORKER)
TOTAL_TARGET = 3.0  # DIPS total at most this many times the floor total, pipelined
OTHER_TARGET = 0.05  # the other broker at most this share of the client-facing one


@dataclass
class ModeCosts:
    mode: str
    shape: Shape
    window: int
    floor: CpuTally = field(default_factory=CpuTally)
    dips: CpuTally = field(default_factory=CpuTally)
    guide: CpuTally | None = None  # the ZeroMQ guide's Python stack (sync only), if run

    @property
    def times_floor(self) -> float:
        floor = self.floor.us()
        return self.dips.us() / floor if floor else float("nan")

    @property
    def other_share(self) -> float:
        facing = self.dips.us(FACING)
        return self.dips.us(OTHER) / facing if facing else float("nan")


def run(kids: Children, plan: Plan, guide_files: Path | None = None) -> list[ModeCosts]:
    """Each mode's costs; with ``guide_files``, the guide's stack beside the sync ones."""
    return [run_mode(kids, plan, mode, shape, guide_files if mode == SYNC else None)
            for mode, shape in plan.roles_shapes]


def run_mode(kids: Children, plan: Plan, mode: str, shape: Shape,
             guide_files: Path | None = None) -> ModeCosts:
    costs = ModeCosts(mode, shape, plan.window)
    floor = Floor(kids, plan)
    floor.start(shape)
    facing, address = start_broker(kids)
    # pipelined: every worker is attached to a second broker that no client uses (what
    # keeping it informed costs); sync: to the one broker alone, as the guide's worker is,
    # so that the two stacks are compared on the same shape
    other: Child | None = None
    brokers = [address]
    if mode != SYNC:
        other, other_address = start_broker(kids)
        brokers.append(other_address)
    workers = start_workers(kids, brokers, shape.workers)
    floor_clients = floor.clients(mode, SMALL, shape)
    dips_clients = start_clients(kids, shape, "dips", mode, SMALL, plan, "--endpoint", address)
    stack = guide.Guide(kids, plan, guide_files) if guide_files is not None else None
    guide_clients: list[Child] = []
    try:
        guide_roles: dict[str, list[int]] = {}
        if stack is not None:
            stack.start(shape)
            guide_clients = stack.clients(mode, SMALL, shape)
            guide_roles = {CLIENT: pids(guide_clients), GUIDE_BROKER: [stack.processes[0].pid],
                           WORKER: pids(stack.processes[1:])}
            costs.guide = CpuTally()
        for child in floor_clients + dips_clients + guide_clients:
            child.expect("READY", 60)
        floor_roles = {CLIENT: pids(floor_clients), SERVER: pids(floor.servers)}
        dips_roles = {CLIENT: pids(dips_clients), FACING: [facing.pid],
                      WORKER: pids(workers)}
        if other is not None:
            dips_roles[OTHER] = [other.pid]
        for _ in range(plan.roles_reps):
            costs.floor.add(*cpu_window(floor_clients, floor_roles, plan.roles_duration_s))
            costs.dips.add(*cpu_window(dips_clients, dips_roles, plan.roles_duration_s))
            if costs.guide is not None:
                costs.guide.add(*cpu_window(guide_clients, guide_roles, plan.roles_duration_s))
    finally:
        kids.kill(*floor_clients, *dips_clients, *guide_clients, *workers, facing,
                  *([other] if other is not None else []))
        if stack is not None:
            stack.stop()
        floor.stop()
    shown = [role for role in DIPS_ROLES if other is not None or role != OTHER]
    note(f"  {mode} {shape}: " + ", ".join(f"{role} {costs.dips.us(role):.0f}"
                                           for role in shown)
         + f" us/request; total {costs.dips.us():.0f} = {costs.times_floor:.1f}x the floor's "
         f"{costs.floor.us():.0f}"
         + (f"; other/facing {100 * costs.other_share:.1f}%" if other is not None else ""))
    if costs.guide is not None:
        note(f"  {mode} {shape}, the guide's stack: " + ", ".join(
            f"{role} {costs.guide.us(role):.0f}" for role in GUIDE_ROLES)
            + f" us/request; total {costs.guide.us():.0f}")
    return costs


def pids(children: list[Child]) -> list[int]:
    return [child.pid for child in children]


# --- the report ---------------------------------------------------------------------------


def label(costs: ModeCosts) -> str:
    window = f", window {costs.window}" if costs.mode == PIPE else ""
    return f"{costs.mode} {costs.shape}{window}"


def tables(modes: list[ModeCosts]) -> list[str]:
    header = ["role"]
    for costs in modes:
        header += [f"{label(costs)}: CPU µs/request", "× floor total"]

    def row(name: str, value: Any) -> list[str]:
        cells = [name]
        for costs in modes:
            us = value(costs)
            floor = costs.floor.us()
            cells += [num(us, 1), f"{us / floor:.2f}×" if floor and math.isfinite(us) else "—"]
        return cells

    rows = [row(f"floor: {role}", lambda c, r=role: c.floor.us(r)) for role in FLOOR_ROLES]
    rows.append(row("**floor: total**", lambda c: c.floor.us()))
    rows += [row(f"DIPS: {role}", lambda c, r=role: c.dips.us(r)) for role in DIPS_ROLES]
    rows.append(row("**DIPS: total**", lambda c: c.dips.us()))
    if any(c.guide is not None for c in modes):
        rows += [row(f"guide (Python): {role}", lambda c, r=role: _guide_us(c, r))
                 for role in GUIDE_ROLES]
        rows.append(row("**guide (Python): total**", lambda c: _guide_us(c)))
    extra = [["other broker / client-facing broker"]
             + sum(([f"{100 * c.other_share:.1f}%" if math.isfinite(c.other_share) else "—",
                     ""] for c in modes), []),
             ["requests/s: floor / DIPS"]
             + sum(([f"{num(c.floor.rate)} / {num(c.dips.rate)}", ""] for c in modes), [])]
    return table(header, rows + extra)


def _guide_us(costs: ModeCosts, *roles: str) -> float:
    return costs.guide.us(*roles) if costs.guide is not None else float("nan")


def target_rows(modes: list[ModeCosts]) -> list[list[str]]:
    rows = []
    for costs in modes:
        if costs.guide is not None and costs.guide.us() > 0:
            times = costs.guide.us() / costs.dips.us() if costs.dips.us() else float("nan")
            rows.append([f"sync echo ({costs.shape}): DIPS's CPU/request over all processes "
                         f"≤ the guide's / {guide.TARGET:g} (the 1.3× target, by CPU)",
                         f"the guide's is {times:.2f}× DIPS's ({costs.guide.us():,.0f} vs "
                         f"{costs.dips.us():,.0f} µs)",
                         met(times >= guide.TARGET) if math.isfinite(times) else "—"])
        if costs.mode != PIPE:
            continue
        times = costs.times_floor
        rows.append([f"pipelined echo ({costs.shape}): all processes' CPU/request "
                     f"≤ {TOTAL_TARGET:g}× the floor's",
                     f"{times:.1f}× ({costs.dips.us():,.0f} vs {costs.floor.us():,.0f} µs)",
                     met(times <= TOTAL_TARGET) if math.isfinite(times) else "—"])
        share = costs.other_share
        rows.append([f"a broker no client uses ≤ {100 * OTHER_TARGET:g}% of the client-facing "
                     "broker's CPU/request (pipelined echo)",
                     f"{100 * share:.1f}% ({costs.dips.us(OTHER):.1f} vs "
                     f"{costs.dips.us(FACING):.1f} µs)",
                     met(share <= OTHER_TARGET) if math.isfinite(share) else "—"])
    return rows


def as_json(modes: list[ModeCosts]) -> list[dict[str, Any]]:
    return [{"mode": c.mode, "shape": str(c.shape),
             "floor_us": {role: c.floor.us(role) for role in FLOOR_ROLES} | {
                 "total": c.floor.us()},
             "dips_us": {role: c.dips.us(role) for role in DIPS_ROLES} | {"total": c.dips.us()},
             "guide_us": None if c.guide is None else (
                 {role: c.guide.us(role) for role in GUIDE_ROLES} | {"total": c.guide.us()}),
             "floor_rates": c.floor.rates, "dips_rates": c.dips.rates,
             "errors": c.dips.errors} for c in modes]


INTRO = (
    "The `echo` service with a {size}-byte body. *DIPS*: `MDPClient([client-facing broker])` "
    "(`send_many`, window {window}, when pipelined; `send` when sync) through one broker; a "
    "second broker that every `python -m mdp.worker --service echo` process is attached to "
    "but no client uses (*other broker*), when pipelined; sync, the worker is attached to the "
    "one broker alone, as the ZeroMQ guide's worker beside it is (*guide (Python)*: its "
    "broker, worker and client, same shape). *Floor*: raw pyzmq DEALER clients and ROUTER echo "
    "servers, same shape, bytes as they are. Floor and DIPS windows alternate; every "
    "process's CPU is read from `/proc/PID/stat` (utime+stime, all threads) and summed over "
    "the windows, per request served. The echo worker's figure is its whole CPU. Echo is "
    "a built-in service that may run differently from a renderer (today inline, with no "
    "handler thread): the real job above shows what the other broker costs per card.")


def intro(modes: list[ModeCosts]) -> str:
    return INTRO.format(size=SMALL, window=modes[0].window if modes else 64)
