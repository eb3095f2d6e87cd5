"""The broker's plain ROUTER (mdp/plainrouter.py) in this thread, with real peers: pyzmq
DEALER and REQ sockets (libzmq as the peer) and raw sockets speaking ZMTP through the codec
(peers that flood, stop mid-message, break the protocol or never answer a PING)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from mdp.plainrouter import (
    INBOX_MAX,
    POLL_EVERY,
    SENDMSG_MAX,
    WRITE_TURN_BYTES,
    PlainRouter,
)
from mdp.routers import PeerGone
from mdp.zmtp import LONG, ZmtpConnection, command, encode_message

LIMIT = 1 << 20


@pytest.fixture
def router() -> Iterator[PlainRouter]:
    r = PlainRouter(LIMIT)
    try:
        yield r
    finally:
        r.close()


def take(router: PlainRouter, count: int = 1, timeout_s: float = 5.0) -> list[list[bytes]]:
    """``count`` messages from the router, driving it meanwhile."""
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {len(got)} of {count} messages: {got[:3]}"
        frames, _ = router.recv_wait(50)
        if frames is not None:
            got.append(frames)
    return got


def drive_until(router: PlainRouter, done: Callable[[], object], timeout_s: float = 5.0,
                what: str = "condition") -> None:
    """Drive the router (its messages kept nowhere) until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        router.recv_wait(20)


def dealer(zctx: zmq.Context, endpoint: str, identity: bytes = b"",
           kind: int = zmq.DEALER) -> zmq.Socket:
    sock = zctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint)
    return sock


PEER_TIMEOUT_S = 5.0  # every blocking receive or send of a RawPeer gives up after this


class RawPeer:
    """A DEALER made of a plain blocking socket and the codec; it writes only when told."""

    def __init__(self, endpoint: str, identity: bytes = b"") -> None:
        host, _, port = endpoint[6:].rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=PEER_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (as libzmq sets it)
        self.conn = ZmtpConnection(LIMIT)
        self.got: list[list[bytes]] = []
        self.commands: list[bytes] = []  # raw bytes read (to find PINGs in)
        out = b"".join(self.conn.data_to_send())
        if identity:  # (the codec's READY has an empty Identity: put ours in)
            out = out.replace(b"\x08Identity\x00\x00\x00\x00",
                              b"\x08Identity" + len(identity).to_bytes(4, "big") + identity)
            out = out[:64] + bytes((out[64], out[65] + len(identity))) + out[66:]
        self.sock.sendall(out)

    def handshake(self, router: PlainRouter) -> None:
        self.sock.setblocking(False)
        drive_until(router, self._ready, what="the handshake")
        self.sock.settimeout(PEER_TIMEOUT_S)  # (setblocking(True) would wait for ever)

    def _ready(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return False
        self.commands.append(data)
        self.got += self.conn.receive_data(data)
        return self.conn.ready

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(encode_message(list(frames))))

    def read_some(self) -> bytes:
        """What has come (nothing when nothing has), without answering any PING."""
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return b""
        except ConnectionError:
            return b"<reset>"
        finally:
            self.sock.settimeout(PEER_TIMEOUT_S)  # (setblocking(True) would wait for ever)
        self.commands.append(data)
        return data if data else b"<closed>"

    def close(self) -> None:
        self.sock.close()


# --- binding --------------------------------------------------------------------------------


def test_a_tcp_bind_with_any_port_reports_the_port_it_got(router: PlainRouter) -> None:
    bound = router.bind("tcp://127.0.0.1:*")
    assert bound.startswith("tcp://127.0.0.1:") and not bound.endswith(":*")
    assert int(bound.rpartition(":")[2]) > 0
    assert router.bind("tcp://*:0").startswith("tcp://0.0.0.0:")
    assert router.endpoints == [bound, router.endpoints[1]]


