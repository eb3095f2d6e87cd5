"""One fleet-changing command at a time: up, reload, scale and down hold an exclusive lock.

Two rollouts at once would each count the other's stopped worker as missing and could
take a service below N-1 workers.  The lock is a file: in the run directory for the
local cluster, in the temporary directory (named after the cluster file) otherwise.  It
guards the operators of one machine; operators on several machines must agree who acts.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mdpctl.errors import CtlError


def lock_path(run_dir: Path, cluster_file: Path | None) -> Path:
    if cluster_file is None and run_dir.is_dir():
        return run_dir / "mdpctl.lock"
    named = cluster_file.resolve() if cluster_file is not None else run_dir
    digest = hashlib.sha1(str(named).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mdpctl-{digest}.lock"


@contextmanager
def exclusive(path: Path, what: str, doing: str | None = None) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; refuse at once if someone else holds it.

    ``doing`` (default: "`mdpctl WHAT` is changing this cluster") is recorded in the lock
    file with the pid, for the refusal of whoever comes next."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _holder_record(fd)
            holder = record[0].strip() if record and record[0].strip() else "?"
            theirs = record[1].strip() if len(record) > 1 else "mdpctl is changing this cluster"
            raise CtlError(
                f"cannot {what}: another {theirs} (pid {holder}); try again when it is done "
                f"(lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        doing = doing or f"`mdpctl {what}` is changing this cluster"
        os.pwrite(fd, f"{os.getpid()}\n{doing}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder_record(fd: int, wait_s: float = 0.5) -> list[str]:
    """The lines the holder wrote: its pid, what it does (read again for a moment while
    empty: a holder that has just taken the lock writes them next)."""
    deadline = time.monotonic() + wait_s
    while True:
        record = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
        if record or time.monotonic() >= deadline:
            return record
        time.sleep(0.01)
