"""Is a TCP port free for a program of the cluster, and if not, who holds it?

The check binds the way the programs do: libzmq (the brokers) and asyncio (mdp-http,
mdp-gearman) set ``SO_REUSEADDR`` on listening sockets, so a port whose last
connections sit in TIME-WAIT after ``mdpctl down`` is free for them, and for this check.
Only a socket that listens on the port (or binds it without that option) holds it.

The holder is found the way ``ss -ltnp`` finds it: the socket's inode in
``/proc/net/tcp`` (and ``tcp6``), then the process with a file descriptor on that inode.
A process of another user shows only its user id.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mdpctl import procfs

PROC = Path("/proc")
_LISTEN_STATE = "0A"


@dataclass(frozen=True)
class Holder:
    """The process that holds a port, as far as /proc lets us see it."""

    uid: int
    pid: int | None = None
    command: str = ""
    cwd: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"a process of user {_user(self.uid)} (not visible to this user)"
        command = " ".join(self.command.split())  # one line, whatever its arguments hold
        if len(command) > 80:
            command = command[:77] + "..."
        return f"pid {self.pid} ({command})"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def bind_error(host: str, port: int) -> OSError | None:
    """The error binding ``host:port`` with SO_REUSEADDR gives, or None when it is free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host}: {exc.strerror}")
    family, _type, _proto, _name, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)  # a listener elsewhere on the port shows up here on some kernels
        except OSError as exc:
            return exc
    return None


def _listening_inodes(port: int) -> Iterator[tuple[int, int]]:
    """(inode, uid) of every socket listening on ``port`` (any address)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN_STATE:
                continue
            local_port = int(fields[1].rpartition(":")[2], 16)
            if local_port == port:
                yield int(fields[9]), int(fields[7])


def _pid_with_inode(inode: int) -> int | None:
    target = f"socket:[{inode}]"
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _command(pid: int) -> str:
    words = procfs.argv(pid)
    if words and os.path.basename(words[0]).startswith("python") and len(words) > 1:
        words[0] = os.path.basename(words[0])
    return " ".join(words) or "?"


def holder(port: int) -> Holder | None:
    """Who listens on ``port``; None when nothing listens (or /proc cannot tell)."""
    for inode, uid in _listening_inodes(port):
        pid = _pid_with_inode(inode) if inode else None
        if pid is None:
            return Holder(uid)
        return Holder(uid, pid, _command(pid), procfs.cwd(pid))
    return None


def check_free(host: str, port: int) -> str | None:
    """None when the cluster's program can bind ``host:port``; else why not, in words."""
    error = bind_error(host, port)
    if error is None:
        return None
    if error.errno != errno.EADDRINUSE:
        return f"cannot bind {host}:{port}: {error.strerror or error}"
    found = holder(port)
    if found is None:
        return f"port {port} on {host} is in use (its holder is not visible)"
    return f"port {port} on {host} is in use by {found.describe()}"