def test_an_ipc_bind_takes_over_a_stale_file_and_removes_it_at_close(
        tmp_path: Path, zctx: zmq.Context) -> None:
    path = tmp_path / "broker.ipc"
    path.write_bytes(b"")  # left behind by a broker that died
    r = PlainRouter(LIMIT)
    try:
        assert r.bind(f"ipc://{path}") == f"ipc://{path}"
        peer = dealer(zctx, f"ipc://{path}")
        peer.send_multipart([b"", b"over ipc"])
        [(identity, *frames)] = take(r)
        assert frames == [b"", b"over ipc"]
        r.send([identity, b"", b"back"])
        r.flush()
        assert peer.recv_multipart() == [b"", b"back"]
    finally:
        r.close()
    assert not path.exists()


def test_a_port_in_use_is_an_os_error(router: PlainRouter) -> None:
    bound = router.bind("tcp://127.0.0.1:*")
    with pytest.raises(OSError):
        PlainRouter(LIMIT).bind(bound)


# --- libzmq peers ---------------------------------------------------------------------------


def test_two_dealers_with_and_without_identity_each_get_their_replies(
        router: PlainRouter, zctx: zmq.Context) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    named, anonymous = dealer(zctx, endpoint, b"named"), dealer(zctx, endpoint)
    named.send_multipart([b"", b"from named"])
    anonymous.send_multipart([b"", b"from anonymous"])
    got = {frames[2]: frames[0] for frames in take(router, 2)}
    assert got[b"from named"] == b"named"
    generated = got[b"from anonymous"]
    assert len(generated) == 5 and generated[0] == 0  # libzmq's form
    router.send([generated, b"", b"to anonymous"])
    router.send([b"named", b"", b"to named", b"x" * 300_000])  # (a big frame too)
    router.flush()
    assert anonymous.recv_multipart() == [b"", b"to anonymous"]
    assert named.recv_multipart() == [b"", b"to named", b"x" * 300_000]


def test_an_identity_in_use_gets_a_generated_one(router: PlainRouter,
                                                 zctx: zmq.Context) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    first = dealer(zctx, endpoint, b"twin")
    first.send(b"one")
    assert take(router) == [[b"twin", b"one"]]
    second = dealer(zctx, endpoint, b"twin")
    second.send(b"two")
    [(identity, body)] = take(router)
    assert body == b"two" and identity != b"twin" and identity[0] == 0


def test_a_req_peer_gets_its_reply(router: PlainRouter, zctx: zmq.Context) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    req = dealer(zctx, endpoint, kind=zmq.REQ)
    req.send(b"question")
    [(identity, empty, body)] = take(router)
    assert (empty, body) == (b"", b"question")
    router.send([identity, b"", b"answer"])
    router.flush()
    assert req.recv() == b"answer"


def test_a_send_to_an_unknown_or_gone_peer_fails(router: PlainRouter,
                                                 zctx: zmq.Context) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    with pytest.raises(PeerGone):
        router.send([b"nobody", b"x"])
    peer = dealer(zctx, endpoint, b"leaving")
    peer.send(b"hi")
    take(router)
    peer.close()
    drive_until(router, lambda: router.connections == 0, what="the peer's close")
    with pytest.raises(PeerGone):
        router.send([b"leaving", b"x"])
    assert router.identities() == []


def test_a_libzmq_peer_with_heartbeats_stays_connected(zctx: zmq.Context) -> None:
    """libzmq PINGs us and answers our PINGs: nothing is dropped over many timeouts."""
    r = PlainRouter(LIMIT, heartbeat_ms=50, timeout_ms=150)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        peer = dealer(zctx, endpoint, b"alive")
        peer.setsockopt(zmq.HEARTBEAT_IVL, 50)
        peer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 150)
        peer.send(b"hi")
        take(r)
        until = time.monotonic() + 1.0
        drive_until(r, lambda: time.monotonic() > until)
        r.send([b"alive", b"still"])
        r.flush()
        assert peer.recv() == b"still"
        assert r.connections == 1
    finally:
        r.close()


# --- raw peers ------------------------------------------------------------------------------


