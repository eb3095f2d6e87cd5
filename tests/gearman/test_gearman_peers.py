"""Peers that mean harm, or merely speak oddly, against real door processes: results the
door must pass on byte for byte, a job path that must always end, packets that never
finish, floods that must not flood the log, and peer text in the admin listings."""

from __future__ import annotations

import os
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from gwkit import Raw, port_of, start_gateway

from clusterkit import FAST_HEARTBEAT, Cluster, Proc
from mdp_gearman import packets as g
from mdp_gearman.packets import T
from testkit import count_workers, wait_for

ODD_WORKER = Path(__file__).resolve().parent / "odd_worker.py"
EVIL_HOST = "evil\n.\nstatus\r\nX"


@dataclass
class Peers:
    cluster: Cluster
    brokers: list[Proc]
    gateway: Proc

    @property
    def port(self) -> int:
        return port_of(self.gateway)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """A broker, an echo worker, the odd worker (its READY names host EVIL_HOST) and a
    gateway."""
    cluster = Cluster(tmp_path_factory.mktemp("peers"))
    try:
        brokers = [cluster.broker()]
        cluster.worker(brokers, "echo")
        os.environ["ODD_HOST"] = EVIL_HOST  # inherited by this worker process only
        try:
            cluster._spawn([str(ODD_WORKER), "--broker", brokers[0].endpoint,
                            "--service", "odd", *FAST_HEARTBEAT], "odd-worker")
        finally:
            del os.environ["ODD_HOST"]
        wait_for(lambda: count_workers(brokers[0].endpoint, "odd") == 1, 20, "the odd worker")
        yield Peers(cluster, brokers, start_gateway(cluster, brokers, "--timeout", "5"))
    finally:
        cluster.stop_all()


def _exceptions(raw: Raw) -> Raw:
    raw.send(T.OPTION_REQ, b"exceptions")
    assert raw.recv()[0] == T.OPTION_RES
    return raw


ODD = b"\xff\xfe\xfd"
MSGPACK_NESTED = b"\x81\xa1k\xa3" + ODD  # {"k": that str}: JSON cannot hold it
EXPECTED = {  # workload format -> result asked for -> WORK_COMPLETE's bytes
    "json": {"str": ODD, "nested": MSGPACK_NESTED},
    "php": {"str": ODD, "nested": b'a:1:{s:1:"k";s:3:"' + ODD + b'";}'},
    "msgpack": {"str": ODD, "nested": MSGPACK_NESTED},
}


def _workload(kind: str, odd: str) -> bytes:
    if kind == "json":
        return b'{"odd": "%s"}' % odd.encode()
    if kind == "php":
        return b'a:1:{s:3:"odd";s:%d:"%s";}' % (len(odd), odd.encode())
    return msgpack.packb({"odd": odd})


@pytest.mark.parametrize("kind", ["json", "php", "msgpack"])
def test_a_result_str_that_is_not_utf8_reaches_the_client_as_the_bytes_its_worker_sent(
        peers: Peers, kind: str) -> None:
    """A PHP msgpack worker packs image bytes as a msgpack str: the client gets exactly
    those bytes (the door used to fail encoding them, and the job never ended)."""
    raw = _exceptions(Raw(peers.port))
    for odd, expected in EXPECTED[kind].items():
        kind_, args = raw.call(b"odd", _workload(kind, odd))
        assert (kind_, args[1]) == (T.WORK_COMPLETE, expected), (odd, args)
    raw.close()


