"""Hostile input at the gateway: it stays up, serves the others, keeps its memory bounded."""

from __future__ import annotations

import random
import socket
import struct

from gwkit import Door, Raw, port_of, start_gateway

from mdp_gearman import packets as g
from mdp_gearman.packets import T
from testkit import broker_counter, count_workers, queue_depth, rss_bytes, wait_for


def _still_serves(port: int) -> None:
    raw = Raw(port)
    kind, args = raw.call(b"echo", b'{"alive": true}')
    assert (kind, args[1]) == (T.WORK_COMPLETE, b'{"alive": true}')
    raw.close()


def _drain(sock: socket.socket) -> bytes:
    """What the gateway sends until it closes (or 5 s of silence)."""
    sock.settimeout(5)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_random_truncated_and_lying_packets(door: Door) -> None:
    rng = random.Random(10)
    for i in range(60):
        sock = socket.create_connection(("127.0.0.1", door.port), timeout=5)
        kind = i % 4
        if kind == 0:  # noise
            sock.sendall(rng.choice([b"\0", b"\0REQ", b""]) + rng.randbytes(rng.randrange(300)))
        elif kind == 1:  # a real packet cut short
            packet = g.build_request(T.SUBMIT_JOB, b"echo", b"", b'{"x": 1}')
            sock.sendall(packet[:rng.randrange(1, len(packet))])
        elif kind == 2:  # a size that lies: more declared than sent
            sock.sendall(struct.pack(">4sII", b"\0REQ", T.SUBMIT_JOB, 5000) + b"echo\0\0x")
        else:  # a known type with a body of the wrong shape, then garbage types
            sock.sendall(g.build_request(T.GET_STATUS_UNIQUE, b"") +
                         g.build_request(T.SUBMIT_JOB, b"\xff\xfe") +
                         g.build_request(rng.randrange(43, 2**32), rng.randbytes(20)))
        sock.close()
    _still_serves(door.port)


def test_a_100_mb_declared_packet_is_refused_and_closed(door: Door) -> None:
    sock = socket.create_connection(("127.0.0.1", door.port), timeout=5)
    sock.sendall(struct.pack(">4sII", b"\0REQ", T.SUBMIT_JOB, 100 * 1024 * 1024) + b"echo\0")
    answer = _drain(sock)
    assert answer.startswith(b"\0RES") and b"declares 104857600 bytes; the limit" in answer
    sock.close()
    _still_serves(door.port)


def test_ten_thousand_deep_php_nesting_is_a_clear_error(door: Door) -> None:
    deep = b'a:1:{s:1:"k";' * 10_000 + b"N;" + b"}" * 10_000
    raw = Raw(door.port)
    raw.send(T.OPTION_REQ, b"exceptions")
    raw.recv()
    kind, args = raw.call(b"echo", deep)
    assert kind == T.WORK_EXCEPTION and b"nested deeper than 32" in args[1]
    kind, args = raw.call(b"echo", b"[" * 10_000 + b"{" * 10_000)  # raw: not JSON at the top
    assert kind == T.WORK_COMPLETE
    kind, args = raw.call(b"echo", b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
    assert kind == T.WORK_COMPLETE  # too deep for JSON: passes as raw bytes, not a crash
    raw.close()


def test_a_php_integer_spelled_as_a_float_fails_its_job_and_frees_its_unique_id(
        door: Door) -> None:
    """``i:INF;`` once passed the reader's check and then broke ``int()``: the job was
    created, never answered, and a later good job with its unique id joined it forever."""
    raw = Raw(door.port)
    raw.send(T.OPTION_REQ, b"exceptions")
    raw.recv()
    kind, args = raw.call(b"echo", b'a:1:{s:1:"x";i:INF;}', unique=b"inf-1")
    assert kind == T.WORK_EXCEPTION and b"bad integer" in args[1]
    kind, args = raw.call(b"echo", b'a:1:{s:1:"x";i:7;}', unique=b"inf-1")
    assert kind == T.WORK_COMPLETE
    raw.close()


def test_slow_readers_are_bounded_and_others_still_served(door: Door) -> None:
    gateway = start_gateway(door.cluster, door.brokers, "--max-jobs-per-connection", "32")
    port = port_of(gateway)
    before = rss_bytes(gateway.pid)
    replies_before = sum(broker_counter(e, "replies") for e in door.endpoints)
    big = b"z" * (512 * 1024)  # raw bytes: echo answers with ~0.5 MB each
    readers = []
    for _ in range(3):  # three clients that submit and never read
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        packet = g.build_request(T.SUBMIT_JOB, b"echo", b"", big)
        sent = 0
        for _ in range(400):  # as much as the gateway will take, without blocking
            try:
                sent += sock.send(packet)
            except BlockingIOError:
                break
        readers.append(sock)
    _still_serves(port)

    def settled() -> bool:
        """Readers' jobs have run and none is left at a broker: the gateway now holds all
        it will hold for them (it reads no more from a reader that does not read)."""
        done = sum(broker_counter(e, "replies") for e in door.endpoints) - replies_before
        return done >= 4 and all(queue_depth(e, "echo") == 0 and
                                 count_workers(e, "echo", "busy") == 0 for e in door.endpoints)

    wait_for(settled, 30, "the slow readers' jobs to have run")
    grown_mb = (rss_bytes(gateway.pid) - before) / 2**20
    assert grown_mb < 200, f"the gateway grew {grown_mb:.0f} MB for three slow readers"
    for sock in readers:
        sock.close()
    _still_serves(port)
    assert gateway.popen.poll() is None


def test_too_many_connections_are_refused_with_a_reason(door: Door) -> None:
    gateway = start_gateway(door.cluster, door.brokers, "--max-connections", "4")
    port = port_of(gateway)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    for sock in held:  # every one of them is served (and so registered)
        sock.sendall(g.build_request(T.ECHO_REQ, b"hi"))
        assert sock.recv(100).startswith(b"\0RES")
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert b"too many connections" in _drain(extra)
    for sock in held:
        sock.close()
    wait_for(lambda: _serves(port), 10, "the gateway to take connections again")


def _serves(port: int) -> bool:
    try:
        _still_serves(port)
        return True
    except (ConnectionError, AssertionError, OSError):
        return False
