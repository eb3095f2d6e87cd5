"""Programs of a local cluster whose supervisord is gone (SIGKILLed, OOM-killed).

supervisord starts every program of the cluster in the run directory; when it dies without
stopping them they run on, serve and hold the cluster's ports, and no supervisord answers
for them.  They are found by their working directory (the run directory), their owner (this
user), their command (a program a cluster runs) and their environment (supervisord marks
each program it starts with ``SUPERVISOR_ENABLED``: a broker started by hand in the same
directory is not one of them), and only while no supervisord runs there (see
:mod:`mdpctl.daemon`: a stopped or slow one is not a dead one).  They are stopped the way
``down`` stops a cluster: the workers, doors and helpers first (SIGTERM: each finishes the
request in hand), then the brokers; what has not exited by its deadline gets SIGKILL.  Each
process is known by its pid and its start time, so a pid the kernel has given to another
process since is never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mdpctl import daemon, procfs
from mdpctl.errors import WaitTimeout
from mdpctl.readiness import wait_until

# what a cluster's supervisord runs: python -m MODULE ..., or the Redis of --redis
MODULES = frozenset({"mdp.broker", "mdp.worker", "mdp_http", "mdp_gearman", "mdpctl.keeper",
                     "mdpctl.probe"})
SUPERVISED = b"SUPERVISOR_ENABLED=1"  # the mark supervisord leaves in every program it starts
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


def cluster_program(pid: int) -> str | None:
    """The cluster program ``pid`` runs (``mdp.broker``, ``mdp_http`` ...) when a supervisord
    started it; None for anything else, a broker started by hand among them."""
    program = _program(procfs.argv(pid))
    return program if program is not None and procfs.has_environ(pid, SUPERVISED) else None


def find(run_dir: Path) -> list[Leftover]:
    """This user's cluster programs that supervisord started in ``run_dir`` and left
    behind (none while a supervisord runs there, answering or not)."""
    if daemon.find(run_dir) is not None:
        return []  # its supervisord runs: not gone, perhaps only slow to answer
    root = str(run_dir.resolve())
    found = []
    for pid in procfs.pids():
        if not procfs.owned(pid) or procfs.cwd(pid) != root:
            continue
        if daemon.is_supervisord(procfs.argv(pid)):
            return []  # a supervisord runs here whose pid file is gone: not ours to judge
        program = cluster_program(pid)
        stat = procfs.stat(pid)
        if program is not None and stat is not None and not stat.zombie:
            found.append(Leftover(pid, program == "mdp.broker", stat.started))
    return found


def find_in(run_dirs: Iterable[Path]) -> tuple[Path, list[Leftover]] | None:
    """The first of ``run_dirs`` that has leftovers, with them."""
    for run_dir in dict.fromkeys(run_dirs):
        found = find(run_dir)
        if found:
            return run_dir, found
    return None


def _alive(left: Leftover) -> bool:
    stat = procfs.stat(left.pid)
    return stat is not None and not stat.zombie and stat.started == left.started


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
