"""The local cluster's supervisord as a process: found by its pid file, alive, stopped, or
running but not answering.

``mdpctl up`` starts it as ``python -m supervisor.supervisord -c RUN_DIR/supervisord.conf``;
it writes its pid to ``RUN_DIR/supervisord.pid`` and works in ``RUN_DIR`` (``directory=``).
The pid in that file is the cluster's supervisord only while that process is alive, is a
supervisord (however started) and works in the run directory: the file a killed supervisord
left behind, its pid given to another process since, names none.

A supervisord that runs but does not answer on its control socket (stopped by SIGSTOP or
Ctrl-Z, or overloaded) is not a dead one: its programs are its own, and stopping them behind
its back would only have it start them again once it runs on.  Commands say so, quickly,
with exit status :data:`~mdpctl.errors.EXIT_UNRESPONSIVE`; ``mdpctl down --force`` kills it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from mdpctl import procfs
from mdpctl.cluster import SOCKET_NAME
from mdpctl.errors import Unreachable, Unresponsive
from mdpctl.readiness import wait_until
from mdpctl.rpc import Supervisor, SupervisorEndpoint

PID_FILE_NAME = "supervisord.pid"
ANSWER_TIMEOUT_S = 5.0  # a supervisord that takes longer is reported, not waited for
SUPERVISORD_MODULE = "supervisor.supervisord"
FORCE_HINT = "`mdpctl down --force` kills it and stops its programs"


def endpoint_for(run_dir: Path) -> SupervisorEndpoint:
    return SupervisorEndpoint(f"unix://{run_dir / SOCKET_NAME}")


def is_supervisord(argv: list[str]) -> bool:
    """True for supervisord however it was started: ``supervisord ...``,
    ``python .../supervisord ...`` or ``python -m supervisor.supervisord ...``."""
    if not argv:
        return False
    if os.path.basename(argv[0]).startswith("supervisord"):
        return True
    if not os.path.basename(argv[0]).startswith("python"):
        return False
    if "-m" in argv:
        index = argv.index("-m")
        return argv[index + 1:index + 2] == [SUPERVISORD_MODULE]
    script = next((word for word in argv[1:] if not word.startswith("-")), "")
    return os.path.basename(script).startswith("supervisord")


@dataclass(frozen=True)
class Daemon:
    """The supervisord that runs in a run directory."""

    run_dir: Path
    pid: int
    started: int  # with the pid, who it is (see procfs.Stat)

    def alive(self) -> bool:
        found = procfs.stat(self.pid)
        return found is not None and not found.zombie and found.started == self.started

    def stopped(self) -> bool:
        found = procfs.stat(self.pid)
        return found is not None and found.stopped

    def silence(self, timeout_s: float) -> str:
        """Why it does not answer, and what to do, as one phrase."""
        if self.stopped():
            return (f"supervisord (pid {self.pid}) of the cluster in {self.run_dir} is stopped "
                    "(SIGSTOP, or Ctrl-Z in its terminal) and answers nothing: "
                    f"`kill -CONT {self.pid}` resumes it")
        return (f"supervisord (pid {self.pid}) of the cluster in {self.run_dir} runs but did "
                f"not answer within {timeout_s:g} s (frozen or overloaded): wait and try again")


def find(run_dir: Path) -> Daemon | None:
    """The supervisord of ``run_dir`` by its pid file, if it runs (stopped or not)."""
    try:
        pid = int((run_dir / PID_FILE_NAME).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    found = procfs.stat(pid)
    if found is None or found.zombie or not procfs.owned(pid):
        return None
    if not is_supervisord(procfs.argv(pid)) or procfs.cwd(pid) != str(run_dir.resolve()):
        return None  # the pid file of a supervisord gone, its pid another process's now
    return Daemon(run_dir, pid, found.started)


def check_answers(run_dir: Path, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """Raise :class:`Unresponsive` when a supervisord runs in ``run_dir`` but does not
    answer (a stopped one at once, without waiting); else return."""
    daemon = find(run_dir)
    if daemon is None:
        return
    if not daemon.stopped():
        try:
            Supervisor(endpoint_for(run_dir), timeout_s=timeout_s).state()
            return
        except Unreachable:
            pass
    raise Unresponsive(f"{daemon.silence(timeout_s)}; or {FORCE_HINT}", daemon.pid, run_dir)


def kill(daemon: Daemon, timeout_s: float = 10.0) -> None:
    """SIGKILL ``daemon`` (stopped or not) and wait until it has exited; its programs run
    on, without it (see :mod:`mdpctl.leftovers`)."""
    if daemon.alive():
        try:
            os.kill(daemon.pid, signal.SIGKILL)
        except ProcessLookupError:
            return

    def check() -> str | None:
        return f"pid {daemon.pid} still runs" if daemon.alive() else None

    wait_until(check, timeout_s, "supervisord to exit after SIGKILL", interval_s=0.05)
