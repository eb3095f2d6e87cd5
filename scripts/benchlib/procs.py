"""Child processes and /proc readings.

Every process the suite starts goes through :class:`Children`, which kills all of them at the
end (SIGCONT first, so a stopped one dies too), on error and on Ctrl-C alike. Each child also
asks the kernel to kill it when the suite dies (``PR_SET_PDEATHSIG``), so nothing outlives a
``kill -9`` of the suite. Children that take part in measurements speak a line protocol on
stdin/stdout (see ``benchlib.roles``); every wait on them has a timeout.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import testkit
from testkit import cpu_seconds, wakeups

SCRIPTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = SCRIPTS_DIR.parent
_PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class BenchError(Exception):
    """A benchmark step failed: a child died, answered garbage, or a wait timed out."""


def child_env() -> dict[str, str]:
    """The environment of every child: this checkout's ``mdp`` and ``benchlib`` first."""
    paths = [str(SCRIPTS_DIR), str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """:func:`testkit.wait_for`, failing a benchmark step with BenchError."""
    return testkit.wait_for(predicate, timeout_s, what, error=BenchError)


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the suite dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One child process; ``talk`` children are driven by lines on stdin/stdout."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, talk: bool) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
                stdout=subprocess.PIPE if talk else log,
                stderr=log,
                env=child_env(),
                cwd=REPO_ROOT,
                start_new_session=True,  # Ctrl-C reaches the suite only; it kills the rest
                preexec_fn=_die_with_parent,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        if talk:
            threading.Thread(target=self._read_lines, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _read_lines(self) -> None:
        stdout: IO[bytes] | None = self.popen.stdout
        assert stdout is not None
        for raw in stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def expect(self, prefix: str, timeout_s: float) -> str:
        """The rest of the next stdout line starting with ``prefix`` (other lines skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {prefix!r} line in {timeout_s:g}s"
                                 f"{self.log_tail()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"{self.name} exited (code {self.popen.wait(5)}) before "
                                 f"saying {prefix!r}{self.log_tail()}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def tell(self, line: str) -> None:
        stdin = self.popen.stdin
        if stdin is None:
            raise BenchError(f"{self.name} takes no input")
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise BenchError(f"{self.name} is gone ({exc}){self.log_tail()}") from exc

    def send_signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGCONT then SIGKILL, and reap; never waits more than a few seconds."""
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if self.alive():
            for signum in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(self.pid, signum)
                except ProcessLookupError:
                    break
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} (pid {self.pid}) did not die", file=sys.stderr)

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  log " + str(self.log_path) + ":\n    " + "\n    ".join(text)) if text else ""


class Children:
    """Starts children, with a log file each in ``log_dir``, and kills them all at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._all: list[Child] = []
        self._count = 0

    def spawn(self, name: str, argv: Sequence[str], talk: bool = False) -> Child:
        self._count += 1
        log_path = self.log_dir / f"{self._count:03d}-{name}.log"
        child = Child(name, argv, log_path, talk)
        self._all.append(child)
        return child

    def role(self, name: str, role: str, *args: str) -> Child:
        """A ``benchlib.roles`` child, driven by lines."""
        return self.spawn(name, [sys.executable, "-m", "benchlib.roles", role, *args], talk=True)

    def python(self, name: str, *args: str) -> Child:
        """``python ARGS`` (e.g. ``-m mdp.broker ...``), output to its log."""
        return self.spawn(name, [sys.executable, *args])

    def kill(self, *children: Child) -> None:
        for child in children:
            child.kill()
            if child in self._all:
                self._all.remove(child)

    def kill_all(self) -> None:
        children, self._all = self._all, []
        for child in children:
            child.kill()


# --- /proc -------------------------------------------------------------------------------


class CpuWindow:
    """CPU used, and sleeps taken, by one process between ``__init__`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = cpu_seconds(pid)
        self.wakeups0 = wakeups(pid)
        self.wall0 = time.monotonic()
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.wakeups = 0

    def stop(self) -> CpuWindow:
        self.cpu_s = cpu_seconds(self.pid) - self.cpu0
        self.wakeups = wakeups(self.pid) - self.wakeups0
        self.wall_s = time.monotonic() - self.wall0
        return self

    @property
    def share(self) -> float:
        """Fraction of one core."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0
