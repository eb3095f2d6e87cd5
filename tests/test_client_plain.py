"""The sync client's plain-socket transport (ZMTP in the caller's thread) against real
brokers: calls over tcp:// and ipc://, failover when a broker is SIGKILLed or SIGSTOPped in
the middle of a call, a connection the broker dropped while the client was idle, and fake
brokers (a plain socket server in this test) that send garbage, say they are the wrong
socket type, or send a frame over the client's limit: each gives a clear WARNING and the
call goes on at the other broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clusterkit import Cluster
from mdp.aio import AsyncMDPClient
from mdp.client import AUTO_TRANSPORT, CLIENT_TRANSPORT_ENV, MDPClient, plain_transport
from mdp.errors import ConfigError
from mdp.zmtp import command, greeting, properties
from mdp.zmtplinks import PlainLink, ZmqLink
from testkit import busy_worker, free_port, wait_for
from testkit.fakebroker import ROUTER_READY, FakeBroker, garbage, wrong_type

pytestmark = pytest.mark.slow


def links(client: MDPClient) -> list[str]:
    return [type(link).__name__ for link in client._links if link is not None]


def test_a_sync_call_goes_over_a_plain_socket_when_asked(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """transport="plain" for the sync client; by default ("auto") AUTO_TRANSPORT for an
    address, and pyzmq for a host name (libzmq resolves it in its own thread)."""
    monkeypatch.delenv(CLIENT_TRANSPORT_ENV, raising=False)
    broker = cluster.broker()
    cluster.worker([broker])
    auto = PlainLink if AUTO_TRANSPORT == "plain" else ZmqLink
    with MDPClient([broker.endpoint]) as client:
        assert client.send("echo", {"x": 0}) == {"x": 0}
        assert links(client) == [auto.__name__]
    named = broker.endpoint.replace("127.0.0.1", "localhost")
    with MDPClient([named]) as client:
        assert client.send("echo", {"x": 0}) == {"x": 0}
        assert links(client) == [ZmqLink.__name__]
    with MDPClient([broker.endpoint], transport="plain") as client:
        assert client.send("echo", {"x": 1}) == {"x": 1}
        assert links(client) == [PlainLink.__name__]
        assert client.send_many("echo", [{"i": i} for i in range(300)], window=32) == \
            [{"i": i} for i in range(300)]
        big = b"\x01" * (12 << 20)
        assert client.send("echo", {"b": big}) == {"b": big}
        assert client.mmi_service("echo") == "200"
    with MDPClient([broker.endpoint], transport="zmq") as client:
        assert client.send("echo", {"x": 2}) == {"x": 2}
        assert links(client) == [ZmqLink.__name__]


@pytest.mark.parametrize(("option", "variable", "expected"), [
    ("auto", "", (AUTO_TRANSPORT == "plain", False)),
    ("auto", "plain", (True, True)),
    ("auto", "zmq", (False, False)),
    ("auto", "auto", (AUTO_TRANSPORT == "plain", False)),
    ("zmq", "plain", (False, False)),
    ("plain", "zmq", (True, True)),
])
def test_the_variable_says_what_auto_means(monkeypatch: pytest.MonkeyPatch, option: str,
                                           variable: str, expected: tuple[bool, bool]) -> None:
    """$DIPS_CLIENT_TRANSPORT: (plain links, also to host names) for every sync client of a
    process, so that a suite or a bench runs on either; an explicit option wins."""
    monkeypatch.setenv(CLIENT_TRANSPORT_ENV, variable)
    assert plain_transport(option) == expected


def test_a_variable_that_names_no_transport_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLIENT_TRANSPORT_ENV, "udp")
    with pytest.raises(ConfigError, match=CLIENT_TRANSPORT_ENV):
        MDPClient(["tcp://127.0.0.1:1"])


def test_a_sync_call_goes_over_ipc(cluster: Cluster, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/broker.sock"
    broker = cluster.broker(None, "--bind", endpoint)
    cluster.worker([endpoint])
    with MDPClient([endpoint], transport="plain") as client:
        assert client.send("echo", {"x": 1}) == {"x": 1}
        assert links(client) == [PlainLink.__name__]
    assert broker.popen.poll() is None


@pytest.mark.parametrize("broker_transport", ["zmq", "plain"])
def test_a_client_idle_past_the_brokers_zmtp_timeout_keeps_or_quietly_reopens_its_link(
        cluster: Cluster, caplog: pytest.LogCaptureFixture, broker_transport: str) -> None:
    """A plain client reads only when called, so it leaves the broker's ZMTP PINGs
    unanswered while idle (here past a 0.3 s timeout). A pyzmq broker drops such a
    connection: the next call, of any kind, opens it again at once, with no failover, no
    wait and no WARNING. (A call placed by the core before the drop was found, with a key,
    MMI or a batch, counted it a lost broker: a WARNING and a second's wait.) A plain broker
    pings no client's connection and keeps it (mdp/plainrouter.py)."""
    broker = cluster.broker(None, "--zmtp-heartbeat", "100", "--max-message-bytes", "100000",
                            "--transport", broker_transport)
    cluster.worker([broker])
    caplog.set_level(logging.INFO, logger="mdp")
    calls = [lambda c, i: c.send("echo", {"x": i}) == {"x": i},
             lambda c, i: c.send("echo", {"x": i}, key=b"k%d" % i) == {"x": i},
             lambda c, i: c.mmi_service("echo") == "200",
             lambda c, i: c.send_many("echo", [{"x": i}] * 3) == [{"x": i}] * 3]
    with MDPClient([broker.endpoint], transport="plain") as client:
        assert client.send("echo", {"x": 1}) == {"x": 1}
        first = client._links[0]
        for i, call in enumerate(calls):
            time.sleep(1.0)  # idle: the scenario itself, not synchronisation
            assert call(client, i)
        assert (client._links[0] is first) == (broker_transport == "plain")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_sync_client_waits_for_a_broker_that_starts_within_its_connect_timeout(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection is tried again every 0.1 s (as libzmq does), not reported at
    once: no WARNING, and the call is served."""
    port = free_port()
    caplog.set_level(logging.WARNING, logger="mdp")
    outcome: list[object] = []
    with MDPClient([f"tcp://127.0.0.1:{port}"], connect_timeout=20.0, timeout=30,
                   transport="plain") as client:
        call = threading.Thread(target=lambda: outcome.append(client.send("echo", {"x": 1})))
        call.start()
        time.sleep(0.3)  # refused meanwhile: the scenario, not synchronisation
        cluster.worker([cluster.broker(port)])
        call.join(30)
    assert outcome == [{"x": 1}]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
def test_a_broker_killed_or_frozen_mid_call_fails_over(cluster: Cluster, fault: int) -> None:
    a, b = cluster.broker(), cluster.broker()
    for _ in range(2):
        cluster.worker([a, b], "echo", faulty=True)
    with MDPClient([a.endpoint, b.endpoint], shuffle=False, transport="plain") as client:
        client.send("echo", {"warm": 1})  # both connections up (and DIPS)
        client.send("echo", {"warm": 2})
        outcome: list[dict[str, object]] = []
        call = threading.Thread(target=lambda: outcome.append(
            client.send("echo", {"sleep": 1.0}, timeout=10)))
        started = time.monotonic()
        call.start()
        holder = wait_for(lambda: next((x for x in (a, b) if busy_worker([x.endpoint])), None),
                          5, "the call at a broker")
        holder.signal(fault)
        call.join(15)
        elapsed = time.monotonic() - started
        assert [reply["sleep"] for reply in outcome] == [1.0]
        assert elapsed < 4.0, elapsed
        assert client.send("echo", {"after": 1})["after"] == 1
        assert links(client) == [PlainLink.__name__] * len(links(client))
    holder.signal(signal.SIGCONT)


# --- fake brokers ---------------------------------------------------------------------------



def oversize(conn: socket.socket) -> None:
    conn.sendall(ROUTER_READY)
    got = b""
    while b"MDPC01" not in got:  # our greeting, READY, HELLO and the request behind it
        more = conn.recv(65536)
        if not more:
            return
        got += more
    conn.sendall(b"\x02" + (10**9).to_bytes(8, "big"))
    conn.recv(100)


def curve_only(conn: socket.socket) -> None:
    conn.sendall(greeting(b"CURVE"))
    conn.recv(100)


@pytest.fixture
def real(cluster: Cluster) -> Iterator[str]:
    broker = cluster.broker()
    cluster.worker([broker])
    yield broker.endpoint


@pytest.mark.parametrize(("behaviour", "named"), [
    (garbage, "not a ZMTP peer: its greeting starts with 0x48"),
    (wrong_type, "is a 'PUB' socket; a ROUTER was expected"),
    (oversize, "a frame of 1000000000 bytes is larger than the limit of 1048576"),
    (curve_only, "requires the CURVE security mechanism"),
])
def test_a_fake_broker_gives_a_clear_warning_and_the_call_goes_to_the_other(
        real: str, caplog: pytest.LogCaptureFixture, behaviour: Callable[[socket.socket], None],
        named: str) -> None:
    fake = FakeBroker(behaviour)
    try:
        caplog.set_level(logging.WARNING, logger="mdp")
        with MDPClient([fake.endpoint, real], shuffle=False, max_reply_bytes=1 << 20,
                       timeout=5, transport="plain") as client:
            for i in range(4):
                assert client.send("echo", {"i": i}) == {"i": i}
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(named in w and fake.endpoint in w for w in warnings), warnings
        assert fake.connections >= 1
    finally:
        fake.close()


# --- the asyncio client ------------------------------------------------------------------


def test_an_async_client_calls_over_plain_sockets_and_fails_over_from_a_fake_broker(
        real: str, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeBroker(wrong_type)
    caplog.set_level(logging.WARNING, logger="mdp")

    async def main() -> tuple[list[object], list[str]]:
        async with AsyncMDPClient([fake.endpoint, real], shuffle=False, timeout=5) as client:
            replies = await asyncio.gather(*(client.send("echo", {"i": i}) for i in range(50)))
            big = await client.send("echo", {"b": b"\x02" * (8 << 20)})
            assert big == {"b": b"\x02" * (8 << 20)}
            return replies, [type(link).__name__ for link in client._links if link]

    try:
        replies, kinds = asyncio.run(main())
    finally:
        fake.close()
    assert replies == [{"i": i} for i in range(50)]
    assert PlainLink.__name__ in kinds
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("is a 'PUB' socket" in w for w in warnings), warnings


def test_an_async_client_waits_for_a_broker_that_starts_within_its_connect_timeout(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    """A refused connection is tried again (as libzmq does), not reported at once."""
    port = free_port()
    caplog.set_level(logging.WARNING, logger="mdp")

    async def main() -> object:
        async with AsyncMDPClient([f"tcp://127.0.0.1:{port}"], connect_timeout=20.0,
                                  timeout=30) as client:
            call = asyncio.ensure_future(client.send("echo", {"x": 1}))
            await asyncio.sleep(0.3)  # refused meanwhile: the scenario, not synchronisation
            broker = await asyncio.to_thread(cluster.broker, port)
            await asyncio.to_thread(cluster.worker, [broker])
            return await asyncio.wait_for(call, 30)

    assert asyncio.run(main()) == {"x": 1}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_messages_read_before_a_connection_broke_are_kept_for_the_owner() -> None:
    """A reply and a PING arrive, then the broker resets the connection: the link raises
    (the PONG cannot go), yet the reply it had read whole is still handed over by take(),
    which the clients feed to their core before they report the broker lost (libzmq, too,
    delivers what arrived before it reports a disconnect)."""
    server = socket.create_server(("127.0.0.1", 0))
    link = PlainLink(f"tcp://127.0.0.1:{server.getsockname()[1]}", 1 << 20)
    conn, _ = server.accept()
    try:
        conn.settimeout(5)
        conn.sendall(greeting() + command(b"READY", properties({b"Socket-Type": b"ROUTER"})))
        wait_for(lambda: link.wait(50) == [] and link.up, 5, "the handshake")
        conn.recv(65536)  # our greeting and READY
        conn.sendall(b"\x01\x00\x00\x09THE REPLY" + command(b"PING", b"\x00\x00"))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # a reset, behind the bytes
        with pytest.raises(ConnectionError):
            wait_for(lambda: link.wait(50) != [] and False, 5, "the reset to be seen")
        assert link.take() == [[b"", b"THE REPLY"]]
    finally:
        link.close()
        server.close()
