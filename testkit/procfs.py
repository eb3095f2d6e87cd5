"""What the kernel says of a process (``/proc``): CPU time, memory, sleeps, and which
processes run inside a directory (what a test started there, whatever their parents)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident memory of a process; ProcessLookupError for one that has none (gone)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ProcessLookupError(f"no VmRSS for pid {pid}")


def wakeups(pid: int) -> int:
    """Voluntary context switches of all threads of a process: how often they slept."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            with open(task / "status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:  # a thread that just ended
            continue
    return total


def processes_under(path: Path) -> list[int]:
    """Pids of live processes (not zombies) whose working directory is inside ``path``."""
    root = str(path.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == root or cwd.startswith(root + "/")):
            found.append(int(entry.name))
    return found


def kill_all_under(path: Path, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL whatever still runs inside ``path`` (test clean-up), again until none is left
    or ``timeout_s`` has passed: a supervisord may start a child again before its own
    SIGKILL lands. Return the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout_s
    while (pids := processes_under(path)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed += [pid for pid in pids if pid not in killed]
        time.sleep(0.02)  # a polling interval: the next look decides
    return killed
