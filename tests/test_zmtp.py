"""The ZMTP 3 codec (mdp/zmtp.py) without sockets: what it sends, what it accepts, and that
hostile bytes (truncated, wrong, huge, random) give a ProtocolError naming what was wrong,
never another exception. The last test checks it against libzmq itself (a pyzmq ROUTER)."""

from __future__ import annotations

import random
import socket

import pytest
import zmq

from mdp.errors import ProtocolError
from mdp.zmtp import (
    COMMAND,
    GREETING_BYTES,
    LONG,
    MORE,
    ZmtpConnection,
    command,
    encode_message,
    frame_header,
    greeting,
    parse_properties,
    properties,
)

LIMIT = 1 << 20


def router_ready(kind: bytes = b"ROUTER", **extra: bytes) -> bytes:
    return command(b"READY", properties({b"Socket-Type": kind, **{
        k.encode(): v for k, v in extra.items()}}))


def peer_greeting(mechanism: bytes = b"NULL", major: int = 3, minor: int = 1) -> bytes:
    g = bytearray(greeting(mechanism))
    g[10], g[11] = major, minor
    return bytes(g)


def handshaken(limit: int = LIMIT) -> ZmtpConnection:
    conn = ZmtpConnection(limit)
    assert conn.receive_data(peer_greeting() + router_ready()) == []
    assert conn.ready
    conn.data_to_send()
    return conn


def message(*frames: bytes) -> bytes:
    return b"".join(encode_message(list(frames)))


# --- what we send ---------------------------------------------------------------------------


def test_the_first_bytes_are_a_null_greeting_and_a_dealer_ready() -> None:
    out = b"".join(ZmtpConnection(LIMIT).data_to_send())
    assert out[:10] == b"\xff" + bytes(8) + b"\x7f"
    assert out[10:12] == b"\x03\x01"
    assert out[12:32] == b"NULL" + bytes(16)
    assert out[32] == 0 and out[33:64] == bytes(31)
    ready = out[GREETING_BYTES:]
    assert ready[0] == COMMAND and ready[1] == len(ready) - 2
    assert ready[2:8] == b"\x05READY"
    assert parse_properties(ready[8:]) == {"socket-type": b"DEALER", "identity": b""}


def test_frames_use_the_short_form_below_256_bytes_and_the_long_form_from_it() -> None:
    assert frame_header(0, 255) == b"\x00\xff"
    assert frame_header(MORE, 256) == bytes([MORE | LONG]) + (256).to_bytes(8, "big")


def test_a_message_is_one_chunk_and_a_big_frame_is_its_own_uncopied_chunk() -> None:
    assert encode_message([b"", b"ab"]) == [b"\x01\x00\x00\x02ab"]
    big = b"x" * 70000
    chunks = encode_message([b"h", big, b"t"])
    assert chunks[1] is big
    assert b"".join(chunks) == (b"\x01\x01h" + frame_header(MORE, 70000) + big + b"\x00\x01t")


def test_messages_sent_before_the_handshake_wait_for_the_peers_ready() -> None:
    conn = ZmtpConnection(LIMIT)
    conn.data_to_send()
    conn.send_message([b"", b"hello"])
    assert conn.data_to_send() == []
    conn.receive_data(peer_greeting())
    assert conn.data_to_send() == []
    conn.receive_data(router_ready())
    assert b"".join(conn.data_to_send()) == message(b"", b"hello")


# --- what we accept -------------------------------------------------------------------------


def test_messages_come_whole_however_the_bytes_are_cut() -> None:
    wire = peer_greeting() + router_ready(Identity=b"") + message(b"", b"MDPC01", b"x" * 300) \
        + command(b"PING", b"\x00\x0actx") + message(b"one")
    for cut in (1, 2, 7, 64, 65, 100, len(wire)):
        conn = ZmtpConnection(LIMIT)
        got = []
        for i in range(0, len(wire), cut):
            got += conn.receive_data(wire[i:i + cut])
        assert got == [[b"", b"MDPC01", b"x" * 300], [b"one"]]
        out = b"".join(conn.data_to_send())
        assert out.endswith(command(b"PONG", b"ctx"))


