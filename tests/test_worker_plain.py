"""The worker's plain-socket transport (``--transport plain``: ZMTP in the worker's own
threads) against real brokers: requests over tcp:// and ipc://; a handler that runs several
times the broker's ZMTP heartbeat timeout (its sentinel answers the PINGs); a worker frozen
or killed mid-request (its request is done elsewhere, as for a pyzmq worker); a worker
frozen past the ZMTP timeout (the broker drops it; resumed, it registers again); and fake
brokers that send hostile bytes (a clear WARNING, a reconnection, never a crash). Where it
costs little, the pyzmq transport runs the same test beside it, for comparison."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clusterkit import HERE, Cluster
from mdp.client import MDPClient
from mdp.config import (
    PLAIN_MAX_BUSY_AFTER_S,
    WORKER_TRANSPORT_ENV,
    BrokerConfig,
    WorkerConfig,
    parse_worker_args,
)
from mdp.errors import ConfigError
from mdp.handlers import ECHO, Handler, declares_yields_gil, plain
from mdp.workerlinks import PlainWorkerLink, auto_choice, describe_transport, uses_plain
from mdp.zmtp import ZmtpConnection, command
from testkit import broker_counter, busy_worker, free_port, has_worker, wait_for, worker_pids
from testkit.fakebroker import ROUTER_READY, FakeBroker, garbage, wrong_type
from testkit.procfs import cpu_seconds

pytestmark = pytest.mark.slow

PLAIN = ("--transport", "plain")
# the broker drops a peer whose ZMTP PINGs go unanswered for 3 x 100 ms (the message limit
# keeps the time a big message may take at the link floor below that)
SHORT_ZMTP = ("--zmtp-heartbeat", "100", "--max-message-bytes", "100000")
TRANSPORTS = ["plain", "zmq"]


def transport(name: str) -> tuple[str, str]:
    return ("--transport", name)


# --- settings and the link alone -----------------------------------------------------------

WORKER_ARGV = ["--broker", "tcp://127.0.0.1:5555", "--service", "echo"]


def test_the_transport_is_checked_and_its_default_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="--transport"):
        WorkerConfig(brokers=["tcp://127.0.0.1:5555"], transport="udp").validate()
    monkeypatch.delenv(WORKER_TRANSPORT_ENV, raising=False)
    assert parse_worker_args(WORKER_ARGV)[0].transport == "auto"
    monkeypatch.setenv(WORKER_TRANSPORT_ENV, "plain")
    assert parse_worker_args(WORKER_ARGV)[0].transport == "plain"
    assert parse_worker_args([*WORKER_ARGV, "--transport", "zmq"])[0].transport == "zmq"


def test_a_bad_transport_in_the_environment_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(WORKER_TRANSPORT_ENV, "udp")
    with pytest.raises(SystemExit) as refused:
        parse_worker_args(WORKER_ARGV)
    assert refused.value.code == 2
    assert f"${WORKER_TRANSPORT_ENV} must be one of" in capsys.readouterr().err
    assert parse_worker_args([*WORKER_ARGV, "--transport", "zmq"])[0].transport == "zmq"


def test_busy_after_stays_far_below_the_brokers_zmtp_timeout_on_a_plain_link() -> None:
    """The sentinel answers a plain worker's PINGs only from --busy-after on."""
    timeout_s = BrokerConfig().zmtp_timeout_ms / 1000  # 4.4 s by default
    assert WorkerConfig.busy_after_s * 100 < timeout_s
    assert PLAIN_MAX_BUSY_AFTER_S * 4 < timeout_s
    with pytest.raises(ConfigError, match="--busy-after must be at most 1s with --transport"):
        WorkerConfig(brokers=["tcp://127.0.0.1:5555"], transport="plain",
                     busy_after_s=2.0).validate()
    WorkerConfig(brokers=["tcp://127.0.0.1:5555"], transport="zmq", busy_after_s=2.0).validate()


