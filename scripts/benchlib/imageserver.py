"""``scripts/bench --only imageserver``: DIPS's image server beside thumbor 7.8, in one run.

Both read the same photo files by path (DIPS: ``local:///`` under the workers' root;
thumbor: its file loader), both are driven by Debian's ``wrk`` with the same connections,
and every request is distinct (a cache buster for DIPS, a query for thumbor) so that
neither a cache nor coalescing answers it. DIPS is one broker, two ``imgproxy`` workers and
one ``mdp-http``; thumbor is one server process with an engine pool of two threads (its
notes: with ``--processes 2`` one process often takes every connection). Per case and
system: thumbnails per second (median of the interleaved runs), CPU per thumbnail summed
over every process of the system, and the peak of the summed RSS of its processes. Then a
cache hit at the door (p50 over one keep-alive connection), and the JPEG bytes of both for
one thumbnail at the same size and quality.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import imageserver_thumbor as thumbor
from benchlib.cluster import start_broker, start_workers
from benchlib.plan import Plan
from benchlib.procs import BenchError, Child, Children, wait_for
from benchlib.roundtrip import note
from testkit import cpu_seconds, rss_bytes

CASES = (("24mp", 6000, 4000), ("1600x1200", 1600, 1200))
WIDTH = 300
QUALITY = 80
CONNECTIONS = 8
WRK_THREADS = 2
LISTENING = re.compile(r"mdp-http listening on http://127\.0\.0\.1:(\d+)/")
WRK = shutil.which("wrk")
# thumbor's shape: (--processes, ENGINE_THREADPOOL_SIZE); DIPS_BENCH_THUMBOR="2,1" overrides
THUMBOR_SHAPE = tuple(int(n) for n in os.environ.get("DIPS_BENCH_THUMBOR", "1,2").split(","))
SCRIPT = """
local n = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  n = n + 1
  return wrk.format("GET", string.format(PATTERN, tid, n))