def test_a_peer_that_closes_mid_message_is_dropped_and_its_part_discarded(
        router: PlainRouter) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    other = RawPeer(endpoint, b"other")
    leaving = RawPeer(endpoint, b"leaving")
    other.handshake(router)
    leaving.handshake(router)
    leaving.send(b"whole")
    leaving.sock.sendall(bytes((1, 4)) + b"part")  # a first frame, MORE set, then nothing
    leaving.close()
    other.send(b"after")
    got = take(router, 2)
    assert sorted(got) == [[b"leaving", b"whole"], [b"other", b"after"]]
    drive_until(router, lambda: router.connections == 1, what="the drop")
    assert router.identities() == [b"other"]
    assert router.recv() is None  # nothing of the part


@pytest.mark.parametrize("hostile", [
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="not-zmtp"),
    pytest.param(bytes((LONG,)) + (LIMIT + 1).to_bytes(8, "big"), id="oversized-frame"),
    pytest.param(b"\xf0\x01x", id="reserved-flags"),
    pytest.param(command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x03PUB"), id="ready-again"),
])
def test_hostile_bytes_drop_only_their_connection(router: PlainRouter, hostile: bytes,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    good = RawPeer(endpoint, b"good")
    bad = RawPeer(endpoint, b"bad")
    good.handshake(router)
    if hostile.startswith(b"GET"):
        bad.sock.close()
        bad = RawPeer.__new__(RawPeer)
        bad.sock = socket.create_connection(("127.0.0.1", int(endpoint.rpartition(":")[2])))
        bad.commands = []
    else:
        bad.handshake(router)
    bad.sock.sendall(hostile)
    drive_until(router, lambda: router.connections == 1, what="the hostile peer's drop")
    assert router.identities() == [b"good"]
    assert "dropping peer" in caplog.text
    good.send(b"still served")
    assert take(router) == [[b"good", b"still served"]]


def test_a_wrong_socket_type_is_told_why_and_closed(router: PlainRouter,
                                                    zctx: zmq.Context) -> None:
    endpoint = router.bind("tcp://127.0.0.1:*")
    pub = zctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    monitor = pub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    pub.connect(endpoint)
    drive_until(router, lambda: monitor.poll(0), what="the PUB's handshake to fail")
    assert router.connections == 0


def test_a_flood_from_one_peer_does_not_starve_another(router: PlainRouter) -> None:
    """The quiet peer's message comes in the flood's first few, whether it was there
    before the flood was read or came after."""
    endpoint = router.bind("tcp://127.0.0.1:*")
    flooder, quiet = RawPeer(endpoint, b"flood"), RawPeer(endpoint, b"quiet")
    flooder.handshake(router)
    quiet.handshake(router)
    count = 20 * INBOX_MAX
    flood = b"".join(b"".join(encode_message([b"f%d" % i])) for i in range(count))
    flooder.sock.sendall(flood)
    quiet.send(b"before")
    got = take(router, 1)
    flooder.sock.sendall(flood)
    quiet.send(b"after")
    got += take(router, 2 * count + 1, timeout_s=20)
    before, after = got.index([b"quiet", b"before"]), got.index([b"quiet", b"after"])
    assert before < 4, f"the quiet peer's message came {before}th"
    assert after < POLL_EVERY + 4, f"the quiet peer's message came {after}th"
    assert [frames[1] for frames in got if frames[0] == b"flood"] == [
        b"f%d" % i for i in range(count)] * 2  # (each peer's in order)


def test_a_peer_that_never_answers_a_ping_is_dropped() -> None:
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        mute = RawPeer(endpoint, b"mute")
        mute.handshake(r)
        started = time.monotonic()
        drive_until(r, lambda: r.connections == 0, timeout_s=5, what="the mute peer's drop")
        took = time.monotonic() - started
        assert 0.3 <= took < 1.5, took
        with pytest.raises(PeerGone):
            r.send([b"mute", b"x"])
        seen = b"".join(mute.commands) + mute.read_some()
        assert b"\x04PING\x00\x00" in seen  # it was asked (TTL 0, as the pyzmq broker's)
    finally:
        r.close()


def test_a_peer_heard_from_every_tick_is_not_pinged_and_a_quiet_one_is() -> None:
    """Bytes since the last heartbeat tick say a peer is alive (a worker's own heartbeats):
    a PING would only bring a PONG back, two system calls more per worker a second. Once
    it falls quiet it is pinged, and dropped if it never answers."""
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        chatty = RawPeer(endpoint, b"chatty")
        chatty.handshake(r)
        until = time.monotonic() + 1.0  # (10 ticks, 3 timeouts)
        while time.monotonic() < until:
            chatty.send(b"", b"MDPW01", b"\x04")  # (a heartbeat, each 10th of a tick)
            r.recv_wait(10)
        assert r.identities() == [b"chatty"]
        assert b"PING" not in b"".join(chatty.commands) + chatty.read_some()
        drive_until(r, lambda: b"\x04PING" in chatty.read_some(), what="a PING once quiet")
        drive_until(r, lambda: r.connections == 0, what="the quiet peer's drop")
    finally:
        r.close()


def test_after_a_stall_of_the_loop_a_live_peer_is_pinged_before_any_verdict(
        zctx: zmq.Context) -> None:
    """A tick that heard a peer sends it no PING; if the broker's loop then stalls for a
    whole timeout (frozen, short of CPU), the peer, alive, had nothing to answer: it is
    pinged first and kept once it answers (libzmq's I/O thread answers for a pyzmq peer),
    not dropped at the first tick after the stall."""
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        sock = dealer(zctx, endpoint, b"quiet")
        sock.send(b"hello")
        assert take(r) == [[b"quiet", b"hello"]]
        (peer,) = r._peers.values()
        assert peer.heard
        drive_until(r, lambda: not peer.heard, what="a tick that heard it")
        time.sleep(0.45)  # the loop stalls for more than a timeout (what is tested, not a wait)
        until = time.monotonic() + 0.6  # then runs for two timeouts more
        while time.monotonic() < until and not peer.closed:
            r.recv_wait(20)
        assert not peer.closed  # (a dropped DEALER reconnects by itself: its first connection)
        assert list(r._peers.values()) == [peer]
    finally:
        r.close()


def test_without_heartbeats_a_silent_peer_stays() -> None:
    r = PlainRouter(LIMIT, heartbeat_ms=0)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        mute = RawPeer(endpoint, b"mute")
        mute.handshake(r)
        until = time.monotonic() + 0.5
        drive_until(r, lambda: time.monotonic() > until)
        assert r.identities() == [b"mute"]
    finally:
        r.close()


def test_a_silent_client_is_neither_pinged_nor_dropped() -> None:
    """A connection whose messages all carry a client header may stay silent: a sync client
    on a plain socket reads nothing while its caller is idle (its kernel is watched
    instead: TCP keepalive, tests/test_client_host_gone.py)."""
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        idle = RawPeer(endpoint, b"idle")
        idle.handshake(r)
        idle.send(b"", b"DIPC02", b"\x0a")
        idle.send(b"", b"MDPC01", b"echo", b"x")
        assert [frames[2] for frames in take(r, 2)] == [b"DIPC02", b"MDPC01"]
        until = time.monotonic() + 1.0  # (3x the timeout)
        drive_until(r, lambda: time.monotonic() > until)
        assert r.identities() == [b"idle"]
        assert b"PING" not in b"".join(idle.commands) + idle.read_some()
    finally:
        r.close()


@pytest.mark.parametrize("headers", [[b"MDPW01"], [b"DIPC02", b"MDPW01"], [b"other"]])
def test_a_silent_peer_that_ever_spoke_as_anything_but_a_client_is_dropped(
        headers: list[bytes]) -> None:
    """A worker's silence is how a frozen one is found: one message that is not a client's
    makes a connection an ordinary peer for good."""
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        mute = RawPeer(endpoint, b"mute")
        mute.handshake(r)
        for header in headers:
            mute.send(b"", header, b"\x01")
        take(r, len(headers))
        mute.send(b"", b"DIPC02", b"\x0a")
        take(r)
        drive_until(r, lambda: r.connections == 0, timeout_s=5, what="the mute peer's drop")
        assert b"\x04PING" in b"".join(mute.commands) + mute.read_some()
    finally:
        r.close()


def test_a_body_of_tens_of_mb_goes_through_uncopied_by_python(zctx: zmq.Context) -> None:
    """It comes out as a read-only view of the one buffer it was received into, and goes
    out from the caller's memory (a view or bytes)."""
    body = bytes(range(256)) * (30 << 12)  # 30 MiB
    r = PlainRouter(64 << 20)
    try:
        peer = dealer(zctx, r.bind("tcp://127.0.0.1:*"), b"big")
        peer.send_multipart([b"", b"MDPC02", b"\x01", body])
        [(identity, empty, header, command, got)] = take(r, timeout_s=20)
        assert (identity, empty, header, command) == (b"big", b"", b"MDPC02", b"\x01")
        assert isinstance(got, memoryview) and got.readonly and got == body
        r.send([b"big", b"", got])
        r.send([b"big", b"", body])
        r.flush()
        for _ in range(2):
            deadline = time.monotonic() + 20
            while not peer.poll(20):
                assert time.monotonic() < deadline
                r.recv_wait(20)  # (writes the rest as the socket takes it)
            assert peer.recv_multipart() == [b"", body]
    finally:
        r.close()


def test_a_peer_whose_messages_wait_for_a_busy_broker_is_not_taken_for_silent() -> None:
    """Its queue holds more than the router reads ahead, so it is not read while the broker
    works through it (slowly here): that silence is the broker's, not the peer's."""
    r = PlainRouter(LIMIT, heartbeat_ms=100, timeout_ms=300)
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        busy = RawPeer(endpoint, b"busy")
        busy.handshake(r)
        count = 20 * INBOX_MAX  # (one receive reads them all)
        busy.sock.sendall(b"".join(b"".join(encode_message([b"m"])) for _ in range(count)))
        take(r)
        until = time.monotonic() + 0.8
        while time.monotonic() < until:  # a slow broker: its timers run, the queue stays long
            take(r, 4)
            time.sleep(0.002)
        assert r.identities() == [b"busy"]
        assert r.recv() is not None
    finally:
        r.close()


# --- fixes from the review of the first plain router ----------------------------------------


def test_a_fast_reader_of_a_long_backlog_does_not_hold_the_loop(router: PlainRouter) -> None:
    """Another peer's message is taken while the backlog still drains: one turn writes a
    bounded amount to one peer (however fast it reads), the rest goes on EPOLLOUT."""
    endpoint = router.bind("tcp://127.0.0.1:*")
    slow, other = RawPeer(endpoint, b"slow"), RawPeer(endpoint, b"other")
    slow.handshake(router)
    other.handshake(router)
    count = 100_000  # small replies: 100,000 chunks, about 10 MB
    reply = [b"", b"MDPC02", b"\x02", b"svc", b"x" * 80]
    for _ in range(count):
        router.send([b"slow", *reply])
    router.flush()  # (the kernel's buffers alone would take megabytes: the peer does not read)
    chunk_bytes = len(b"".join(encode_message(reply)))  # (one chunk a reply)
    written = count - router.backlog(b"slow")
    assert 0 < written * chunk_bytes <= WRITE_TURN_BYTES + SENDMSG_MAX * chunk_bytes
    other.send(b"while it drains")
    stop = threading.Event()

    def reader() -> None:
        slow.sock.settimeout(0.1)
        while not stop.is_set():
            try:
                if not slow.sock.recv(1 << 20):
                    return
            except TimeoutError:
                pass

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    got: list[list[bytes]] = []
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline, "the other peer's message never came"
        frames, _ = router.recv_wait(50)
        if frames is not None:
            got.append(frames)
            backlog = router.backlog(b"slow")
    assert got == [[b"other", b"while it drains"]]
    assert backlog > 0, "the whole backlog was written before another peer was heard"
    try:
        drive_until(router, lambda: router.backlog(b"slow") == 0, timeout_s=30,
                    what="the backlog to drain")
    finally:
        stop.set()
        thread.join(5)
    slow.close()


class _WaitsRecorded:
    """An epoll that notes each wait with a timeout made while messages were ready."""

    def __init__(self, router: PlainRouter) -> None:
        self._router, self._epoll = router, router._epoll
        self.waits_with_messages_ready = 0

    def poll(self, timeout: float = -1) -> list[tuple[int, int]]:
        if timeout != 0 and self._router._ready:
            self.waits_with_messages_ready += 1
        return self._epoll.poll(timeout)

    def __getattr__(self, name: str) -> object:
        return getattr(self._epoll, name)


def test_messages_already_read_are_taken_without_waiting_for_the_sockets(
        router: PlainRouter) -> None:
    """Past POLL_EVERY messages the sockets are looked at again, never waited on, while
    messages read before still wait in the router."""
    endpoint = router.bind("tcp://127.0.0.1:*")
    peer = RawPeer(endpoint, b"burst")
    peer.handshake(router)
    recorder = _WaitsRecorded(router)
    router._epoll = recorder  # type: ignore[assignment]
    count = 3 * POLL_EVERY + 8  # (fewer than INBOX_MAX: one receive reads them all)
    peer.sock.sendall(b"".join(b"".join(encode_message([b"%d" % i])) for i in range(count)))
    got = take(router, count)
    assert [frames[1] for frames in got] == [b"%d" % i for i in range(count)]
    assert recorder.waits_with_messages_ready == 0


def test_whole_messages_before_a_bad_frame_are_delivered_then_the_peer_dropped(
        router: PlainRouter) -> None:
    """As libzmq does: a client's CANCEL just before garbage in the same segment is kept."""
    endpoint = router.bind("tcp://127.0.0.1:*")
    peer = RawPeer(endpoint, b"faulty")
    peer.handshake(router)
    oversize = bytes((LONG,)) + (LIMIT + 1).to_bytes(8, "big")
    peer.sock.sendall(b"".join(encode_message([b"", b"MDPC02", b"\x08", b"cancel me"]))
                      + b"".join(encode_message([b"", b"second"])) + oversize)
    got = take(router, 2)
    assert got == [[b"faulty", b"", b"MDPC02", b"\x08", b"cancel me"],
                   [b"faulty", b"", b"second"]]
    drive_until(router, lambda: router.connections == 0, what="the drop")
    assert router.recv() is None


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_big_frame_announced_but_not_sent_costs_no_memory_up_front() -> None:
    """Four peers each announce a body of 32 MiB and send one byte of it: the router does
    not commit 4 x 32 MiB (libzmq does not either)."""
    size = 32 << 20
    r = PlainRouter(size)
    peers: list[RawPeer] = []
    try:
        endpoint = r.bind("tcp://127.0.0.1:*")
        before = _rss_bytes()
        for i in range(4):
            peer = RawPeer(endpoint, b"big%d" % i)
            peer.handshake(r)
            peer.sock.sendall(b"\x01\x00" * 3 + bytes((LONG,)) + size.to_bytes(8, "big")
                              + b"x")
            peers.append(peer)
        drive_until(r, lambda: all(p.zmtp.big_target() is not None for p in r._peers.values()),
                    what="the big frames to start")
        grown = _rss_bytes() - before
        assert grown < size // 2, f"{grown >> 20} MiB committed for 4 bytes of bodies"
        rest = threading.Thread(target=peers[0].sock.sendall, args=(b"y" * (size - 1),),
                                daemon=True)
        rest.start()  # (and the buffer fills as it should)
        [(identity, *frames)] = take(r, timeout_s=20)
        rest.join(5)
        assert identity == b"big0" and frames[:3] == [b""] * 3
        assert frames[3] == b"x" + b"y" * (size - 1)
    finally:
        for peer in peers:
            peer.close()
        r.close()