def test_a_ping_is_answered_with_a_pong_carrying_its_context() -> None:
    conn = handshaken()
    conn.receive_data(command(b"PING", b"\x00\x1e"))
    assert b"".join(conn.data_to_send()) == command(b"PONG")
    conn.receive_data(command(b"PONG", b"x"))  # harmless
    assert conn.data_to_send() == []


def test_a_ping_between_the_frames_of_a_message_is_answered_and_the_message_kept() -> None:
    """libzmq sends a PING when its heartbeat timer fires, between frames if need be."""
    conn = handshaken()
    wire = b"\x01\x01a" + command(b"PING", b"\x00\x01") + b"\x00\x01b"
    assert conn.receive_data(wire) == [[b"a", b"b"]]
    assert b"".join(conn.data_to_send()) == command(b"PONG")


def test_a_zmtp_3_0_peer_is_accepted() -> None:
    conn = ZmtpConnection(LIMIT)
    conn.receive_data(peer_greeting(minor=0) + router_ready())
    assert conn.ready and conn.peer_version == (3, 0)


def test_property_names_are_case_insensitive() -> None:
    conn = ZmtpConnection(LIMIT)
    conn.receive_data(peer_greeting() + command(b"READY", properties(
        {b"SOCKET-TYPE": b"ROUTER", b"X-Extra": b"\x00\xff"})))
    assert conn.ready


def test_a_frame_at_the_limit_is_accepted() -> None:
    conn = handshaken(limit=1000)
    assert conn.receive_data(message(b"", b"y" * 1000)) == [[b"", b"y" * 1000]]


# --- what we refuse, and how it is named ------------------------------------------------------

HOSTILE = [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a ZMTP peer"),
    (b"\xff" + bytes(8) + b"\x01", "not a ZMTP 3 peer"),
    (peer_greeting(major=2)[:11], "ZMTP 2; ZMTP 3 is required"),
    (peer_greeting(b"CURVE"), "requires the CURVE security mechanism"),
    (peer_greeting(b"PLAIN"), "requires the PLAIN security mechanism"),
    (peer_greeting(b"NULL\x00X"), "bad mechanism padding"),
    (peer_greeting() + router_ready(b"DEALER"), "is a 'DEALER' socket; a ROUTER was expected"),
    (peer_greeting() + router_ready(b"PUB"), "is a 'PUB' socket"),
    (peer_greeting() + command(b"READY", b""), "names no Socket-Type"),
    (peer_greeting() + command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x09ROU"),
     "'socket-type' is cut off"),
    (peer_greeting() + command(b"READY", b"\x00"), "name is empty or cut off"),
    (peer_greeting() + command(b"READY", properties({b"Socket-Type": b"ROUTER"}) * 2),
     "given twice"),
    (peer_greeting() + command(b"READY", b"\x02\xff\xfe\x00\x00\x00\x00"), "not ASCII"),
    (peer_greeting() + command(b"HELLO", b""), "'HELLO' where READY was expected"),
    (peer_greeting() + command(b"ERROR", b"\x0eAccess denied!"),
     "closed the connection with ERROR: Access denied!"),
    (peer_greeting() + command(b"ERROR", b""), "ERROR: (no reason given)"),
    (peer_greeting() + b"\x00\x05hello", "a message before its READY"),
    (peer_greeting() + b"\x04\x00", "its name is empty or cut off"),
    (peer_greeting() + b"\x04\x02\x09R", "its name is empty or cut off"),
    (peer_greeting() + router_ready() + b"\x08\x00", "reserved flag bits"),
    (peer_greeting() + router_ready() + b"\x05\x00", "a command with the MORE flag"),
    (peer_greeting() + router_ready() + b"\x06" + (1 << 40).to_bytes(8, "big"),
     "larger than the limit of 65536"),
    (peer_greeting() + router_ready() + b"\x02" + (2**64 - 1).to_bytes(8, "big"),
     "a frame of 18446744073709551615 bytes is larger than the limit"),
    (peer_greeting() + router_ready() + b"\x02" + (LIMIT + 1).to_bytes(8, "big"),
     f"larger than the limit of {LIMIT} (max_reply_bytes)"),
    (peer_greeting() + router_ready() + command(b"PING", b"\x00"), "malformed ZMTP PING"),
    (peer_greeting() + router_ready() + router_ready(), "READY again, after its handshake"),
]


