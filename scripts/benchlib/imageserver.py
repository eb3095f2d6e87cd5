"""``scripts/bench --only imageserver``: DIPS's image server beside thumbor 7.8, in one run.

Both read the same photo files by path (DIPS: ``local:///`` under the workers' root;
thumbor: its file loader), both are driven by Debian's ``wrk`` with the same connections,
and every request is distinct (a cache buster for DIPS, a query for thumbor) so that
neither a cache nor coalescing answers it. DIPS is one broker, two ``imgproxy`` workers and
one ``mdp-http``; thumbor is one server process with an engine pool of two threads (its
notes: with ``--processes 2`` one process often takes every connection): two render lanes
each. The machine is shared, so the two run in adjacent windows, in pairs, the order
alternating, and the ratio is the median of the pairs' ratios. Per case and system:
thumbnails per second, CPU per thumbnail summed over every process of the system, the peak
of the summed PSS and RSS of its processes, and how busy the rest of the machine was
(:mod:`benchlib.imageserver_load`). Then a cache hit at the door (p50 over one keep-alive
connection), and the JPEG bytes of both for one thumbnail at the same size and quality.
"""

from __future__ import annotations

import io
import os
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import imageserver_thumbor as thumbor
from benchlib.cluster import start_broker, start_workers
from benchlib.imageserver_load import (
    MemoryPeak,
    Window,
    descendants,
    memory,
    process_name,
    wrk,
)
from benchlib.plan import Plan
from benchlib.procs import BenchError, Child, Children, wait_for
from benchlib.roundtrip import note
from testkit import cpu_seconds

CASES = (("24mp", 6000, 4000), ("1600x1200", 1600, 1200))
WIDTH = 300
QUALITY = 80
CONNECTIONS = 8
WRK_THREADS = 2
PAIRS = 5  # adjacent DIPS/thumbor windows per case (--quick: 1)
WINDOW_S = 8.0  # seconds of wrk per window (--quick: 4)
LISTENING = re.compile(r"mdp-http listening on http://127\.0\.0\.1:(\d+)/")
# thumbor's shape: (--processes, ENGINE_THREADPOOL_SIZE); DIPS_BENCH_THUMBOR="2,1" overrides
THUMBOR_SHAPE = tuple(int(n) for n in os.environ.get("DIPS_BENCH_THUMBOR", "1,2").split(","))
DIPS_WORKERS = 2  # render lanes: thumbor's engine threads


@dataclass
class Run:
    rate: float
    p50_ms: float
    cpu_ms: float  # per thumbnail, every process of the system
    peak_rss_mb: float
    peak_pss_mb: float
    failed: int
    others: float  # cores the rest of the machine kept busy meanwhile


@dataclass
class System:
    name: str
    port: int
    pids: list[int]
    pattern: dict[str, str] = field(default_factory=dict)  # case -> Lua format, %d %d
    rest: tuple[float, float] = (0.0, 0.0)  # (RSS MB, PSS MB) after warm-up, at rest


def make_photos(directory: Path) -> None:
    from renderers import samples

    directory.mkdir(parents=True, exist_ok=True)
    for name, width, height in CASES:
        path = directory / f"{name}.jpg"
        if not path.exists():
            path.write_bytes(samples.photo_jpeg(width, height))


def system_pids(system: System) -> list[int]:
    return [p for pid in system.pids for p in descendants(pid)]


def measure(system: System, case: str, duration_s: float, tmp: Path) -> Run:
    pids = system_pids(system)
    window = Window(pids)
    peak = MemoryPeak(pids)
    nonce = f"{time.monotonic_ns():x}"  # every run's requests differ from every other's
    pattern = system.pattern[case].replace("NONCE", nonce)
    try:
        ran = wrk(system.port, pattern, duration_s, tmp, CONNECTIONS, WRK_THREADS)
    finally:
        peak.stop()
    ours = window.ours_s()
    others = window.others_cores(ours, ran.cpu_s)
    count = max(ran.requests, 1)
    share = ", ".join(f"{process_name(p)} {1000 * (cpu_seconds(p) - c) / count:.2f}"
                      for p, c in window.each.items())
    sizes = ", ".join(f"{process_name(p)} {b / 2**20:.0f}" for p, b in peak.each.items())
    note(f"    CPU ms per thumbnail by process: {share}; peak RSS MB: {sizes}")
    return Run(ran.requests / ran.seconds, ran.p50_ms, 1000 * ours / count, peak.peak / 2**20,
               peak.peak_pss / 2**20, ran.failed, others)


