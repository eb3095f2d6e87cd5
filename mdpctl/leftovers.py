"""Programs of a local cluster whose supervisord is gone (SIGKILLed, OOM-killed).

supervisord starts every program of the cluster in the run directory; when it dies without
stopping them they run on, serve and hold the cluster's ports, and no supervisord answers
for them.  They are found by their working directory (the run directory), their owner (this
user) and their command (a program a cluster runs), and stopped the way ``down`` stops a
cluster: the workers, doors and helpers first (SIGTERM: each finishes the request in hand),
then the brokers; what has not exited by the deadline gets SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mdpctl.errors import WaitTimeout
from mdpctl.readiness import wait_until

PROC = Path("/proc")
# what a cluster's supervisord runs: python -m MODULE ..., or the Redis of --redis
MODULES = frozenset({"mdp.broker", "mdp.worker", "mdp_http", "mdp_gearman", "mdpctl.keeper",
                     "mdpctl.probe"})
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class Leftover:
    pid: int
    broker: bool


def _program(argv: list[str]) -> str | None:
    """The cluster program ``argv`` runs, if it is one."""
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in MODULES:
        return argv[2]
    if argv and os.path.basename(argv[0]).startswith("redis-server"):
        return "redis-server"
    return None


def find(run_dir: Path) -> list[Leftover]:
    """This user's cluster programs that run in ``run_dir``."""
    root = str(run_dir.resolve())
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or os.readlink(entry / "cwd") != root:
                continue
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        program = _program([w.decode(errors="replace") for w in raw.split(b"\0") if w])
        if program is not None and _alive(int(entry.name)):
            found.append(Leftover(int(entry.name), program == "mdp.broker"))
    return sorted(found, key=lambda left: left.pid)


def find_in(run_dirs: Iterable[Path]) -> tuple[Path, list[Leftover]] | None:
    """The first of ``run_dirs`` that has leftovers, with them."""
    for run_dir in dict.fromkeys(run_dirs):
        found = find(run_dir)
        if found:
            return run_dir, found
    return None


def _alive(pid: int) -> bool:
    try:
        state = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _signal(pids: Iterable[int], signum: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout_s: float, what: str) -> None:
    def check() -> str | None:
        left = [p for p in pids if _alive(p)]
        return f"pids {', '.join(map(str, left))} still running" if left else None

    wait_until(check, timeout_s, what, interval_s=0.05)


def stop(found: list[Leftover], timeout_s: float) -> None:
    """Stop ``found`` (workers and doors, then brokers); SIGKILL what outlives the deadline."""
    deadline = time.monotonic() + timeout_s
    for brokers in (False, True):
        pids = [left.pid for left in found if left.broker == brokers]
        _signal(pids, signal.SIGTERM)
        try:
            _wait_gone(pids, max(0.1, deadline - time.monotonic()), "the leftovers to exit")
        except WaitTimeout:
            _signal(pids, signal.SIGKILL)
            _wait_gone(pids, KILL_WAIT_S, "the leftovers to exit after SIGKILL")