def test_commands_a_libzmq_peer_may_send_are_taken_as_libzmq_takes_them() -> None:
    """A PING's context past 16 bytes is cut in its PONG, and an unknown command in traffic
    (SUBSCRIBE, CANCEL, a later ZMTP's) is ignored, as libzmq does; messages go on."""
    conn = handshaken()
    conn.data_to_send()
    got = conn.receive_data(command(b"PING", b"\x00\x0a" + bytes(range(19)))
                            + command(b"SUBSCRIBE", b"x") + command(b"CANCEL", b"")
                            + command(b"FUTURE", b"?") + b"\x00\x02ok")
    assert got == [[b"ok"]]
    assert b"".join(conn.data_to_send()) == command(b"PONG", bytes(range(16)))


@pytest.mark.parametrize(("wire", "named"), HOSTILE)
def test_hostile_bytes_are_a_protocol_error_that_names_what_was_wrong(
        wire: bytes, named: str) -> None:
    conn = ZmtpConnection(LIMIT)
    with pytest.raises(ProtocolError, match=named.replace("(", r"\(").replace(")", r"\)")):
        conn.receive_data(wire)
    with pytest.raises(ProtocolError, match="has failed"):  # and the connection is dead
        conn.receive_data(b"")
    with pytest.raises(ProtocolError, match="has failed"):
        conn.send_message([b"x"])


def test_a_huge_size_is_refused_as_soon_as_it_is_read_not_after_the_bytes() -> None:
    conn = handshaken(limit=100)
    with pytest.raises(ProtocolError, match="101 bytes"):
        conn.receive_data(b"\x00\x65")  # the header alone


def test_a_message_of_too_many_frames_is_refused() -> None:
    conn = ZmtpConnection(LIMIT, max_frames=3)
    conn.receive_data(peer_greeting() + router_ready())
    assert conn.receive_data(b"\x01\x00" * 2 + b"\x00\x00") == [[b"", b"", b""]]
    with pytest.raises(ProtocolError, match="more than 3 frames"):
        conn.receive_data(b"\x01\x00" * 3)


def test_truncated_greetings_wait_for_more_bytes_and_never_fail() -> None:
    wire = peer_greeting() + router_ready()
    for n in range(len(wire)):
        conn = ZmtpConnection(LIMIT)
        assert conn.receive_data(wire[:n]) == []
        assert not conn.ready


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_give_a_protocol_error_or_nothing_never_a_crash(seed: int) -> None:
    rng = random.Random(seed)
    starts = [b"", peer_greeting(), peer_greeting() + router_ready()]
    for _ in range(400):
        conn = ZmtpConnection(1000, max_frames=50)
        head = rng.choice(starts)
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
        if rng.random() < 0.5 and noise:  # keep it plausible: flags that are mostly valid
            noise = bytes([rng.choice([0, 1, 2, 4])]) + noise[1:]
        try:
            for i in range(0, len(head + noise), 13):
                conn.receive_data((head + noise)[i:i + 13])
        except ProtocolError as exc:
            assert str(exc)


# --- against libzmq -----------------------------------------------------------------------------


def test_the_codec_talks_to_a_libzmq_router(zctx: zmq.Context) -> None:
    """Handshake, a message each way, and a PING from libzmq's heartbeat answered."""
    router = zctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.HEARTBEAT_IVL, 50)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 200)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn = ZmtpConnection(LIMIT)
        conn.send_message([b"", b"hello"])
        got: list[list[bytes]] = []

        def pump() -> None:
            for chunk in conn.data_to_send():
                sock.sendall(chunk)
            got.extend(conn.receive_data(sock.recv(65536)))

        pump()
        while not conn.ready:
            pump()
        for chunk in conn.data_to_send():  # what waited for the handshake
            sock.sendall(chunk)
        assert router.poll(5000)
        identity, *frames = router.recv_multipart()
        assert frames == [b"", b"hello"]
        router.send_multipart([identity, b"", b"world" * 100])
        while not got:
            pump()
        assert got == [[b"", b"world" * 100]]
        for _ in range(4):  # 4 x 50 ms of pings, each answered: still connected
            got.clear()
            sock.settimeout(0.1)
            try:
                pump()
            except TimeoutError:
                pass
        router.send_multipart([identity, b"still there"])
        sock.settimeout(5)
        while not got:
            pump()
        assert got == [[b"still there"]]
    finally:
        sock.close()
        router.close()