def start_door(kids: Children, address: str, *extra: str) -> tuple[Child, int]:
    door = kids.python("mdp-http", "-m", "mdp_http", "--listen", "127.0.0.1:0", "--broker",
                       address, "--log-level", "INFO", *extra)
    log = Path(door.log_path)
    port = int(wait_for(lambda: (m := LISTENING.search(log.read_text())) and m.group(1), 20,
                        "mdp-http to listen"))
    return door, port


def start_dips(kids: Children, photos: Path) -> tuple[System, str]:
    saved = os.environ.get("DIPS_SOURCES_ROOTS")
    os.environ["DIPS_SOURCES_ROOTS"] = str(photos)
    try:
        broker, address = start_broker(kids)
        workers = start_workers(kids, [address], DIPS_WORKERS, "imgproxy")
    finally:
        if saved is None:
            os.environ.pop("DIPS_SOURCES_ROOTS", None)
        else:
            os.environ["DIPS_SOURCES_ROOTS"] = saved
    door, port = start_door(kids, address, "--cache-bytes", "0")  # thumbor keeps none either
    system = System("DIPS", port, [broker.pid, *(w.pid for w in workers), door.pid])
    for name, _, _ in CASES:
        system.pattern[name] = (f"/unsafe/rs:fit:{WIDTH}:0/q:{QUALITY}/cb:NONCE-%d-%d/plain/"
                                f"local:///{name}.jpg@jpg")
    return system, address


def start_thumbor(kids: Children, photos: Path, tmp: Path) -> tuple[System, Child]:
    python = thumbor.ensure_venv(note)
    processes, threads = THUMBOR_SHAPE
    server, port = thumbor.start(kids, python, photos, tmp, processes=processes,
                                 threads=threads, quality=QUALITY)
    system = System("thumbor 7.8", port, [server.pid])
    for name, _, _ in CASES:
        system.pattern[name] = thumbor.url(f"{name}.jpg", WIDTH, QUALITY) + "?r=NONCE-%d-%d"
    return system, server


