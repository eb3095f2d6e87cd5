"""Standard 7/MDP peers written here straight from the RFC frames, for the interop tests.

None of this is the ZeroMQ guide's code. Each peer reproduces one behaviour seen in a
peer that somebody else wrote (see ``/work/peers/README.md`` for the by-hand runs):

* :class:`MinimalWorker` is an RFC 7 worker; ``empty_after_client=False`` makes it leave
  out the empty frame after the client address in REPLY, as the guide's PHP worker
  (``mdwrkapi.php``) does; its ``answer`` decides the reply body, which need not be msgpack.
* :class:`MinimalBroker` is an RFC 7 broker that drops any message under a header it does
  not know (as the guide's brokers do: a DIPS client's PING goes unanswered) and records
  the order in which messages arrived; ``heartbeat_interval`` spaces its heartbeats the
  way the guide's brokers do (2.5 s nominal, 3-5 s between them in practice).
* :func:`php_style_pack` encodes a request the way php-msgpack does: every string, image
  bytes included, as msgpack *str*.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

MDPC, MDPW = b"MDPC01", b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"

Answer = Callable[[list[bytes]], list[bytes]]


def upper(body: list[bytes]) -> list[bytes]:
    """The default answer: every body frame upper-cased."""
    return [frame.upper() for frame in body]


class MinimalWorker(threading.Thread):
    """An RFC 7 worker that answers each REQUEST with ``answer(body)``; records every frame."""

    def __init__(self, ctx: zmq.Context, endpoint: str, service: bytes, *,
                 answer: Answer = upper, empty_after_client: bool = True) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.service = service
        self.answer = answer
        self.empty_after_client = empty_after_client
        self.received: list[list[bytes]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.send_multipart([b"", MDPW, READY, self.service])
        while not self.stop.is_set():
            if not self.sock.poll(100):
                self.sock.send_multipart([b"", MDPW, HEARTBEAT])
                continue
            frames = self.sock.recv_multipart()
            self.received.append(frames)
            if len(frames) >= 5 and frames[:3] == [b"", MDPW, REQUEST] and frames[4] == b"":
                client, body = frames[3], frames[5:]
                envelope = [client, b""] if self.empty_after_client else [client]
                self.sock.send_multipart([b"", MDPW, REPLY, *envelope, *self.answer(body)])
        self.sock.send_multipart([b"", MDPW, DISCONNECT])
        self.sock.close()


class MinimalBroker(threading.Thread):
    """An RFC 7 broker: one queue per service, idle workers in a list, nothing else.

    ``arrivals`` lists ``(header, command or service)`` of every message in the order it
    arrived; a message under an unknown header (a DIPS client's PING) is counted in
    ``dropped`` and never answered.
    """

    def __init__(self, ctx: zmq.Context, heartbeat_interval: float | None = None) -> None:
        """``heartbeat_interval`` None: heartbeat idle workers whenever 0.1 s pass quietly."""
        super().__init__(daemon=True)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeats_sent = 0
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop = threading.Event()
        self.headers_seen: set[bytes] = set()
        self.worker_commands_seen: set[bytes] = set()
        self.arrivals: list[tuple[bytes, bytes]] = []
        self.dropped = 0
        self.service_of: dict[bytes, bytes] = {}  # worker -> service of the request it holds

    def run(self) -> None:
        idle: dict[bytes, list[bytes]] = {}
        queue: dict[bytes, list[list[bytes]]] = {}
        heartbeat_at = time.monotonic() + (self.heartbeat_interval or 0.0)
        while not self.stop.is_set():
            ready = self.sock.poll(100)
            if self.heartbeat_interval is None and not ready or (
                    self.heartbeat_interval is not None and time.monotonic() >= heartbeat_at):
                heartbeat_at = time.monotonic() + (self.heartbeat_interval or 0.0)
                for workers in idle.values():
                    for w in workers:
                        self.sock.send_multipart([w, b"", MDPW, HEARTBEAT])
                        self.heartbeats_sent += 1
            if not ready:
                continue
            frames = self.sock.recv_multipart()
            if len(frames) < 4 or frames[1] != b"":
                self.dropped += 1
                continue
            sender, _, header, *rest = frames
            self.headers_seen.add(header)
            self.arrivals.append((header, rest[0]))
            if header == MDPC:
                service, *body = rest
                queue.setdefault(service, []).append([sender, *body])
            elif header == MDPW:
                self._worker(sender, rest, idle)
            else:
                self.dropped += 1  # unknown header: drop it, as the RFC's brokers do
            for service, pending in queue.items():
                while pending and idle.get(service):
                    worker = idle[service].pop(0)
                    self.service_of[worker] = service
                    client, *body = pending.pop(0)
                    self.sock.send_multipart([worker, b"", MDPW, REQUEST, client, b"", *body])
        self.sock.close()

    def _worker(self, sender: bytes, rest: list[bytes], idle: dict[bytes, list[bytes]]) -> None:
        command = rest[0]
        self.worker_commands_seen.add(command)
        if command == READY and len(rest) >= 2:
            idle.setdefault(rest[1], []).append(sender)
        elif command == REPLY and len(rest) >= 3 and rest[2] == b"" and sender in self.service_of:
            client, body = rest[1], rest[3:]
            service = self.service_of.pop(sender)
            self.sock.send_multipart([client, b"", MDPC, service, *body])
            idle[service].append(sender)

    def requests_arrived(self) -> int:
        """How many client requests (MDPC01) have arrived."""
        return sum(1 for header, _ in list(self.arrivals) if header == MDPC)

    def readies(self) -> int:
        """How many READY commands have arrived."""
        return sum(1 for a in list(self.arrivals) if a == (MDPW, READY))


def php_style_pack(request: dict[str, Any]) -> bytes:
    """msgpack as php-msgpack writes it: bytes go out as *str* (never *bin*)."""
    return msgpack.packb(request, use_bin_type=False)