def test_auto_is_plain_only_for_a_handler_that_declares_yields_gil_with_a_short_busy_after(
        ) -> None:
    """The declaration is ``True`` on the handler or on the object whose method it is; echo
    has it; auto then takes a plain link where one can be (not CURVE nor inproc://)."""
    def undeclared(request: dict[str, Any]) -> Any:
        return request

    def declared(request: dict[str, Any]) -> Any:
        return request

    declared.yields_gil = True  # type: ignore[attr-defined]

    class Provider:
        yields_gil = True

        def render(self, request: dict[str, Any]) -> Any:
            return request

    class Truthy:  # only True itself declares it
        yields_gil = "yes"

        def render(self, request: dict[str, Any]) -> Any:
            return request

    assert ECHO.yields_gil and declares_yields_gil(declared)
    assert declares_yields_gil(Provider().render)
    assert not declares_yields_gil(undeclared) and not declares_yields_gil(Truthy().render)
    assert plain("s", declared).yields_gil and not plain("s", undeclared).yields_gil
    assert plain("s", undeclared, yields_gil=True).yields_gil
    assert not plain("s", declared, yields_gil=False).yields_gil
    assert not Handler("s", undeclared).yields_gil
    assert auto_choice(True, WorkerConfig.busy_after_s).plain
    assert auto_choice(True, 0.1).plain and not auto_choice(True, 0.11).plain
    assert not auto_choice(False, WorkerConfig.busy_after_s).plain
    tcp, ipc = "tcp://127.0.0.1:5555", "ipc:///tmp/b"
    for address in (tcp, ipc):
        assert uses_plain("auto", address, None, auto_plain=True)
        assert not uses_plain("auto", address, None, auto_plain=False)
        assert not uses_plain("zmq", address, None, auto_plain=True)
        assert uses_plain("plain", address, None, auto_plain=False)
    assert not uses_plain("auto", "inproc://b", None, auto_plain=True)
    config = WorkerConfig(brokers=[tcp, "inproc://b"])
    assert describe_transport(config, auto_choice(True, 0.005)) == (
        "plain (zmq for inproc://b) (auto: the handler declares yields_gil; CURVE, "
        "inproc:// and host names go through libzmq)")
    # a host name: libzmq resolves it in its own thread under auto; plain when asked
    assert not uses_plain("auto", "tcp://broker.example:5555", None, auto_plain=True)
    assert uses_plain("auto", "tcp://[::1]:5555", None, auto_plain=True)
    assert uses_plain("plain", "tcp://broker.example:5555", None)
    assert describe_transport(WorkerConfig(brokers=[tcp]), auto_choice(True, 0.5)) == (
        "zmq (auto: --busy-after 0.5s is above 0.1s)")
    assert describe_transport(WorkerConfig(brokers=[tcp], transport="zmq"),
                              auto_choice(True, 0.005)) == "zmq"


