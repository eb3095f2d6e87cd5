"""The Markdown report: machine, versions, every section's tables, and the Targets."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from benchlib import guide, realjob, rolecpu
from benchlib.failover import DESCRIPTIONS, FaultResult
from benchlib.gearman import GEAR_C, GEAR_PY, Setup
from benchlib.markdown import met
from benchlib.markdown import num as _num
from benchlib.markdown import table as _table
from benchlib.plan import LARGE, SMALL
from benchlib.procs import REPO_ROOT
from benchlib.realjob import RealJobResult
from benchlib.rolecpu import ModeCosts
from benchlib.scale import ScaleResult, flat
from benchlib.stats import PIPE, SYNC, Figure, Shape
from mdp.client import CLIENT_TRANSPORT_ENV
from mdp.config import BROKER_TRANSPORT_ENV, WORKER_TRANSPORT_ENV

FLOOR = "floor (pyzmq)"
DIPS = "DIPS"
ONE = Shape(1, 1)
MANY = Shape(4, 2)


@dataclass
class Results:
    command: str
    quick: bool
    load_before: tuple[float, float, float] = field(default_factory=os.getloadavg)
    figures: list[Figure] = field(default_factory=list)
    gearman: Setup | None = None
    scale: ScaleResult | None = None
    faults: list[FaultResult] = field(default_factory=list)
    realjob: RealJobResult | None = None
    roles: list[ModeCosts] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said in the report; not failures
    extra: list[str] = field(default_factory=list)  # Markdown of sections that render themselves
    http: list[str] = field(default_factory=list)  # scripts/benchlib/gateway_http.py

    def find(self, system: str, mode: str, size: int, shape: Shape) -> Figure | None:
        for figure in self.figures:
            if figure.system == system and figure.key == (mode, size, shape):
                return figure
        return None


# --- environment ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() if done.returncode == 0 else "?"


def environment(results: Results) -> list[tuple[str, str]]:
    from mdp.version import code_version

    changes = _git("status", "--porcelain", "mdp")
    dirty = " (mdp/ has uncommitted changes)" if changes not in ("", "?") else ""
    gm = results.gearman
    gearmand = gm.version if gm and gm.version else "not measured"
    gear = gm.gear_version if gm and gm.gear_version else "not measured"
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{os.cpu_count()} cores, {_cpu_model()}, Linux {platform.release()}"),
        ("load average (1 min) before / after", f"{results.load_before[0]:.2f} / "
                                                f"{os.getloadavg()[0]:.2f}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("pyzmq / libzmq", f"{zmq.__version__} / {zmq.zmq_version()}"),
        ("msgpack", ".".join(str(part) for part in msgpack.version)),
        ("gearmand / gear", f"{gearmand} / {gear}"),
        ("DIPS", f"commit {_git('rev-parse', '--short', 'HEAD')}{dirty}, "
                 f"code version {code_version()}"),
        # the sync client's (benchlib.roles), every mdp-worker's and every mdp-broker's
        # --transport default
        ("transports: sync client / workers / brokers (auto: plain / plain for handlers "
         "declaring yields_gil, else pyzmq / plain)",
         f"{os.environ.get(CLIENT_TRANSPORT_ENV) or 'auto'} / "
         f"{os.environ.get(WORKER_TRANSPORT_ENV) or 'auto'} / "
         f"{os.environ.get(BROKER_TRANSPORT_ENV) or 'auto'}"),
        ("command", f"`{results.command}`"),
    ]


# --- formatting ----------------------------------------------------------------------------


def _ratio(value: float, base: Figure | None) -> str:
    if base is None or not base.rate or not math.isfinite(value):
        return "—"
    return f"{value / base.rate:.2f}×"


def _size(size: int) -> str:
    return f"{size} B" if size < 1000 else f"{size // 1000} KB"


# --- sections ------------------------------------------------------------------------------


def roundtrip_table(results: Results) -> list[str]:
    rows = []
    order = {FLOOR: 0, DIPS: 1, guide.NAME: 2, GEAR_PY: 3, GEAR_C: 4}
    figures = sorted(results.figures, key=lambda f: (
        f.mode != SYNC, f.size, f.shape.clients, order.get(f.system, 9)))
    for f in figures:
        floor = results.find(FLOOR, f.mode, f.size, f.shape)
        gear_py = results.find(GEAR_PY, SYNC, f.size, f.shape)
        gear_c = results.find(GEAR_C, SYNC, f.size, f.shape)
        zguide = results.find(guide.NAME, SYNC, f.size, f.shape)
        errors = f" ({f.errors} errors)" if f.errors else ""
        rows.append([f.system, f.mode, _size(f.size), str(f.shape), _num(f.rate) + errors,
                     _num(f.p50_us), _num(f.p99_us),
                     _ratio(f.rate, floor) if f.system != FLOOR else "1",
                     _ratio(f.rate, zguide), _ratio(f.rate, gear_py), _ratio(f.rate, gear_c)])
    header = ["system", "mode", "body", "clients/workers", "req/s", "p50 µs", "p99 µs",
              "× floor", "× guide (Python)", "× gearmand (gear)", "× gearmand (C)"]
    return _table(header, rows)


def scale_tables(scale: ScaleResult) -> list[str]:
    rows = [[f"{p.workers:,}", _num(p.ideal),
             _num(p.rate) + (f" ({p.errors} errors)" if p.errors else ""),
             f"{100 * p.busy_share:.0f}%",
             _num(p.us_per_request), _num(1e6 / p.us_per_request if p.us_per_request else None),
             f"{100 * p.idle_share:.1f}%",
             f"{100 * p.client_share:.0f}%", f"{100 * p.workers_share:.0f}%"]
            for p in scale.points]
    lines = _table(["workers", "ideal req/s", "req/s", "broker CPU under load",
                    "broker CPU µs/request (net of idle)", "broker alone on a core (req/s)",
                    "broker CPU idle", "clients' CPU", "workers' CPU"], rows)
    mib = 2**20
    grown = scale.rss_after - scale.rss_before
    per_request = grown / scale.flood if scale.flood else float("nan")
    idle = [
        [f"broker CPU, {scale.idle_workers:,} idle workers heartbeating "
         f"({scale.idle_window_s:g} s window)", f"{100 * scale.idle_share:.1f}% of one core, "
         f"{_num(scale.idle_wakeups_per_s)} wake-ups/s (all threads)"],
        [f"broker RSS, {scale.idle_workers:,} workers, nothing queued",
         f"{scale.rss_before / mib:.1f} MiB"],
        [f"broker RSS with {scale.flood:,} requests queued",
         f"{scale.rss_after / mib:.1f} MiB ({_num(per_request)} bytes per queued request)"],
        [f"broker CPU, idle, {scale.flood:,} queued",
         f"{100 * scale.flooded_idle_share:.1f}% of one core"],
        [f"{scale.idle_workers:,} workers loaded while {scale.flood:,} wait in another queue",
         f"{_num(scale.flooded_rate)} req/s, {_num(scale.flooded_us_per_request)} µs "
         "broker CPU/request"],
    ]
    lines += [""] + _table(["measure", "value"], idle)
    return lines


def dispatch_table(scale: ScaleResult) -> list[str]:
    queues = sorted({c.queued for c in scale.dispatch})
    workers = sorted({c.workers for c in scale.dispatch})
    cell = {(c.workers, c.queued): c for c in scale.dispatch}
    rows = []
    for w in workers:
        row = [f"{w:,}"]
        for q in queues:
            c = cell.get((w, q))
            row.append(f"{c.us_per_request:.2f} µs / {c.tick_ms:.2f} ms" if c else "—")
        rows.append(row)
    return _table(["workers \\ queued"] + [f"{q:,}" for q in queues], rows)


def failover_table(faults: list[FaultResult]) -> list[str]:
    rows = [[DESCRIPTIONS[r.fault] + (f" {r.detail}" if r.detail else ""), f"{r.requests:,}",
             str(r.lost), str(r.wrong), f"{r.median_ms:.1f}", f"{r.worst_ms:.0f}",
             f"{r.extra_ms:.0f}"] for r in faults]
    return _table(["fault", "requests", "lost", "wrong", "median ms", "worst ms",
                   "extra ms"], rows)


def targets(results: Results) -> list[list[str]]:
    """Issue 15's targets first, then the earlier ones that still hold; measured ones only."""
    rows: list[list[str]] = []
    if results.realjob:
        rows += realjob.target_rows(results.realjob)
    rows += rolecpu.target_rows(results.roles)
    piped = results.find(DIPS, PIPE, SMALL, MANY)
    if piped:
        rows.append(["pipelined echo 5 B, 4 clients / 2 workers: ≥ 25,000 req/s",
                     f"{piped.rate:,.0f}/s", met(piped.rate >= 25_000)])
    rows += scale_targets(results.scale)
    rows += guide.target_rows(results.find, DIPS, FLOOR)
    rows += versus_floor(results, SMALL, "sync 5 B, 1/1: ≥ 0.45 of the floor")
    rows += versus_gearmand(results, GEAR_C, MANY, "gearmand's C client")
    rows += failover_targets(results.faults)
    rows += versus_floor(results, LARGE, "sync 60 KB, 1/1: ≥ 0.45 of the floor")
    rows += versus_gearmand(results, GEAR_PY, ONE, "gearmand with a Python client")
    scale = results.scale
    if scale and scale.idle_workers:
        rows.append([f"idle broker, {scale.idle_workers:,} workers: ≤ 5% of a core",
                     f"{100 * scale.idle_share:.1f}%", met(scale.idle_share <= 0.05)])
    if scale and scale.dispatch:
        rows.append(dispatch_target(scale))
    return rows


