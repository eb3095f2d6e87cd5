"""What Linux's /proc tells about a process of this machine: its state, start time, command
line, working directory and environment.

Every reader returns None (or an empty answer) when the process is gone or not ours to
read, never raises: a process may exit between two looks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
STOPPED_STATES = frozenset({"T", "t"})  # stopped by a signal (SIGSTOP, Ctrl-Z), or traced


@dataclass(frozen=True)
class Stat:
    """A process's state letter (R, S, D, T, Z ...) and start time (clock ticks after
    boot: with the pid, who it is)."""

    state: str
    started: int

    @property
    def stopped(self) -> bool:
        return self.state in STOPPED_STATES

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def stat(pid: int) -> Stat | None:
    """The process's state and start time (fields 3 and 22 of its stat); None when gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return Stat(fields[0], int(fields[19]))


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited)."""
    found = stat(pid)
    return found is not None and not found.zombie


def argv(pid: int) -> list[str]:
    """The process's command line, one word each ([] when gone or a kernel thread)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [word.decode(errors="replace") for word in raw.split(b"\0") if word]


def cwd(pid: int) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "cwd")
    except OSError:
        return None


def has_environ(pid: int, entry: bytes) -> bool:
    """True when the process started with ``entry`` (``NAME=VALUE``) in its environment."""
    try:
        return entry in (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def owned(pid: int) -> bool:
    """True when the process is this user's."""
    try:
        return (PROC / str(pid)).stat().st_uid == os.getuid()
    except OSError:
        return False


def pids() -> list[int]:
    """Every process of the machine that /proc shows, but this one."""
    me = os.getpid()
    return [int(e.name) for e in PROC.iterdir() if e.name.isdigit() and int(e.name) != me]