def test_a_plain_link_to_a_name_that_does_not_resolve_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--transport plain to a host name the resolver fails on (a DNS outage: simulated
    here, since a test may not reach a real resolver): the link waits to try again, as for
    a refused connection, rather than raising out of the worker (which then exited)."""
    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    link = PlainWorkerLink("tcp://broker.invalid:5555", 1 << 20)
    try:
        assert link.link is None and link.retry_at < float("inf")
    finally:
        link.close(0)


def libzmq_io_thread(pid: int) -> bool:
    """Whether process ``pid`` runs libzmq's I/O thread (a pyzmq socket's)."""
    names = [path.read_text().strip() for path in Path(f"/proc/{pid}/task").glob("*/comm")]
    return any(name.startswith("ZMQbg/IO") for name in names)


def test_auto_gives_a_declared_handler_a_plain_link_and_an_undeclared_one_pyzmq(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen from outside: the start line says the link and why, and only a pyzmq worker runs
    libzmq's I/O thread. Built-in echo declares it; tests/helpers/gil_worker.py does not,
    unless given ``--yields-gil``; a --busy-after above 0.1 s keeps auto on pyzmq."""
    monkeypatch.setattr("clusterkit.FAULTY_WORKER", HERE / "helpers" / "gil_worker.py")
    monkeypatch.delenv(WORKER_TRANSPORT_ENV, raising=False)
    broker = cluster.broker()
    cases = [
        ("echo", cluster.worker([broker], "echo"), "plain (auto: the handler declares"),
        ("slow", cluster.worker([broker], "slow", "--busy-after", "0.5", faulty=True),
         "zmq (auto: the handler does not declare"),
        ("declared", cluster.worker([broker], "declared", "--yields-gil", faulty=True),
         "plain (auto: the handler declares"),
        ("lazy", cluster.worker([broker], "lazy", "--yields-gil", "--busy-after", "0.5",
                                faulty=True), "zmq (auto: --busy-after 0.5s is above 0.1s)"),
    ]
    with MDPClient([broker.endpoint], timeout=10) as client:
        for service, worker, said in cases:
            assert f"transport {said}" in worker.output(), service
            assert libzmq_io_thread(worker.pid) == said.startswith("zmq"), service
            reply = client.send(service, {"hold_gil": 0} if service != "echo" else {"x": 1})
            assert (reply == {"x": 1}) if service == "echo" else (reply["pid"] == worker.pid)


def test_a_refused_connection_is_tried_again_with_what_was_sent_for_it() -> None:
    """As a libzmq DEALER does: nothing listens yet, so the READY waits; the connection is
    tried again every 0.1 s, and once a ROUTER answers, the READY goes out behind the
    handshake."""
    port = free_port()
    link = PlainWorkerLink(f"tcp://127.0.0.1:{port}", 1 << 20)
    server = None
    try:
        link.send([b"", b"MDPW01", b"\x01", b"echo"])
        wait_for(lambda: link.take() == [] and link.link is None, 5, "the refusal")
        server = socket.create_server(("127.0.0.1", port))
        server.settimeout(5)

        def accepted() -> socket.socket | None:
            link.take()  # (tries again when due)
            try:
                server.settimeout(0.05)
                return server.accept()[0]
            except TimeoutError:
                return None

        conn = wait_for(accepted, 5, "the connection tried again")
        conn.settimeout(5)
        conn.sendall(ROUTER_READY)
        peer = ZmtpConnection(1 << 20, peer_types=frozenset({b"DEALER"}),
                              socket_type=b"ROUTER")
        got: list[list[bytes]] = []

        def ready() -> bool:
            link.take()
            conn.settimeout(0.05)
            try:
                got.extend(peer.receive_data(conn.recv(65536)))
            except TimeoutError:
                pass
            return bool(got)

        wait_for(ready, 5, "the READY kept for the connection")
        assert got == [[b"", b"MDPW01", b"\x01", b"echo"]] and link.was_up
        conn.close()
    finally:
        link.close(0)
        if server is not None:
            server.close()


# --- real brokers ---------------------------------------------------------------------------


