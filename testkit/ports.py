"""Free TCP ports on loopback for brokers, doors and peers started by tests and benchmarks."""

from __future__ import annotations

import socket

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
