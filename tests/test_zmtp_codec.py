"""The ZMTP codec's fast paths (short frames in one chunk, short data frames parsed in one
test) against the general one: the same messages come out, whatever the split."""

from __future__ import annotations

import random

import pytest

from mdp.errors import ProtocolError
from mdp.zmtp import (
    JOIN_BELOW,
    JOIN_REST_BELOW,
    MORE,
    Phase,
    ZmtpConnection,
    encode_message,
    frame_header,
)


def _traffic(max_frame_bytes: int = 1 << 24) -> ZmtpConnection:
    conn = ZmtpConnection(max_frame_bytes, socket_type=b"ROUTER",
                          peer_types=frozenset({b"DEALER"}))
    conn.phase = Phase.TRAFFIC  # (as after a handshake: these tests are about frames)
    return conn


def _reference(frames: list[bytes]) -> bytes:
    """A message's wire bytes, frame by frame (the RFC's words, nothing joined)."""
    last = len(frames) - 1
    return b"".join(frame_header(MORE if i < last else 0, len(f)) + f
                    for i, f in enumerate(frames))


def _random_message(rng: random.Random) -> list[bytes]:
    sizes = [0, 1, 5, 254, 255, 256, 300, JOIN_BELOW - 1, JOIN_BELOW, 70_000]
    return [rng.randbytes(rng.choice(sizes)) for _ in range(rng.randint(1, 8))]


def test_an_encoded_message_is_its_frames_on_the_wire_short_or_long() -> None:
    rng = random.Random(7)
    for _ in range(300):
        frames = _random_message(rng)
        assert b"".join(bytes(c) for c in encode_message(frames)) == _reference(frames)


def test_encoding_from_start_leaves_the_first_frames_out() -> None:
    frames = [b"identity", b"", b"MDPW01", b"x" * 300, b"body"]
    assert encode_message(frames, 1) == encode_message(frames[1:])
    conn = _traffic()
    conn.data_to_send()  # (our greeting and READY)
    conn.send_message(frames, 1)
    assert b"".join(conn.data_to_send()) == _reference(frames[1:])


def test_a_message_of_short_frames_is_one_chunk_and_a_big_frame_is_not_copied() -> None:
    assert len(encode_message([b"", b"MDPW01", b"\x03", b"k" * 255])) == 1
    big = bytearray(JOIN_BELOW)
    chunks = encode_message([b"head", big, b"tail"])
    assert len(chunks) == 3 and chunks[1] is big


def test_messages_come_out_whole_and_as_bytes_however_the_bytes_are_cut() -> None:
    rng = random.Random(11)
    messages = [_random_message(rng) for _ in range(60)]
    wire = b"".join(_reference(m) for m in messages)
    for trial in range(20):
        conn = _traffic()
        got: list[list[bytes]] = []
        pos = 0
        while pos < len(wire):
            step = rng.choice([1, 2, 3, 9, 100, 4096, 70_000, 300_000])
            got += conn.receive_data(wire[pos:pos + step])
            pos += step
        assert got == messages, f"trial {trial}"
        assert all(type(f) is bytes for m in got for f in m)


def test_a_short_frame_over_a_small_limit_is_refused() -> None:
    conn = _traffic(max_frame_bytes=50)
    with pytest.raises(ProtocolError, match="larger than the limit of 50"):
        conn.receive_data(_reference([b"x" * 51]))


def test_a_ping_between_the_frames_of_a_message_is_answered_and_the_message_kept() -> None:
    conn = _traffic()
    ping = frame_header(0x04, 7) + b"\x04PING\x00\x00"
    wire = frame_header(MORE, 1) + b"a" + ping + frame_header(0, 1) + b"b"
    assert conn.receive_data(wire) == [[b"a", b"b"]]
    assert b"PONG" in b"".join(conn.data_to_send())


def test_the_messages_before_a_bad_frame_are_kept() -> None:
    conn = _traffic()
    good = _reference([b"one", b"two"]) + _reference([b"three"])
    with pytest.raises(ProtocolError, match="reserved flag bits"):
        conn.receive_data(good + b"\x80\x01x")
    assert conn.messages_before_failure == [[b"one", b"two"], [b"three"]]


@pytest.mark.parametrize("step", [2, 3, 7, 1000])
def test_too_many_frames_are_refused_however_they_come(step: int) -> None:
    conn = ZmtpConnection(1 << 20, max_frames=50, socket_type=b"ROUTER",
                          peer_types=frozenset({b"DEALER"}))
    conn.phase = Phase.TRAFFIC
    wire = (b"\x01\x01x" * 60) + b"\x00\x00"
    with pytest.raises(ProtocolError, match="more than 50 frames"):
        for pos in range(0, len(wire), step):
            conn.receive_data(wire[pos:pos + step])


def test_a_long_frame_sent_a_byte_at_a_time_grows_one_buffer_in_place() -> None:
    """A rest kept from the last receive is joined with the next into one bytes only while
    it is short (a message cut by the receive); past JOIN_REST_BELOW it grows in place, so
    a peer that sends a long frame a few bytes at a time is not copied again per piece
    (a 65,000-byte frame byte by byte: 248 ms of CPU against 90 with the old buffer)."""
    frame = bytes(range(256)) * 40  # 10,240 bytes: above JOIN_REST_BELOW, below JOIN_BELOW
    assert JOIN_REST_BELOW < len(frame) < JOIN_BELOW
    wire = _reference([b"", frame])
    conn = _traffic()
    got: list[list[bytes]] = []
    buffers: list[bytearray] = []  # (held: a freed buffer's id could come back)
    for i in range(len(wire)):
        got += conn.receive_data(wire[i:i + 1])
        if len(conn._in) > JOIN_REST_BELOW and len(buffers) < 100:
            buffers.append(conn._in)
    assert got == [[b"", frame]]
    assert len(buffers) == 100 and all(b is buffers[0] for b in buffers)