def test_a_result_json_cannot_hold_comes_back_as_msgpack_and_frees_its_unique_id(
        peers: Peers) -> None:
    """A result Python's json cannot encode (1,000 levels deep, for a JSON workload) comes
    back as msgpack, as GEARMAN.md says of what JSON cannot hold (it used to fail the job
    with ``internal``: json's RecursionError was not caught); a second client with the same
    unique id then gets a job of its own, and GET_STATUS no longer knows the first."""
    deep: list[object] = []
    for _ in range(999):
        deep = [deep]
    raw = _exceptions(Raw(peers.port))
    raw.send(T.SUBMIT_JOB, b"odd", b"deep-1", b'{"odd": "deep"}')
    kind, args = raw.recv()
    assert kind == T.JOB_CREATED
    handle = args[0]
    kind, args = raw.recv()
    assert (kind, args[1]) == (T.WORK_COMPLETE, msgpack.packb(deep))
    kind, args = raw.call(b"odd", b'{"odd": "str"}', unique=b"deep-1")
    assert (kind, args[1]) == (T.WORK_COMPLETE, ODD)
    raw.send(T.GET_STATUS, handle)
    assert raw.recv() == (T.STATUS_RES, [handle, b"0", b"0", b"0", b"0"])
    raw.close()


def test_the_workers_listing_cleans_what_a_worker_says_of_itself(peers: Peers) -> None:
    """A DIPS worker whose READY names host "evil\\n.\\nstatus\\r\\nX" would end gearadmin's
    listing early and forge lines; it is listed on one line, cleaned."""
    raw = Raw(peers.port)
    wait_for(lambda: "dips-worker" in raw.line("workers"), 10, "the brokers' workers listed")
    listing = raw.line("workers")
    lines = listing.split("\n")
    assert lines[-2:] == [".", ""], listing
    odd = [line for line in lines if line.endswith(" : odd")]
    assert len(odd) == 1 and odd[0].startswith("- evil_._status__X dips-worker-"), listing
    assert all(line[:1].isdigit() or line.startswith("- ") for line in lines[:-2]), listing
    raw.close()


def test_floods_of_bad_packets_and_connections_log_a_bounded_number_of_lines(
        peers: Peers) -> None:
    """3,000 packets of an unknown type, 300 connections that cannot be framed and 300
    past --max-connections: each is answered, and the log keeps the first lines of each
    kind and the count of those it left out, not a line each."""
    gateway = start_gateway(peers.cluster, peers.brokers, "--max-connections", "2")
    port = port_of(gateway)
    sock = Raw(port)
    sock.sock.sendall(g.build_request(99) * 3000)
    sock.send(T.ECHO_REQ, b"sync")
    errors = [sock.recv() for _ in range(3000)]  # answered in order: each one was seen
    assert all(kind == T.ERROR and b"unknown or unsupported" in args[1] for kind, args in errors)
    assert sock.recv() == (T.ECHO_RES, [b"sync"])
    for _ in range(300):  # connections that cannot be framed: ERROR, then closed
        assert _drain(_connect(port, b"\0BAD" + bytes(8))).startswith(b"\0RES")
    held = Raw(port)  # the second connection: every later one is refused
    held.send(T.ECHO_REQ, b"held")
    assert held.recv() == (T.ECHO_RES, [b"held"])
    for _ in range(300):
        assert b"too_many_connections" in _drain(_connect(port, b""))

    def told_suppressed() -> bool:  # a later warning reports how many were left out
        sock.sock.sendall(g.build_request(99))
        return "similar lines suppressed" in gateway.output()

    wait_for(told_suppressed, 15, "the count of the warnings left out")
    lines = gateway.output().splitlines()
    for what in ("unknown or unsupported request", "bad magic", "connections already"):
        count = sum(what in line for line in lines)
        assert 1 <= count < 100, (what, count)
    sock.close()
    held.close()


def _connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(data)
    return sock


def _partial(port: int, size: int) -> socket.socket:
    """A connection that declares an ECHO_REQ of ``size`` bytes and sends half of them."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(struct.pack(">4sII", b"\0REQ", T.ECHO_REQ, size) + b"x" * (size // 2))
    return sock


def _drain(sock: socket.socket) -> bytes:
    """Everything the door sends until it closes the connection (which is then closed)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):  # the socket's timeout bounds each wait
            data += chunk
    return data


