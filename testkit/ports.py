"""Free TCP ports on loopback for brokers, doors and peers started by tests and benchmarks."""

from __future__ import annotations

import socket
from collections.abc import Collection

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held open together so that
    they differ). Another process may take one before it is bound: a caller that cannot
    bind should try another."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """One port that was free a moment ago."""
    return free_ports(1)[0]


def tcp_endpoint(port: int) -> str:
    """The ZeroMQ endpoint of ``port`` on loopback."""
    return f"tcp://{LOOPBACK}:{port}"


def taken_port(avoid: Collection[int] = ()) -> socket.socket:
    """A socket listening on loopback on a port that is none of ``avoid`` (ports a test
    has chosen for its own programs), for tests of a port that is already in use. The
    kernel may hand out again a port that ``free_ports`` returned, since those are
    closed; a port in ``avoid`` is held while the next is asked for, so each is new."""
    rejected: list[socket.socket] = []
    try:
        while True:
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            if sock.getsockname()[1] not in avoid:
                sock.listen()
                return sock
            rejected.append(sock)
    finally:
        for sock in rejected:
            sock.close()