def test_a_plain_worker_serves_over_tcp_and_ipc_with_big_bodies(
        cluster: Cluster, tmp_path: Path) -> None:
    ipc = f"ipc://{tmp_path}/broker.sock"
    broker = cluster.broker(None, "--bind", ipc)
    tcp_worker = cluster.worker([broker], "echo", *PLAIN)
    ipc_worker = cluster.worker([ipc], "echo", *PLAIN)
    for worker in (tcp_worker, ipc_worker):
        assert "transport plain" in worker.output()
    with MDPClient([broker.endpoint]) as client:
        assert client.send("echo", {"x": 1}) == {"x": 1}
        assert client.send_many("echo", [{"i": i} for i in range(300)], window=32) == \
            [{"i": i} for i in range(300)]
        big = b"\x01" * (12 << 20)  # more than a socket buffer, both ways
        for _ in range(2):  # (one for each worker, at least once)
            assert client.send("echo", {"b": big}) == {"b": big}
    output = broker.output()
    assert "silent" not in output and "is gone" not in output


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_long_handler_outlives_the_brokers_zmtp_timeout_and_answers(
        cluster: Cluster, kind: str) -> None:
    """A handler of 2 s, 6-7 times the broker's ZMTP timeout of 0.3 s: the worker is not
    dropped (its sentinel answers the PINGs while the main thread is in the handler), the
    request runs once, and its reply comes back."""
    broker = cluster.broker(None, *SHORT_ZMTP)
    worker = cluster.worker([broker], "tester", *transport(kind), faulty=True)
    with MDPClient([broker.endpoint], timeout=20) as client:
        reply = client.send("tester", {"sleep": 2.0, "tag": "long"})
        assert reply["pid"] == worker.pid and reply["tag"] == "long"
        assert broker_counter(broker.endpoint, "requeued") == 0  # ran once, never dropped
        assert client.send("tester", {"tag": "after"})["pid"] == worker.pid
    assert "dropped; registering again" not in worker.output()
    assert f"transport {kind}" in worker.output()


@pytest.mark.parametrize("fault", [signal.SIGSTOP, signal.SIGKILL], ids=["SIGSTOP", "SIGKILL"])
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_worker_frozen_or_killed_mid_request_has_it_done_elsewhere(
        cluster: Cluster, kind: str, fault: int) -> None:
    """Default settings (as tests/test_faults.py): the request of a worker SIGSTOPped or
    SIGKILLed while it runs it is done by the other worker; a frozen one, resumed, serves
    again."""
    broker = cluster.broker(fast=False)
    workers = [cluster.worker([broker], "tester", *transport(kind), faulty=True, fast=False)
               for _ in range(2)]
    outcome: list[Any] = []
    with MDPClient([broker.endpoint], timeout=20) as client:
        call = threading.Thread(target=lambda: outcome.append(
            client.send("tester", {"sleep": 1.0, "tag": "struck"})))
        call.start()
        busy = wait_for(lambda: busy_worker([broker.endpoint], "tester"), 10, "a busy worker")
        struck, other = (workers[0], workers[1]) if busy == workers[0].pid else \
            (workers[1], workers[0])
        struck.signal(fault)
        struck_at = time.monotonic()
        call.join(20)
        extra_s = time.monotonic() - struck_at - 1.0  # the other ran it from the start
        if fault == signal.SIGSTOP:
            struck.signal(signal.SIGCONT)
        print(f"\n{kind} worker {signal.Signals(fault).name}: its request served elsewhere "
              f"after {extra_s:.2f} s (plus the 1.0 s re-run)")
        assert [(r["tag"], r["pid"]) for r in outcome] == [("struck", other.pid)]
        assert f"transport {kind}" in struck.output()
        assert extra_s < 3.0  # the broker's --frozen-after is 0.8 s; a kill is seen at once
        if fault == signal.SIGSTOP:
            wait_for(lambda: struck.pid in worker_pids(broker.endpoint, "tester"), 15,
                     "the resumed worker to serve again")


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_worker_frozen_past_the_zmtp_timeout_is_dropped_and_registers_again(
        cluster: Cluster, kind: str) -> None:
    """The broker drops a worker whose PINGs went unanswered; resumed, a plain worker finds
    its connection closed and registers anew at once (a pyzmq one, with one broker and no
    socket monitor, after the MDP silence or the broker's DISCONNECT)."""
    broker = cluster.broker(None, *SHORT_ZMTP)
    worker = cluster.worker([broker], "echo", *transport(kind))
    other = cluster.worker([broker], "echo", *transport(kind))
    assert f"transport {kind}" in worker.output()
    worker.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: worker.pid not in worker_pids(broker.endpoint, "echo"), 10,
                 "the broker to drop the frozen worker")
    finally:
        worker.signal(signal.SIGCONT)
    wait_for(lambda: has_worker(broker.endpoint, worker.pid), 10,
             "the resumed worker to register again")
    with MDPClient([broker.endpoint]) as client:
        assert client.send_many("echo", [{"i": i} for i in range(50)]) == \
            [{"i": i} for i in range(50)]
    assert other.popen.poll() is None and worker.popen.poll() is None
    if kind == "plain":  # it saw the connection closed at once, not after MDP silence
        assert "dropped; registering again" in worker.output()
        assert "silent for" not in worker.output()


