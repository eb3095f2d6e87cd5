"""A fake broker for the plain-socket transports' tests: a TCP server that answers every
connection with a function of the connection (garbage, a wrong ZMTP socket type, a ROUTER
that then misbehaves ...). ``ROUTER_READY`` is what a real ROUTER sends first; ``garbage``
and ``wrong_type`` are two such answers that every plain transport must refuse."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from mdp.zmtp import command, greeting, properties
from testkit.ports import LOOPBACK

ROUTER_READY = greeting() + command(b"READY", properties({b"Socket-Type": b"ROUTER"}))


class FakeBroker:
    """A TCP server on loopback that answers every connection with ``reply(connection)``
    (in its own thread, one connection at a time; ``connections`` counts them)."""

    def __init__(self, reply: Callable[[socket.socket], None]) -> None:
        self.server = socket.create_server((LOOPBACK, 0))
        self.endpoint = f"tcp://{LOOPBACK}:{self.server.getsockname()[1]}"
        self.reply = reply
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(5)
            try:
                self.reply(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self.server.close()
        self._thread.join(5)


def garbage(conn: socket.socket) -> None:
    """Not ZMTP at all (an HTTP server's answer)."""
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    conn.recv(100)


def wrong_type(conn: socket.socket) -> None:
    """ZMTP from a socket type a DEALER cannot talk to."""
    conn.sendall(greeting() + command(b"READY", properties({b"Socket-Type": b"PUB"})))
    conn.recv(100)