end
"""


@dataclass
class Run:
    rate: float
    p50_ms: float
    cpu_ms: float  # per thumbnail, every process of the system
    peak_rss_mb: float
    peak_pss_mb: float
    failed: int


@dataclass
class System:
    name: str
    port: int
    pids: list[int]
    pattern: dict[str, str] = field(default_factory=dict)  # case -> Lua format, %d %d


def make_photos(directory: Path) -> None:
    from renderers import samples

    directory.mkdir(parents=True, exist_ok=True)
    for name, width, height in CASES:
        path = directory / f"{name}.jpg"
        if not path.exists():
            path.write_bytes(samples.photo_jpeg(width, height))


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for child_pid in _children(pid):
        found.extend(_descendants(child_pid))
    return found


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            pids.extend(int(p) for p in text)
    except OSError:
        pass
    return pids


def pss_bytes(pid: int) -> int:
    """Proportional set size: private pages plus a share of each shared one (libraries,
    a forked parent's pages), so that a sum over processes counts every page once."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no Pss for pid {pid}")


class RssPeak:
    """Samples the summed RSS and PSS of some processes every 50 ms; keeps the peaks."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self.peak_pss = 0
        self.each: dict[int, int] = {}  # pid -> its own peak RSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = total_pss = 0
            for pid in self.pids:
                try:
                    rss, pss = rss_bytes(pid), pss_bytes(pid)
                except (OSError, BenchError):
                    continue
                total += rss
                total_pss += pss
                self.each[pid] = max(self.each.get(pid, 0), rss)
            self.peak = max(self.peak, total)
            self.peak_pss = max(self.peak_pss, total_pss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def wrk(port: int, pattern: str, duration_s: float, tmp: Path, connections: int = CONNECTIONS,
        threads: int = WRK_THREADS) -> tuple[int, float, float, int]:
    """(requests, seconds, p50 ms, failed) of a wrk run whose every request is distinct."""
    if WRK is None:
        raise BenchError("wrk is not installed (Debian package wrk)")
    script = tmp / "distinct.lua"
    script.write_text(f"PATTERN = {pattern!r}\n" + SCRIPT)
    done = subprocess.run(
        [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
         "--timeout", "60s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration_s + 120, check=False)
    out = done.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed: {done.stderr.strip() or out[-500:]}")
    requests = int(match.group(1))
    seconds = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    failed = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    failed += sum(int(m) for m in re.findall(r"Socket errors:.*?(\d+)", out))
    return requests, seconds, _p50_ms(out), failed


def _p50_ms(out: str) -> float:
    match = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def _name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    module = words[words.index(b"-m") + 1].decode() if b"-m" in words else Path(
        words[0].decode()).name
    return f"{module}:{pid}"


def measure(system: System, case: str, duration_s: float, tmp: Path) -> Run:
    pids = [p for pid in system.pids for p in _descendants(pid)]
    cpu_each = {p: cpu_seconds(p) for p in pids}
    cpu_before = sum(cpu_each.values())
    peak = RssPeak(pids)
    nonce = f"{time.monotonic_ns():x}"  # every run's requests differ from every other's
    pattern = system.pattern[case].replace("NONCE", nonce)
    try:
        requests, seconds, p50, failed = wrk(system.port, pattern, duration_s, tmp)
    finally:
        rss = peak.stop()
        pss = peak.peak_pss
    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    share = ", ".join(f"{_name(p)} {1000 * (cpu_seconds(p) - c) / max(requests, 1):.1f}"
                      for p, c in cpu_each.items())
    memory = ", ".join(f"{_name(p)} {b / 2**20:.0f}" for p, b in peak.each.items())
    note(f"    CPU ms per thumbnail by process: {share}; peak RSS MB: {memory}")
    return Run(requests / seconds, p50, 1000 * cpu / max(requests, 1), rss / 2**20,
               pss / 2**20, failed)


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
        workers = start_workers(kids, [address], 2, "imgproxy")
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
    requests, _, p50, failed = wrk(port, path + "%.0s%.0s", duration_s, tmp, connections=1,
                                   threads=1)
    if failed:
        raise BenchError(f"{failed} cache hits failed")
    cpu_us = 1e6 * (cpu_seconds(door.pid) - before) / max(requests, 1)
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


def _run(kids: Children, plan: Plan, tmp: Path, dips: System, address: str,
         other: System) -> list[str]:
    reps = 1 if plan.quick else 3
    duration = 4.0 if plan.quick else 15.0
    for system in (dips, other):  # warm up: imports, connections, the workers' source cache
        for name, _, _ in CASES:
            fetch(system.port, system.pattern[name].replace("NONCE-%d-%d", "warm"))
    runs: dict[tuple[str, str], list[Run]] = {}
    for rep in range(reps):
        for name, _, _ in CASES:
            order = (dips, other) if rep % 2 == 0 else (other, dips)
            for system in order:
                result = measure(system, name, duration, tmp)
                runs.setdefault((system.name, name), []).append(result)
                note(f"  {name} {system.name}: {result.rate:.1f}/s, {result.cpu_ms:.0f} ms "
                     f"CPU each, peak RSS {result.peak_rss_mb:.0f} MB, PSS "
                     f"{result.peak_pss_mb:.0f} MB, {result.failed} failed")
    p50, hit_cpu_us, within = cache_hit(kids, address, 3.0 if plan.quick else 10.0, tmp)
    note(f"  cache hit at the door: p50 {p50:.2f} ms, {hit_cpu_us:.0f} µs door CPU")
    ours, theirs, diff, sizes = compare_bytes(dips, other)
    note(f"  JPEG bytes: DIPS {ours}, thumbor {theirs} ({sizes}, mean diff {diff:.2f})")
    return render(runs, reps, duration, (p50, hit_cpu_us, within), (ours, theirs, diff, sizes))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(runs: dict[tuple[str, str], list[Run]], reps: int, duration: float,
           hit: tuple[float, float, float], jpeg: tuple[int, int, float, str]) -> list[str]:
    p50, hit_cpu_us, within = hit
    lines = [
        f"{WIDTH} px wide JPEG thumbnails at quality {QUALITY} from photo files read by path, "
        f"`wrk -t{WRK_THREADS} -c{CONNECTIONS}`, every request distinct (no cache, no "
        f"coalescing); {reps} interleaved run(s) of {duration:g} s per system and case, "
        "median. CPU is summed over every process of the system; memory is the peak of the "
        "sum over its processes of their PSS (each shared page counted once: libraries, a "
        "forked parent's pages) and, beside it, of their RSS (shared pages counted in every "
        "process). DIPS: 1 broker, 2 `imgproxy` workers, 1 `mdp-http`; "
        f"thumbor: `--processes {THUMBOR_SHAPE[0]}`, `ENGINE_THREADPOOL_SIZE="
        f"{THUMBOR_SHAPE[1]}`, file loader, no storage.",
        "",
        "| source | system | thumbnails/s | ratio | CPU per thumbnail | p50 latency | peak PSS "
        "| peak RSS | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, width, height in CASES:
        theirs = _median([r.rate for r in runs.get(("thumbor 7.8", name), [])])
        for system in ("DIPS", "thumbor 7.8"):
            figures = runs.get((system, name), [])
            rate = _median([r.rate for r in figures])
            lines.append(
                f"| {width}x{height} | {system} | {rate:.1f} | {rate / theirs:.2f}x | "
                f"{_median([r.cpu_ms for r in figures]):.0f} ms | "
                f"{_median([r.p50_ms for r in figures]):.0f} ms | "
                f"{max((r.peak_pss_mb for r in figures), default=float('nan')):.0f} MB | "
                f"{max((r.peak_rss_mb for r in figures), default=float('nan')):.0f} MB | "
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