def versus_floor(results: Results, size: int, label: str) -> list[list[str]]:
    dips = results.find(DIPS, SYNC, size, ONE)
    floor = results.find(FLOOR, SYNC, size, ONE)
    if not (dips and floor):
        return []
    ratio = dips.rate / floor.rate
    return [[label, f"{ratio:.2f} of the floor ({dips.rate:,.0f} vs {floor.rate:,.0f}/s)",
             met(ratio >= 0.45)]]


def versus_gearmand(results: Results, system: str, shape: Shape, label: str
                    ) -> list[list[str]]:
    dips = results.find(DIPS, SYNC, SMALL, shape)
    gear = results.find(system, SYNC, SMALL, shape)
    if not (dips and gear):
        return []
    return [[f"sync 5 B, {shape}: ahead of {label}",
             f"{dips.rate / gear.rate:.2f}× ({dips.rate:,.0f} vs {gear.rate:,.0f}/s)",
             met(dips.rate > gear.rate)]]


def scale_targets(scale: ScaleResult | None) -> list[list[str]]:
    """One broker on one core: 1e6 / its CPU µs per request, at its best point."""
    points = [p for p in (scale.points if scale else []) if p.us_per_request > 0]
    if not points:
        return []
    best = min(points, key=lambda p: p.us_per_request)
    alone = 1e6 / best.us_per_request
    rows = [["scale: one broker on one core routes ≥ 30,000 req/s (sleeping workers)",
             f"{alone:,.0f}/s ({best.us_per_request:.0f} µs/request at {best.workers:,} "
             "workers)", met(alone >= 30_000)]]
    largest = max(points, key=lambda p: p.workers)
    if largest.workers >= 1000:
        rows.append([f"scale: {largest.workers:,} workers under load, no errors",
                     f"{largest.errors} errors ({largest.rate:,.0f}/s)",
                     met(largest.errors == 0)])
    return rows


