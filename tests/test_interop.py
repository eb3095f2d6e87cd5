"""Interop with standard 7/MDP peers written here straight from the RFC frames.

* A minimal client (REQ) and a minimal worker (DEALER) work through our broker, and see
  exactly the standard frames, none of the DIPS extensions.
* Our client and worker work through a minimal standard broker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from clusterkit import Cluster, wait_for
from mdp.client import MDPClient

MDPC, MDPW = b"MDPC01", b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


class MinimalWorker(threading.Thread):
    """An RFC 7 worker that upper-cases its body and records every frame it received."""

    def __init__(self, ctx: zmq.Context, endpoint: str, service: bytes) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.service = service
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
            if frames[2] == REQUEST:
                client, body = frames[3], frames[5:]
                upper = [b.upper() for b in body]
                self.sock.send_multipart([b"", MDPW, REPLY, client, b"", *upper])
        self.sock.send_multipart([b"", MDPW, DISCONNECT])
        self.sock.close()


class MinimalBroker(threading.Thread):
    """An RFC 7 broker: one queue per service, idle workers in a list, nothing else."""

    def __init__(self, ctx: zmq.Context) -> None:
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stop = threading.Event()
        self.headers_seen: set[bytes] = set()
        self.worker_commands_seen: set[bytes] = set()
        self.dropped = 0
        self.service_of: dict[bytes, bytes] = {}  # worker -> service of the request it holds

    def run(self) -> None:
        idle: dict[bytes, list[bytes]] = {}
        queue: dict[bytes, list[list[bytes]]] = {}
        while not self.stop.is_set():
            if not self.sock.poll(100):
                for workers in idle.values():
                    for w in workers:
                        self.sock.send_multipart([w, b"", MDPW, HEARTBEAT])
                continue
            sender, empty, header, *rest = self.sock.recv_multipart()
            self.headers_seen.add(header)
            if header == MDPC:
                service, *body = rest
                queue.setdefault(service, []).append([sender, *body])
            elif header == MDPW:
                command = rest[0]
                self.worker_commands_seen.add(command)
                if command == READY:
                    service = rest[1]
                    idle.setdefault(service, []).append(sender)
                elif command == REPLY:
                    client, _, *body = rest[1:]
                    service = self.service_of.pop(sender)
                    self.sock.send_multipart([client, b"", MDPC, service, *body])
                    idle[service].append(sender)
            else:
                self.dropped += 1  # unknown header: drop it, as the RFC's brokers do
            for service, pending in queue.items():
                while pending and idle.get(service):
                    worker = idle[service].pop(0)
                    self.service_of[worker] = service
                    client, *body = pending.pop(0)
                    self.sock.send_multipart([worker, b"", MDPW, REQUEST, client, b"", *body])
        self.sock.close()


@pytest.fixture
def minimal_broker(zctx: zmq.Context) -> Iterator[MinimalBroker]:
    broker = MinimalBroker(zctx)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop.set()
        broker.join(5)


def test_standard_client_and_worker_through_our_broker(cluster: Cluster, zctx: zmq.Context) -> None:
    broker = cluster.broker()
    worker = MinimalWorker(zctx, broker.endpoint, b"upper")
    worker.start()
    try:
        with MDPClient([broker.endpoint]) as probe:
            wait_for(lambda: probe.mmi_service("upper") == "200", 5, "minimal worker to register")
        client = zctx.socket(zmq.REQ)
        client.linger = 0
        client.connect(broker.endpoint)
        for word in (b"hello", b"majordomo"):
            client.send_multipart([MDPC, b"upper", word])
            assert client.poll(5000), "no reply through our broker"
            assert client.recv_multipart() == [MDPC, b"upper", word.upper()]
        client.send_multipart([MDPC, b"mmi.service", b"upper"])
        assert client.poll(5000)
        assert client.recv_multipart() == [MDPC, b"mmi.service", b"200"]
        client.close()
    finally:
        worker.stop.set()
        worker.join(5)
    requests = [f for f in worker.received if f[2] == REQUEST]
    assert len(requests) == 2
    assert all(len(f) == 6 and f[:3] == [b"", MDPW, REQUEST] and f[4] == b"" for f in requests)
    assert {f[2] for f in worker.received} <= {REQUEST, HEARTBEAT}  # no DIPS commands


def test_our_client_and_worker_through_a_standard_broker(
    cluster: Cluster, minimal_broker: MinimalBroker
) -> None:
    cluster.worker([minimal_broker.endpoint], "echo", wait=False)
    wait_for(lambda: READY in minimal_broker.worker_commands_seen, 10, "READY")
    with MDPClient([minimal_broker.endpoint], timeout=5, shuffle=False) as client:
        assert client.send("echo", {"plain": True}) == {"plain": True}
        requests = [{"i": i} for i in range(20)]
        assert client.send_many("echo", requests) == requests
    assert minimal_broker.headers_seen <= {MDPC, MDPW, b"DIPC01"}
    assert minimal_broker.dropped >= 1  # our client's opening PING, dropped as unknown
    assert minimal_broker.worker_commands_seen <= {READY, REPLY, HEARTBEAT, DISCONNECT}


def test_standard_client_gets_a_msgpack_error_for_unknown_service(
    cluster: Cluster, zctx: zmq.Context
) -> None:
    broker = cluster.broker(None, "--unknown-grace", "0.2")
    client = zctx.socket(zmq.REQ)
    client.linger = 0
    client.connect(broker.endpoint)
    client.send_multipart([MDPC, b"nobody", msgpack.packb({})])
    assert client.poll(5000)
    header, service, body = client.recv_multipart()
    assert (header, service) == (MDPC, b"nobody")
    assert msgpack.unpackb(body)["error"]["code"] == "unknown_service"
