"""Programs of a local cluster whose supervisord is gone (SIGKILLed, OOM-killed).

supervisord starts every program of the cluster in the run directory; when it dies without
stopping them they run on, serve and hold the cluster's ports, and no supervisord answers
for them.  They are found by their working directory (the run directory), their owner (this
user), their command (a program a cluster runs) and their environment (supervisord marks
each program it starts with ``SUPERVISOR_ENABLED``: a broker started by hand in the same
directory is not one of them), and only while no supervisord runs there (a slow one is not a
dead one).  They are stopped the way ``down`` stops a cluster: the workers, doors and
helpers first (SIGTERM: each finishes the request in hand), then the brokers; what has not
exited by its deadline gets SIGKILL.  Each process is known by its pid and its start time,
so a pid the kernel has given to another process since is never signalled.
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
BROKER_GRACE_S = 3.0  # the brokers' own time to exit, whatever the workers took


@dataclass(frozen=True)
class Leftover:
    pid: int
    broker: bool
    started: int  # the process's start time (clock ticks after boot): with pid, who it is


def _program(argv: list[str]) -> str | None:
    """The cluster program ``argv`` runs, if it is one."""
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in MODULES:
        return argv[2]
    if argv and os.path.basename(argv[0]).startswith("redis-server"):
        return "redis-server"
    return None


def find(run_dir: Path) -> list[Leftover]:
    """This user's cluster programs that supervisord started in ``run_dir`` and left
    behind (none while a supervisord runs there)."""
    root = str(run_dir.resolve())
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid() or os.readlink(entry / "cwd") != root:
                continue
            argv = [w.decode(errors="replace")
                    for w in (entry / "cmdline").read_bytes().split(b"\0") if w]
            if any(os.path.basename(word).startswith("supervisord") for word in argv[:2]):
                return []  # supervisord itself runs here: not gone, only slow to answer
            program = _program(argv)
            if program is None or b"SUPERVISOR_ENABLED=1" not in (
                    entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        started = _started(int(entry.name))
        if started is not None:
            found.append(Leftover(int(entry.name), program == "mdp.broker", started))
    return sorted(found, key=lambda left: left.pid)


def find_in(run_dirs: Iterable[Path]) -> tuple[Path, list[Leftover]] | None:
    """The first of ``run_dirs`` that has leftovers, with them."""
    for run_dir in dict.fromkeys(run_dirs):
        found = find(run_dir)
        if found:
            return run_dir, found
    return None


def _started(pid: int) -> int | None:
    """The process's start time (field 22 of its stat), None when it is gone or a zombie."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(left: Leftover) -> bool:
    return _started(left.pid) == left.started


def _signal(found: Iterable[Leftover], signum: signal.Signals) -> None:
    for left in found:
        if not _alive(left):  # exited, or its pid is another process's now
            continue
        try:
            os.kill(left.pid, signum)
        except ProcessLookupError:
            pass


def _wait_gone(found: list[Leftover], timeout_s: float, what: str) -> None:
    def check() -> str | None:
        left = [str(one.pid) for one in found if _alive(one)]
        return f"pids {', '.join(left)} still running" if left else None

    wait_until(check, timeout_s, what, interval_s=0.05)


def stop(found: list[Leftover], timeout_s: float) -> None:
    """Stop ``found`` (workers and doors, then brokers); SIGKILL what outlives its deadline
    (the brokers have at least :data:`BROKER_GRACE_S` of their own)."""
    deadline = time.monotonic() + timeout_s
    for brokers in (False, True):
        group = [left for left in found if left.broker == brokers]
        _signal(group, signal.SIGTERM)
        wait_s = max(BROKER_GRACE_S if brokers else 0.1, deadline - time.monotonic())
        try:
            _wait_gone(group, wait_s, "the leftovers to exit")
        except WaitTimeout:
            _signal(group, signal.SIGKILL)
            _wait_gone(group, KILL_WAIT_S, "the leftovers to exit after SIGKILL")
