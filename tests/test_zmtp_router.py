"""The ROUTER side of the ZMTP codec (mdp/zmtp.py, as mdp/plainrouter.py drives it), without
sockets: its greeting and READY, the peers it takes (DEALER, REQ) and refuses (with an ERROR
for them), the peer's Identity, our PINGs, and hostile bytes."""

from __future__ import annotations

import mmap

import pytest

from mdp.errors import ProtocolError
from mdp.zmtp import (
    LONG,
    ROUTER_PEERS,
    ZmtpConnection,
    command,
    encode_message,
    greeting,
    parse_properties,
    properties,
)

LIMIT = 4096


def router() -> ZmtpConnection:
    return ZmtpConnection(LIMIT, socket_type=b"ROUTER", peer_types=ROUTER_PEERS,
                          limit_name="max_message_bytes")


def peer_hello(kind: bytes = b"DEALER", identity: bytes = b"") -> bytes:
    return greeting() + command(b"READY", properties({b"Socket-Type": kind,
                                                      b"Identity": identity}))


def message(*frames: bytes) -> bytes:
    return b"".join(encode_message(list(frames)))


def commands_in(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, data) of each short command frame in ``data``."""
    found, pos = [], 0
    while pos < len(data):
        flags, size = data[pos], data[pos + 1]
        assert not flags & LONG
        body = data[pos + 2:pos + 2 + size]
        found.append((body[1:1 + body[0]], body[1 + body[0]:]))
        pos += 2 + size
    return found


def test_a_router_greets_with_null_and_a_router_ready() -> None:
    out = b"".join(router().data_to_send())
    assert out[:64] == greeting()
    [(name, data)] = commands_in(out[64:])
    assert name == b"READY"
    assert parse_properties(data) == {"socket-type": b"ROUTER", "identity": b""}


@pytest.mark.parametrize("kind", [b"DEALER", b"REQ"])
def test_a_dealer_or_req_peer_is_taken_and_its_identity_kept(kind: bytes) -> None:
    conn = router()
    got = conn.receive_data(peer_hello(kind, b"me") + message(b"", b"hello"))
    assert conn.ready
    assert conn.peer_properties["identity"] == b"me"
    assert got == [[b"", b"hello"]]


@pytest.mark.parametrize("kind", [b"ROUTER", b"PUB", b"PAIR", b"STREAM"])
def test_another_socket_type_is_refused_with_an_error_for_the_peer(kind: bytes) -> None:
    conn = router()
    conn.data_to_send()
    with pytest.raises(ProtocolError, match="DEALER/REQ was expected"):
        conn.receive_data(peer_hello(kind))
    [(name, data)] = commands_in(b"".join(conn.data_to_send()))
    assert name == b"ERROR"
    assert data[1:] == b"invalid socket type"
    with pytest.raises(ProtocolError):  # dead from then on
        conn.receive_data(message(b"x"))


def test_a_frame_over_max_message_bytes_is_refused_when_its_size_is_read() -> None:
    conn = router()
    conn.receive_data(peer_hello())
    header = bytes((LONG,)) + (LIMIT + 1).to_bytes(8, "big")
    with pytest.raises(ProtocolError, match=r"larger than the limit of 4096 \(max_message_bytes"):
        conn.receive_data(header)


def test_a_frame_at_max_message_bytes_is_taken() -> None:
    conn = router()
    assert conn.receive_data(peer_hello() + message(b"x" * LIMIT)) == [[b"x" * LIMIT]]


def test_our_ping_carries_its_ttl_and_context_and_waits_for_the_handshake() -> None:
    conn = router()
    conn.data_to_send()
    conn.ping(30)
    assert conn.data_to_send() == []  # no PING before the peer's READY
    conn.receive_data(peer_hello())
    conn.data_to_send()
    conn.ping(30, b"ctx")
    assert commands_in(b"".join(conn.data_to_send())) == [(b"PING", b"\x00\x1ectx")]


def test_a_peers_ping_is_answered_and_its_pong_ignored() -> None:
    conn = router()
    conn.receive_data(peer_hello())
    conn.data_to_send()
    assert conn.receive_data(command(b"PING", b"\x00\x00ab") + command(b"PONG", b"")) == []
    assert commands_in(b"".join(conn.data_to_send())) == [(b"PONG", b"ab")]


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\xff" + bytes(8) + b"\x01",
    greeting() + message(b"data before READY"),
    greeting() + command(b"READY", b"\x00"),
    peer_hello() + b"\xf1\x00",
    peer_hello() + command(b"READY", properties({b"Socket-Type": b"DEALER"})),
])
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        router().receive_data(garbage)


def test_a_big_body_comes_whole_as_a_read_only_view_however_it_is_cut() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    conn = ZmtpConnection(2 * len(body), socket_type=b"ROUTER", peer_types=ROUTER_PEERS,
                          keep_big_from=2)
    data = peer_hello() + message(b"", b"MDPC02", body, b"tail") + message(b"next")
    got: list[list[bytes]] = []
    for at in range(0, len(data), 100_003):
        got += conn.receive_data(data[at:at + 100_003])
    assert got == [[b"", b"MDPC02", body, b"tail"], [b"next"]]
    assert isinstance(got[0][2], memoryview) and got[0][2].readonly
    assert type(got[0][1]) is bytes  # (before keep_big_from: bytes, whatever their size)


def test_a_big_body_may_be_received_straight_into_its_buffer() -> None:
    body = b"x" * 600_000
    conn = ZmtpConnection(1 << 20, socket_type=b"ROUTER", peer_types=ROUTER_PEERS,
                          keep_big_from=0)
    data = peer_hello() + message(body)
    head = len(data) - len(body) + 1000
    assert conn.receive_data(data[:head]) == []
    target = conn.big_target()
    assert target is not None and len(target) == len(data) - head
    target[:] = data[head:]
    assert conn.big_received(len(target)) == [[body]]
    assert conn.big_target() is None


def test_messages_before_a_fault_in_the_same_bytes_are_kept_for_the_owner() -> None:
    conn = router()
    conn.receive_data(peer_hello())
    oversize = bytes((LONG,)) + (LIMIT + 1).to_bytes(8, "big")
    with pytest.raises(ProtocolError, match="larger than the limit"):
        conn.receive_data(message(b"", b"cancel") + message(b"two") + oversize)
    assert conn.messages_before_failure == [[b"", b"cancel"], [b"two"]]


def test_a_big_frame_is_received_into_memory_committed_as_it_comes() -> None:
    """Its buffer is an anonymous mapping (untouched pages cost nothing), filled in place."""
    size = 8 << 20
    conn = ZmtpConnection(size, socket_type=b"ROUTER", peer_types=ROUTER_PEERS,
                          keep_big_from=0)
    conn.receive_data(peer_hello() + bytes((LONG,)) + size.to_bytes(8, "big") + b"ab")
    assert isinstance(conn._big, mmap.mmap)
    target = conn.big_target()
    assert target is not None and len(target) == size - 2
    target[:] = b"c" * (size - 2)
    target.release()
    [[frame]] = conn.big_received(size - 2)
    assert isinstance(frame, memoryview) and frame.readonly
    assert frame[:3] == b"abc" and len(frame) == size
