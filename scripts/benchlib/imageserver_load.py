"""What the image-server section reads from the machine: wrk runs, the memory of a system's
processes (RSS and PSS), and how busy everything else kept the machine during a window.

The machine is shared: other work runs beside the bench and moves throughput from one
window to the next. Each window therefore also records the cores the *rest* of the machine
kept busy (all busy CPU time in ``/proc/stat`` less the system's own processes and wrk), so
the report can say how loaded it was, and the section compares the two systems in adjacent
windows (pairs) rather than in windows minutes apart.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib.procs import BenchError
from testkit import cpu_seconds, rss_bytes

WRK = shutil.which("wrk")
CLK_TCK = os.sysconf("SC_CLK_TCK")
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
class Wrk:
    requests: int
    seconds: float
    p50_ms: float
    failed: int
    cpu_s: float  # wrk's own CPU time


def descendants(pid: int) -> list[int]:
    found = [pid]
    for child_pid in _children(pid):
        found.extend(descendants(child_pid))
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


def memory(pids: list[int]) -> tuple[float, float]:
    """(summed RSS MB, summed PSS MB) of ``pids`` now."""
    rss = pss = 0
    for pid in pids:
        try:
            rss += rss_bytes(pid)
            pss += pss_bytes(pid)
        except (OSError, BenchError):
            continue
    return rss / 2**20, pss / 2**20


class MemoryPeak:
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

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class Window:
    """CPU of some processes, of wrk and of the whole machine over one measured window."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.each = {p: cpu_seconds(p) for p in pids}
        self.machine = machine_busy_s()
        self.started = time.monotonic()

    def ours_s(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids) - sum(self.each.values())

    def others_cores(self, ours_s: float, wrk_s: float) -> float:
        """Cores the rest of the machine kept busy on average during the window."""
        elapsed = time.monotonic() - self.started
        busy = machine_busy_s() - self.machine - ours_s - wrk_s
        return max(0.0, busy / max(elapsed, 1e-9))


def wrk(port: int, pattern: str, duration_s: float, tmp: Path, connections: int,
        threads: int) -> Wrk:
    """A wrk run whose every request is distinct (``pattern`` takes thread and request
    numbers)."""
    if WRK is None:
        raise BenchError("wrk is not installed (Debian package wrk)")
    script = tmp / "distinct.lua"
    script.write_text(f"PATTERN = {pattern!r}\n" + SCRIPT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
         "--timeout", "60s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration_s + 120, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed: {done.stderr.strip() or out[-500:]}")
    requests = int(match.group(1))
    seconds = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    failed = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    failed += sum(int(m) for m in re.findall(r"Socket errors:.*?(\d+)", out))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Wrk(requests, seconds, _p50_ms(out), failed, cpu)


def _p50_ms(out: str) -> float:
    match = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def process_name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    module = words[words.index(b"-m") + 1].decode() if b"-m" in words else Path(
        words[0].decode()).name
    return f"{module}:{pid}"