# --- fake brokers ---------------------------------------------------------------------------



def _after_ready(conn: socket.socket) -> None:
    """Be a ROUTER until the worker's READY (MDPW01) has come."""
    conn.sendall(ROUTER_READY)
    got = b""
    while b"MDPW01" not in got:
        more = conn.recv(65536)
        if not more:
            raise OSError("the worker closed first")
        got += more


def oversize(conn: socket.socket) -> None:
    _after_ready(conn)
    conn.sendall(b"\x02" + (10**9).to_bytes(8, "big"))
    conn.recv(100)


def reserved_flags(conn: socket.socket) -> None:
    _after_ready(conn)
    conn.sendall(b"\xf0\x01\x00")
    conn.recv(100)


def zmtp_error(conn: socket.socket) -> None:
    _after_ready(conn)
    conn.sendall(command(b"ERROR", b"\x0bgo away now"))
    conn.recv(100)


@pytest.mark.parametrize(("behaviour", "named"), [
    (garbage, "not a ZMTP peer: its greeting starts with 0x48"),
    (wrong_type, "is a 'PUB' socket; a ROUTER was expected"),
    (oversize, "a frame of 1000000000 bytes is larger than the limit of 33554432 "
               "(max_message_bytes)"),
    (reserved_flags, "reserved flag bits set (0xf0)"),
    (zmtp_error, "closed the connection with ERROR: go away now"),
])
def test_a_fake_broker_gives_a_plain_worker_a_clear_warning_and_a_reconnect(
        cluster: Cluster, behaviour: Callable[[socket.socket], None], named: str) -> None:
    real = cluster.broker()
    fake = FakeBroker(behaviour)
    try:
        worker = cluster.worker([fake.endpoint, real.endpoint], "echo", *PLAIN, wait=False)
        wait_for(lambda: has_worker(real.endpoint, worker.pid), 10, "the worker at the real one")
        wait_for(lambda: fake.connections >= 2, 10, "a second connection to the fake broker")
        with MDPClient([real.endpoint]) as client:
            assert client.send_many("echo", [{"i": i} for i in range(20)]) == \
                [{"i": i} for i in range(20)]
        assert worker.popen.poll() is None
        output = worker.output()
        assert f"WARNING broker {fake.endpoint}: " in output and named in output, output
        assert "Traceback" not in output, output
    finally:
        fake.close()


def test_a_plain_worker_waiting_for_brokers_that_refuse_waits_in_the_kernel(
        cluster: Cluster) -> None:
    """One broker answers garbage (its link is closed and waits out the core's backoff),
    the other refuses connections (its link is tried again every 0.1 s): the worker waits
    for the next of those times, without a busy loop (CPU time over the wait, not speed)."""
    fake = FakeBroker(garbage)
    try:
        refused = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
        worker = cluster.worker([fake.endpoint, refused], "echo", *PLAIN, wait=False)
        wait_for(lambda: fake.connections >= 2, 10, "a second connection to the fake broker")
        wall, cpu = time.monotonic(), cpu_seconds(worker.pid)
        wait_for(lambda: time.monotonic() - wall >= 3.0, 10, "3 s of waiting")  # the window
        used = cpu_seconds(worker.pid) - cpu
        assert worker.popen.poll() is None
        assert used <= 0.05 * (time.monotonic() - wall), f"{used:.2f} s of CPU in 3 s"
    finally:
        fake.close()