def fetch(port: int, path: str) -> tuple[bytes, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as response:
        body = response.read()
    return body, time.perf_counter() - started


def cache_hit(kids: Children, address: str, duration_s: float, tmp: Path
              ) -> tuple[float, float, float]:
    """(p50 ms of a hit over one keep-alive connection, door CPU µs per hit, the share the
    door answered within 1 ms by its own histogram), at a door with the default cache."""
    door, port = start_door(kids, address)
    path = f"/unsafe/rs:fit:{WIDTH}:0/q:{QUALITY}/plain/local:///1600x1200.jpg@jpg"
    fetch(port, path)  # rendered once; every request after it is a hit
    before = cpu_seconds(door.pid)
    ran = wrk(port, path + "%.0s%.0s", duration_s, tmp, connections=1, threads=1)
    if ran.failed:
        raise BenchError(f"{ran.failed} cache hits failed")
    p50 = ran.p50_ms
    cpu_us = 1e6 * (cpu_seconds(door.pid) - before) / max(ran.requests, 1)
    within = _share_within_1ms(port)
    note(f"  at the door (its own histogram): {100 * within:.1f} % of image requests within "
         "1 ms")
    return p50, cpu_us, within


def _share_within_1ms(port: int) -> float:
    """The share of the door's image requests it answered within 1 ms (its histogram)."""
    metrics, _ = fetch(port, "/metrics")
    within = total = 0.0
    for line in metrics.decode().splitlines():
        if not line.startswith("dips_http_request_seconds") or 'service="imgproxy"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("dips_http_request_seconds_bucket") and 'le="0.001"' in line:
            within = value
        elif line.startswith("dips_http_request_seconds_count"):
            total = value
    return within / total if total else float("nan")


def compare_bytes(dips: System, other: System) -> tuple[int, int, float, str]:
    """(DIPS bytes, thumbor bytes, mean absolute pixel difference, sizes) of one thumbnail."""
    from PIL import Image, ImageChops, ImageStat

    ours, _ = fetch(dips.port, dips.pattern["1600x1200"].replace("NONCE-%d-%d", "bytes"))
    theirs, _ = fetch(other.port, other.pattern["1600x1200"].replace("NONCE-%d-%d", "bytes"))
    a, b = Image.open(io.BytesIO(ours)), Image.open(io.BytesIO(theirs))
    sizes = f"{a.size[0]}x{a.size[1]} / {b.size[0]}x{b.size[1]}"
    if a.size != b.size:
        return len(ours), len(theirs), float("nan"), sizes
    diff = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean
    return len(ours), len(theirs), sum(diff) / 3, sizes


def run(kids: Children, plan: Plan, tmp: Path) -> list[str]:
    """The Markdown of the section."""
    photos = tmp / "photos"
    make_photos(photos)
    dips, address = start_dips(kids, photos)
    other, server = start_thumbor(kids, photos, tmp)
    try:
        return _run(kids, plan, tmp, dips, address, other)
    finally:
        thumbor.stop(server)


Runs = dict[tuple[str, str], list[Run]]


def _run(kids: Children, plan: Plan, tmp: Path, dips: System, address: str,
         other: System) -> list[str]:
    pairs = 1 if plan.quick else PAIRS
    duration = 4.0 if plan.quick else WINDOW_S
    for system in (dips, other):  # warm up: imports, connections, first decodes
        for name, _, _ in CASES:
            fetch(system.port, system.pattern[name].replace("NONCE-%d-%d", "warm"))
        system.rest = memory(system_pids(system))
        note(f"  {system.name} at rest after warm-up: RSS {system.rest[0]:.0f} MB, PSS "
             f"{system.rest[1]:.0f} MB")
    runs: Runs = {}
    for pair in range(pairs):
        for name, _, _ in CASES:
            order = (dips, other) if pair % 2 == 0 else (other, dips)
            for system in order:
                result = measure(system, name, duration, tmp)
                runs.setdefault((system.name, name), []).append(result)
                note(f"  {name} {system.name}: {result.rate:.1f}/s, {result.cpu_ms:.1f} ms "
                     f"CPU each, peak RSS {result.peak_rss_mb:.0f} MB, PSS "
                     f"{result.peak_pss_mb:.0f} MB, {result.failed} failed, the rest of the "
                     f"machine busy {result.others:.2f} cores")
    p50, hit_cpu_us, within = cache_hit(kids, address, 3.0 if plan.quick else 10.0, tmp)
    note(f"  cache hit at the door: p50 {p50:.2f} ms, {hit_cpu_us:.0f} µs door CPU")
    ours, theirs, diff, sizes = compare_bytes(dips, other)
    note(f"  JPEG bytes: DIPS {ours}, thumbor {theirs} ({sizes}, mean diff {diff:.2f})")
    return render(runs, (dips, other), pairs, duration, (p50, hit_cpu_us, within),
                  (ours, theirs, diff, sizes))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _max(values: list[float]) -> float:
    return max(values, default=float("nan"))


def pair_ratios(runs: Runs, case: str) -> list[float]:
    """DIPS's rate over thumbor's in each pair of adjacent windows."""
    ours, theirs = runs.get(("DIPS", case), []), runs.get(("thumbor 7.8", case), [])
    return [a.rate / b.rate for a, b in zip(ours, theirs, strict=False) if b.rate > 0]


def render(runs: Runs, systems: tuple[System, System], pairs: int, duration: float,
           hit: tuple[float, float, float], jpeg: tuple[int, int, float, str]) -> list[str]:
    p50, hit_cpu_us, within = hit
    others = [r.others for rs in runs.values() for r in rs]
    lines = [
        f"{WIDTH} px wide JPEG thumbnails at quality {QUALITY} from photo files read by path, "
        f"`wrk -t{WRK_THREADS} -c{CONNECTIONS}`, every request distinct (no cache, no "
        f"coalescing). {pairs} pair(s) of adjacent windows of {duration:g} s per case, DIPS "
        "and thumbor in turn (the order alternating), so that both see the same load from "
        "the rest of this shared machine (it kept "
        f"{_median(others):.1f} cores busy in the median window, {min(others, default=0):.1f}"
        f"-{_max(others):.1f} over all). *ratio* is the median over the pairs of DIPS's "
        "thumbnails/s over thumbor's in the same pair (range beside it); the rates are the "
        "medians of the windows. CPU is summed over every process of the system. Memory is "
        "the peak of the sum over its processes of their PSS (each shared page counted once: "
        "the fair measure for several processes, as the machine holds a library once however "
        "many processes map it) and, beside it, of their RSS (a shared page counted in every "
        "process that maps it); *at rest* is after warm-up, before load.",
        "",
        f"Render lanes: DIPS runs {DIPS_WORKERS} `imgproxy` worker processes, thumbor "
        f"`--processes {THUMBOR_SHAPE[0]}` with `ENGINE_THREADPOOL_SIZE={THUMBOR_SHAPE[1]}` "
        "(its Pillow work runs on those threads, its HTTP and Python on the main one; "
        "`--processes 2` alone often leaves one process every connection). Both have two "
        "lanes for two cores. DIPS also runs 1 broker and 1 `mdp-http`, whose CPU and memory "
        "are counted; thumbor's file loader, DIPS's `local:///` root, no result storage, no "
        "result cache (`--cache-bytes 0`).",
        "",
        "| source | system | thumbnails/s | ratio (range) | CPU per thumbnail | p50 latency "
        "| peak PSS | peak RSS | at rest PSS / RSS | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, width, height in CASES:
        ratios = pair_ratios(runs, name)
        above = sum(r >= 1.0 for r in ratios)
        for system in systems:
            figures = runs.get((system.name, name), [])
            ratio = (f"{_median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}; "
                     f"{above} of {len(ratios)} >= 1)" if system.name == "DIPS" and ratios
                     else "")
            lines.append(
                f"| {width}x{height} | {system.name} | "
                f"{_median([r.rate for r in figures]):.1f} | {ratio} | "
                f"{_median([r.cpu_ms for r in figures]):.1f} ms | "
                f"{_median([r.p50_ms for r in figures]):.0f} ms | "
                f"{_max([r.peak_pss_mb for r in figures]):.0f} MB | "
                f"{_max([r.peak_rss_mb for r in figures]):.0f} MB | "
                f"{system.rest[1]:.0f} / {system.rest[0]:.0f} MB | "
                f"{sum(r.failed for r in figures)} |")
    ours, theirs_bytes, diff, sizes = jpeg
    lines += [
        "",
        f"- A cache hit at the door (one keep-alive connection, `wrk -t1 -c1`): p50 "
        f"{p50:.2f} ms (wrk's, loopback included), {hit_cpu_us:.0f} µs of the door's CPU "
        f"each; the door answered {100 * within:.1f} % of them within 1 ms by its own "
        "`dips_http_request_seconds` histogram.",
        f"- JPEG bytes for one 1600x1200 -> {WIDTH} px thumbnail at quality {QUALITY}: DIPS "
        f"{ours:,}, thumbor {theirs_bytes:,} ({ours / theirs_bytes:.2f}x; sizes {sizes}, mean "
        f"absolute pixel difference {diff:.2f} of 255).",
    ]
    return lines
