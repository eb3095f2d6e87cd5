"""A minimum transfer rate for replies (``--min-send-rate``): a peer that acknowledges a
byte now and then is never cut by ``--send-timeout`` alone (nor by nginx's
``send_timeout``); it is cut when it takes its reply slower than the rate over a window."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from httpkit import ask_for_blob, start_gateway

from clusterkit import Cluster, Proc
from mdp.errors import ConfigError
from mdp_http.config import HttpConfig
from mdp_http.connlimit import Sending, judge
from testkit import wait_for

# --- the decision, without sockets ----------------------------------------------------------


def run(acks: list[tuple[float, int]], timeout_s: float = 10.0,
        rate: float = 100.0) -> tuple[float, str] | None:
    """Feed (time, bytes acknowledged) sweeps to :func:`judge`; when and why it cuts."""
    state: Sending | None = None
    for now, acked in acks:
        state, cut = judge(state, acked, now, timeout_s, rate)
        if cut is not None:
            return now, cut
    return None


def test_a_peer_that_takes_nothing_is_cut_after_the_timeout() -> None:
    assert run([(t, 500) for t in range(30)]) == (10, "stalled")


def test_a_peer_that_acknowledges_a_byte_now_and_then_is_cut_by_the_rate() -> None:
    """One byte every 5 s never stalls for 10 s: only the rate (100 B/s) catches it."""
    trickle = [(t, 500 + t // 5) for t in range(60)]
    assert run(trickle, rate=0.0) is None  # --send-timeout alone: never cut
    assert run(trickle) == (10, "slow")


def test_a_steady_peer_above_the_rate_is_never_cut() -> None:
    assert run([(t, 150 * t) for t in range(120)]) is None
    bursty = [(t, 2000 * (t // 9)) for t in range(120)]  # 2,000 B every 9 s: 222 B/s
    assert run(bursty) is None


def test_the_rate_is_judged_over_whole_windows() -> None:
    # fast for one window, then a trickle: the second window judges the trickle alone
    acks = [(t, 5000 if t >= 1 else 0) for t in range(11)]
    acks += [(t, 5000 + (t - 10)) for t in range(11, 40)]
    assert run(acks) == (20, "slow")  # the second window: t = 10 to 20


def test_the_rate_must_be_a_number_of_bytes() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        config = HttpConfig(brokers=["tcp://127.0.0.1:5555"], min_send_rate=bad)
        with pytest.raises(ConfigError, match="--min-send-rate"):
            config.validate()


# --- a real door and a real slow reader -------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Proc]]:
    cluster = Cluster(tmp_path_factory.mktemp("http-send-rate"))
    try:
        broker = cluster.broker()
        cluster.worker([broker], "slow", faulty=True)
        yield cluster, broker
    finally:
        cluster.stop_all()


def trickle(sock: socket.socket, limit_s: float) -> tuple[int, bool]:
    """Read 256 bytes every 20 ms (at most 12.8 KB/s: a pace, not a wait) until the door
    cuts the connection or ``limit_s`` passes; (bytes read, whether it was cut)."""
    received, deadline = 0, time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(256)
        except (ConnectionResetError, TimeoutError):
            return received, True
        if not chunk:
            return received, True
        received += len(chunk)
        time.sleep(0.02)
    return received, False


@pytest.mark.slow
def test_a_trickling_reader_is_cut_and_a_steady_one_is_not(
        broker: tuple[Cluster, Proc]) -> None:
    cluster, proc = broker
    gateway = start_gateway(cluster, [proc.endpoint], "--send-timeout", "2",
                            "--min-send-rate", "100000")
    slow = ask_for_blob(gateway.port, 20_000_000, rcvbuf=4096)
    steady = ask_for_blob(gateway.port, 2_000_000, rcvbuf=4096)
    try:
        received = 0
        while received < 2_000_000:  # a reader as fast as it can go, through a small buffer
            chunk = steady.recv(65536)
            assert chunk, f"the steady reader was cut after {received} bytes"
            received += len(chunk)
        read, cut = trickle(slow, limit_s=30)
        assert cut and 0 < read < 20_000_000, (read, cut)
        wait_for(lambda: gateway.metric("dips_http_send_too_slow_total") >= 1, 10,
                 "the door to count the connection it cut")
        assert gateway.metric("dips_http_send_too_slow_total") == 1  # not the steady one
        assert gateway.metric("dips_http_send_timeouts_total") == 0  # it never stalled
        assert "below --min-send-rate 100000 B/s" in gateway.proc.output()
    finally:
        slow.close()
        steady.close()