def failover_targets(faults: list[FaultResult]) -> list[list[str]]:
    return [[f"failover, {DESCRIPTIONS[r.fault]}: ≤ 1 s extra, none lost or wrong",
             f"{r.extra_ms:,.0f} ms extra, {r.lost} lost, {r.wrong} wrong",
             met(r.extra_ms <= 1000 and r.lost == 0 and r.wrong == 0)] for r in faults]


def dispatch_target(scale: ScaleResult) -> list[str]:
    spread = flat([c.us_per_request for c in scale.dispatch])
    busy = [p for p in scale.points if p.rate >= 1000]
    grows = bool(busy) and busy[-1].us_per_request > 1.25 * min(
        p.us_per_request for p in busy)
    trend = " → ".join(f"{p.us_per_request:.0f}" for p in busy)
    return ["dispatch cost flat over workers and queue depth",
            f"dispatcher: max/min {spread:.2f} over {len(scale.dispatch)} cells; "
            f"broker end to end µs/request from {busy[0].workers if busy else 0:,} "
            f"to {busy[-1].workers if busy else 0:,} workers: {trend or '—'}",
            met(spread <= 1.5 and not grows)]


def render(results: Results) -> str:
    lines = ["# DIPS benchmarks", ""]
    if results.quick:
        lines += ["*A `--quick` smoke run: a small subset with short windows; not figures "
                  "to quote.*", ""]
    lines += [f"- **{k}**: {v}" for k, v in environment(results)]
    lines += ["", "Only ratios within one run mean anything: every figure is the median of "
              "its repetitions, measured on this machine in the same run as the floor and "
              "gearmand beside it.", ""]
    if results.figures:
        lines += ["## Round trips", ""] + roundtrip_table(results) + [""] + NOTES_ROUNDTRIP
    if results.realjob:
        lines += ["## The real job: cards through two brokers", "",
                  realjob.intro(results.realjob), ""] + realjob.tables(results.realjob) + [""]
    if results.roles:
        lines += ["## CPU per request by role", "", rolecpu.intro(results.roles), ""]
        lines += rolecpu.tables(results.roles) + [""]
    if results.scale:
        lines += ["## Scale", "", SCALE_INTRO.format(ms=results.scale.sleep_s * 1000), ""]
        lines += scale_tables(results.scale) + [""]
        if results.scale.dispatch:
            lines += ["### Dispatch cost", "", DISPATCH_INTRO, ""]
            lines += dispatch_table(results.scale) + [""]
    if results.faults:
        lines += ["## Failover cost", "", FAILOVER_INTRO, ""] + failover_table(results.faults)
        lines += [""]
    lines += results.extra
    if results.http:
        lines += ["## Through mdp-http", ""] + results.http + [""]
    rows = targets(results)
    if rows:
        lines += ["## Targets", "", TARGETS_INTRO, ""]
        lines += _table(["target", "measured", ""], rows) + [""]
    notes = ((results.gearman.notes if results.gearman else []) + results.notes
             + results.failures)
    if notes:
        lines += ["## Notes from this run", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    scale = results.scale
    return {
        "command": results.command,
        "environment": dict(environment(results)),
        "figures": [f.as_dict() for f in results.figures],
        "scale": None if scale is None else {
            "points": [vars(p) | {"rate": p.rate} for p in scale.points],
            "idle_share": scale.idle_share, "rss_before": scale.rss_before,
            "rss_after": scale.rss_after, "flood": scale.flood,
            "flooded_idle_share": scale.flooded_idle_share,
            "dispatch": [vars(c) for c in scale.dispatch]},
        "faults": [vars(f) | {"extra_ms": f.extra_ms} for f in results.faults],
        "realjob": realjob.as_json(results.realjob) if results.realjob else None,
        "roles": rolecpu.as_json(results.roles),
        "failures": results.failures,
    }


NOTES_ROUNDTRIP = [
    "- *floor*: raw pyzmq, DEALER clients and ROUTER echo servers (one per \"worker\"), no "
    "broker, bytes as they are. *DIPS*: `MDPClient.send` (sync) or `send_many(window=64)` "
    "(pipelined) to one broker (`python -m mdp.broker`) with `python -m mdp.worker --service "
    "echo` processes; the request is the map `{\"d\": <body>}`. *gearmand*: sync foreground "
    "jobs to an echo worker, Python `gear` client and worker (TCP_NODELAY set) or libgearman "
    "C client and worker (`gearman_client_do`), each flavour on its own default "
    "`gearmand -L 127.0.0.1 -p PORT`. *guide (Python)*: the ZeroMQ guide's Python Majordomo "
    "broker, worker and client (`mdbroker.py`, `mdwrkapi.py`, `mdcliapi.py` taken from the "
    "zguide repository at a pinned commit when the suite runs, never kept here), the same "
    "request body, sync only.",
    "- Repetitions are interleaved: each repetition runs the floor, DIPS and gearmand windows "
    "of a cell back to back, so that drifting load on a shared machine hits them alike.",
    "- gearmand is driven sync only, so the pipelined rows are compared with gearmand's sync "
    "figures of the same body and shape (4 C clients and 2 C workers is gearmand's best).",
    "- Latency percentiles are over every request of every client; pipelined runs report "
    "throughput only.",
    "",
]

SCALE_INTRO = (
    "Real `mdp.worker.Worker`s sleeping {ms:g} ms per request, hosted as threads, 250 per "
    "process: 1,000 worker processes would not fit this machine's memory, and to the broker "
    "each thread is an ordinary worker with its own socket and TCP connection. Clients "
    "pipeline with twice as many requests in flight as there are workers. Each thread worker "
    "runs with `--busy-after 0.05`: with one broker there is nobody to tell BUSY, and it keeps "
    "the one sentinel thread of a 250-worker process from taking over all its sockets at "
    "once, which a fleet of one worker per process never does. Broker CPU is read "
    "from `/proc/PID/stat` (utime+stime, all threads); \"net of idle\" subtracts what the broker "
    "burns with the same workers and no load. Default heartbeats (1 s). The load comes from "
    "as many client processes as it takes to keep at most 500 requests in flight each (see "
    "the notes on `MDPClient` and deep windows). CPU shares are of one core; the machine has "
    "two, and where clients and workers take most of them the broker is not what limits "
    "throughput: \"broker alone on a core\" is what its CPU cost per request would allow.")

TARGETS_INTRO = (
    "Issue 15's targets for this 2-core machine, then the earlier ones that still hold; only "
    "what this run measured is listed, each from the section above it.")

DISPATCH_INTRO = (
    "`mdp.dispatch.Dispatcher` in isolation (no sockets): every worker busy and the queue "
    "held at the given depth; per request, a worker replies, a request arrives and is "
    "dispatched. Each cell: µs per request / ms for the bookkeeping of one heartbeat tick "
    "(`expired_workers` + `drop_expired`).")

FAILOVER_INTRO = (
    "Two brokers, worker processes attached to both (sleeping 10 ms per request), 4 client "
    "processes sending sync requests with `MDPClient`'s default timeouts, all starting at the "
    "broker that the fault strikes. Extra latency: the slowest request in flight at the "
    "fault or after it, minus the median request before it.")