def test_a_stalled_packet_is_cut_and_one_waiting_for_the_budget_is_then_read(
        peers: Peers) -> None:
    """Two connections each start a 1 MiB packet under a 1 MiB budget: one holds it, the
    other waits unread. The holder sends no more and is cut (ERROR packet_stalled, closed)
    within its deadline; the waiter is then read, and served."""
    size = 1 << 20
    gateway = start_gateway(peers.cluster, peers.brokers, "--max-packet-bytes", str(size),
                            "--max-inflight-bytes", str(size), "--packet-grace", "1")
    first, second = _partial(port_of(gateway), size), _partial(port_of(gateway), size)
    wait_for(lambda: "waits for the in-flight budget" in gateway.output(), 10,
             "a connection waiting for the budget")
    readable, _, _ = select.select([first, second], [], [], 30)  # the door tells the holder
    assert readable, "no connection was cut"
    holder = readable[0]
    waiter = second if holder is first else first
    told = _drain(holder)
    assert b"packet_stalled" in told and b"stalled: 524288 arrived" in told, told
    assert b"within 1 s (--packet-grace)" in told, told
    waiter.sendall(b"x" * (size - size // 2))
    kind, args = Raw.over(waiter).recv()
    assert kind == T.ECHO_RES and len(args[0]) == size
    waiter.close()
    holder.close()
    assert gateway.popen.poll() is None


def test_a_connection_paused_at_its_job_limit_holds_no_share_of_the_budget(
        peers: Peers) -> None:
    """A client at --max-jobs-per-connection (its jobs waiting for a worker that no one
    offers) with a big packet under way: the door stops reading it, and the packet neither
    keeps its share of the budget (which another connection's packet then waited for until
    the jobs timed out, with no deadline running) nor is cut meanwhile."""
    size = 1 << 20
    gateway = start_gateway(peers.cluster, peers.brokers, "--max-packet-bytes", str(size),
                            "--max-inflight-bytes", str(size), "--max-jobs-per-connection",
                            "2", "--timeout", "60")
    port = port_of(gateway)
    paused = socket.create_connection(("127.0.0.1", port), timeout=30)
    paused.sendall(g.build_request(T.SUBMIT_JOB, b"nosuchservice", b"", b"{}") * 2 +
                   struct.pack(">4sII", b"\0REQ", T.ECHO_REQ, size) + b"x" * (size // 2))
    wait_for(lambda: "no worker offers it" in gateway.output(), 10, "the jobs to wait")
    other = socket.create_connection(("127.0.0.1", port), timeout=30)
    other.sendall(struct.pack(">4sII", b"\0REQ", T.ECHO_REQ, size) + b"y" * (size // 2))
    other.sendall(b"y" * (size - size // 2))
    kind, args = Raw.over(other).recv()  # read at once: the paused packet holds nothing
    assert kind == T.ECHO_RES and args[0] == b"y" * size
    assert "waits for the in-flight budget" not in gateway.output()
    other.close()
    paused.close()
    assert gateway.popen.poll() is None


def test_an_idle_connection_is_never_cut(peers: Peers) -> None:
    """Gearman workers sleep on idle connections: one that sent nothing, or only whole
    packets, is kept however long the packet deadlines of others run."""
    size = 64 * 1024
    gateway = start_gateway(peers.cluster, peers.brokers, "--max-packet-bytes", "65536",
                            "--max-inflight-bytes", "65536", "--packet-grace", "1")
    idle = Raw(port_of(gateway))
    idle.send(T.ECHO_REQ, b"before")
    assert idle.recv() == (T.ECHO_RES, [b"before"])
    stalled = _partial(port_of(gateway), size)
    assert b"packet_stalled" in _drain(stalled)  # a deadline went by
    idle.send(T.ECHO_REQ, b"after")
    assert idle.recv() == (T.ECHO_RES, [b"after"])
    idle.close()
