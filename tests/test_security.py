"""CURVE: who may connect, in which role, and what the wire shows."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterkit import Cluster, Proc
from mdp.client import MDPClient
from mdp.errors import BadRequest, ConfigError, Timeout
from mdp.keys import CurveConfig, load_secret, new_keypair
from mdp.status import BrokerStatus
from testkit import broker_status, free_port, wait_for
from testkit import worker_pids as all_worker_pids

pytestmark = pytest.mark.slow


class Keys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.private = root / "private"
        self.clients = root / "clients"
        self.workers = root / "workers"
        for folder in (self.clients, self.workers):
            folder.mkdir(parents=True)
        for name in ("broker", "client", "worker", "stranger", "late", "client2", "worker2",
                     "broker-b"):
            new_keypair(self.private, name)
        for name in ("client", "client2"):
            shutil.copy(self.private / f"{name}.key", self.clients)
        for name in ("worker", "worker2"):
            shutil.copy(self.private / f"{name}.key", self.workers)

    def secret(self, name: str) -> Path:
        return self.private / f"{name}.key_secret"

    def curve(self, name: str) -> CurveConfig:
        return CurveConfig.from_files(self.secret(name), self.private / "broker.key")

    def broker_args(self) -> list[str]:
        return ["--curve-secret", str(self.secret("broker")), "--client-keys", str(self.clients),
                "--worker-keys", str(self.workers)]

    def worker_args(self, name: str) -> list[str]:
        return ["--curve-secret", str(self.secret(name)),
                "--broker-key", str(self.private / "broker.key")]


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


def curve_broker(cluster: Cluster, keys: Keys, port: int | None = None) -> Proc:
    """A CURVE broker; ready once its log says so (plaintext status probes cannot reach it)."""
    broker = cluster.broker(port, *keys.broker_args(), wait=False)
    wait_for(lambda: "broker ready" in broker.output() or broker.popen.poll() is not None, 10,
             "the CURVE broker to start")
    assert broker.popen.poll() is None, broker.output()
    return broker


def curve_status(endpoint: str, keys: Keys, name: str = "client") -> BrokerStatus | None:
    return broker_status(endpoint, curve=keys.curve(name))


def worker_pids(endpoint: str, keys: Keys, name: str = "client") -> list[int]:
    return all_worker_pids(endpoint, curve=keys.curve(name))


def test_allowed_keys_work_and_others_are_refused(cluster: Cluster, keys: Keys) -> None:
    broker = curve_broker(cluster, keys)
    worker = cluster.worker([broker], "echo", *keys.worker_args("worker"), wait=False)
    wait_for(lambda: worker.pid in worker_pids(broker.endpoint, keys), 10, "worker over CURVE")

    with MDPClient([broker.endpoint], curve=keys.curve("client")) as client:
        assert client.send("echo", {"hello": "curve"}) == {"hello": "curve"}

    # a key on no list: refused at the handshake
    with MDPClient([broker.endpoint], curve=keys.curve("stranger"), timeout=1.5,
                   retries=0) as client, pytest.raises(Timeout):
        client.send("echo", {})
    wait_for(lambda: "refused CURVE key" in broker.output(), 5, "the refusal to be logged")

    # a plaintext peer against a CURVE broker
    with MDPClient([broker.endpoint], timeout=1.5, retries=0) as client, pytest.raises(Timeout):
        client.send("echo", {})
    wait_for(lambda: "handshake refused" in broker.output(), 5, "the plaintext peer logged")

    # a worker key used as a client
    with MDPClient([broker.endpoint], curve=keys.curve("worker"), timeout=3) as client:
        with pytest.raises(BadRequest, match="may not send requests"):
            client.send("echo", {})

    # a client key used as a worker: it never registers
    impostor = cluster.worker([broker], "echo", *keys.worker_args("client"), wait=False)
    wait_for(lambda: "refused a worker message" in broker.output(), 10, "impostor refused")
    assert impostor.pid not in worker_pids(broker.endpoint, keys)
    assert worker.pid in worker_pids(broker.endpoint, keys)
    assert keys.secret("client").read_text().split("secret-key")[1][:20] not in broker.output()


def test_allow_lists_reload_on_sighup(cluster: Cluster, keys: Keys) -> None:
    broker = curve_broker(cluster, keys)
    cluster.worker([broker], "echo", *keys.worker_args("worker"), wait=False)
    wait_for(lambda: worker_pids(broker.endpoint, keys), 10, "worker over CURVE")
    with MDPClient([broker.endpoint], curve=keys.curve("late"), timeout=1, retries=0) as c:
        with pytest.raises(Timeout):
            c.send("echo", {})
    shutil.copy(keys.private / "late.key", keys.clients)
    (keys.clients / "client.key").unlink()  # revoked
    broker.signal(signal.SIGHUP)
    wait_for(lambda: broker.output().count("allow-lists loaded") >= 2, 5, "the reload")
    with MDPClient([broker.endpoint], curve=keys.curve("late")) as c:
        assert c.send("echo", {"late": 1}) == {"late": 1}
    with MDPClient([broker.endpoint], curve=keys.curve("client"), timeout=1, retries=0) as c:
        with pytest.raises(Timeout):
            c.send("echo", {})


def test_revocation_cuts_open_connections_at_once(cluster: Cluster, keys: Keys) -> None:
    """A connected client and a connected worker get nothing more once their keys are
    removed and the lists reloaded; the other client and worker go on as before."""
    broker = curve_broker(cluster, keys)
    revoked_worker = cluster.worker([broker], "echo", *keys.worker_args("worker"), wait=False)
    kept_worker = cluster.worker([broker], "echo", *keys.worker_args("worker2"), wait=False)
    both = {revoked_worker.pid, kept_worker.pid}
    wait_for(lambda: set(worker_pids(broker.endpoint, keys)) == both, 10, "both workers")
    revoked = MDPClient([broker.endpoint], curve=keys.curve("client"), timeout=3, retries=0)
    kept = MDPClient([broker.endpoint], curve=keys.curve("client2"), timeout=5)
    try:
        assert revoked.send("echo", {"before": 1}) == {"before": 1}  # connected, served
        (keys.clients / "client.key").unlink()
        (keys.workers / "worker.key").unlink()
        broker.signal(signal.SIGHUP)
        reloaded = time.monotonic()
        wait_for(lambda: broker.output().count("allow-lists loaded") >= 2, 5, "the reload")
        with pytest.raises(BadRequest, match="not .or no longer. allowed"):
            revoked.send("echo", {"after": 1})  # the same open connection
        refused_after = time.monotonic() - reloaded
        wait_for(lambda: worker_pids(broker.endpoint, keys, "client2") == [kept_worker.pid],
                 5, "the revoked worker to be forgotten")
        forgotten_after = time.monotonic() - reloaded
        served = {kept.send("echo", {"i": i})["i"] for i in range(20)}
        assert served == set(range(20))
        assert "revoked; forgetting it" in broker.output()
        print(f"\nrevoked client refused {refused_after:.2f} s and revoked worker forgotten "
              f"{forgotten_after:.2f} s after SIGHUP")
    finally:
        revoked.close()
        kept.close()


def test_a_revoked_clients_queued_request_is_dropped_and_its_running_one_unanswered(
        cluster: Cluster, keys: Keys) -> None:
    """What a revoked client had at the broker goes nowhere: the request queued behind a
    busy worker is dropped unworked, and the reply to the one running is not delivered."""
    broker = curve_broker(cluster, keys)
    started = cluster.tmp_path / "queued-one-started"
    running = cluster.tmp_path / "running-one-started"
    worker = cluster.worker([broker], "tester", *keys.worker_args("worker"), "--prefetch", "0",
                            faulty=True, wait=False)
    wait_for(lambda: worker_pids(broker.endpoint, keys) == [worker.pid], 10, "the worker")
    outcomes: list[object] = []
    revoked = MDPClient([broker.endpoint], curve=keys.curve("client"), timeout=4, retries=0)
    sender = threading.Thread(target=lambda: outcomes.extend(revoked.send_many(
        "tester", [{"sleep": 1.5, "started_file": str(running)},
                   {"started_file": str(started)}], window=2, return_exceptions=True)))
    sender.start()
    try:
        wait_for(running.exists, 10, "the first request to run")

        def queued() -> int:
            status = curve_status(broker.endpoint, keys, "client2")
            tester = status.services.get("tester") if status else None
            return tester.queue if tester else 0

        wait_for(lambda: queued() == 1, 5, "the second request to wait in the queue")
        (keys.clients / "client.key").unlink()
        broker.signal(signal.SIGHUP)
        wait_for(lambda: "dropped 1 queued requests of revoked client keys" in broker.output(),
                 5, "the revoked client's queued request to be dropped")
        sender.join(15)
        assert not sender.is_alive()
    finally:
        revoked.close()
    # the running request was served (the worker replied) but its reply never reached the
    # revoked client; the queued one was never worked
    assert len(outcomes) == 2 and all(isinstance(o, Exception) for o in outcomes), outcomes
    assert not started.exists()

    def served() -> int:
        status = curve_status(broker.endpoint, keys, "client2")
        return sum(w.served for w in status.workers("tester")) if status else 0

    wait_for(lambda: served() == 1, 5, "the worker to have answered the running request")


def test_one_brokers_key_is_replaced_while_load_runs_through_the_other(
        cluster: Cluster, keys: Keys) -> None:
    """Broker B gets a new key pair; clients and workers are given B's new public key for
    its endpoint and restarted one by one; requests flow through A meanwhile: none fail."""
    a = curve_broker(cluster, keys)
    b = curve_broker(cluster, keys)
    old_flags = ["--broker-key", str(keys.private / "broker.key")]
    new_flags = ["--broker-key", f"{a.endpoint}={keys.private / 'broker.key'}",
                 "--broker-key", f"{b.endpoint}={keys.private / 'broker-b.key'}"]
    secret = ["--curve-secret", str(keys.secret("worker"))]
    old_worker = cluster.worker([a, b], "echo", *secret, *old_flags, wait=False)
    wait_for(lambda: old_worker.pid in worker_pids(a.endpoint, keys)
             and old_worker.pid in worker_pids(b.endpoint, keys), 10, "the worker on A and B")
    failures: list[BaseException] = []
    served = [0]
    stop = threading.Event()

    def load(curve: CurveConfig, until: threading.Event) -> None:
        with MDPClient([a.endpoint, b.endpoint], curve=curve, timeout=10) as client:
            i = 0
            while not until.is_set():
                i += 1
                try:
                    assert client.send("echo", {"i": i}) == {"i": i}
                    served[0] += 1
                except BaseException as exc:  # recorded; the test fails on it
                    failures.append(exc)

    old_curve = keys.curve("client")
    old_done = threading.Event()
    old_load = threading.Thread(target=load, args=(old_curve, old_done), daemon=True)
    old_load.start()
    wait_for(lambda: served[0] > 50, 20, "load through both brokers")
    b.signal(signal.SIGTERM)  # B restarts with its new pair, on the same port
    b.wait()
    port = int(b.endpoint.rsplit(":", 1)[1])
    new_b = cluster.broker(port, "--curve-secret", str(keys.secret("broker-b")),
                           "--client-keys", str(keys.clients), "--worker-keys",
                           str(keys.workers), wait=False)
    wait_for(lambda: "broker ready" in new_b.output(), 10, "B with its new key")
    new_worker = cluster.worker([a, b], "echo", *secret, *new_flags, wait=False)
    new_curve = CurveConfig.from_flags(keys.secret("client2"), new_flags[1::2])
    wait_for(lambda: new_worker.pid in all_worker_pids(b.endpoint, curve=new_curve), 15,
             "the new worker registered with B under its new key")
    old_worker.signal(signal.SIGTERM)  # the old worker drains and leaves
    assert old_worker.wait(15) == 0
    new_load = threading.Thread(target=load, args=(new_curve, stop), daemon=True)
    new_load.start()
    old_done.set()
    old_load.join(30)
    before = served[0]
    wait_for(lambda: served[0] > before + 50, 20, "load from the client with the new keys")
    stop.set()
    new_load.join(30)
    assert failures == [], f"{len(failures)} failed, first: {failures[0]!r}"
    status = broker_status(b.endpoint, curve=new_curve)
    assert status is not None and status.counters.replies > 0  # B serves again


def test_secret_key_with_loose_permissions_is_refused(cluster: Cluster, keys: Keys) -> None:
    os.chmod(keys.secret("broker"), 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_secret(keys.secret("broker"))
    result = subprocess.run([sys.executable, "-m", "mdp.broker", "--bind",
                             f"tcp://127.0.0.1:{free_port()}", *keys.broker_args()],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "accessible by others" in result.stderr


class Tap(threading.Thread):
    """A TCP relay that records every byte from the client to the broker."""

    def __init__(self, target_port: int) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.captured = bytearray()
        self.stop = threading.Event()

    def run(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed at the end of the test
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if record:
                self.captured += data
            try:
                dst.sendall(data)
            except OSError:
                return


@pytest.fixture
def tap_factory() -> Iterator[list[Tap]]:
    taps: list[Tap] = []
    yield taps
    for tap in taps:
        tap.stop.set()
        tap.listener.close()


@pytest.mark.parametrize("curve", [True, False])
def test_the_wire_is_unreadable_with_curve(cluster: Cluster, keys: Keys, curve: bool,
                                           tap_factory: list[Tap]) -> None:
    port = free_port()
    if curve:
        broker = curve_broker(cluster, keys, port)
        cluster.worker([broker], "echo", *keys.worker_args("worker"), wait=False)
        wait_for(lambda: worker_pids(broker.endpoint, keys), 10, "worker over CURVE")
    else:
        broker = cluster.broker(port)
        cluster.worker([broker], "echo")
    tap = Tap(port)
    tap.start()
    tap_factory.append(tap)
    marker = b"card-serial-8472-9513-SECRET"
    with MDPClient([f"tcp://127.0.0.1:{tap.port}"], curve=keys.curve("client") if curve else None,
                   timeout=5) as client:
        assert client.send("echo", {"pSN": marker}) == {"pSN": marker}
    assert len(tap.captured) > 100
    assert (marker in tap.captured) is (not curve)  # plaintext shows it: the check can fail


def test_mdpctl_makes_keys_and_calls_a_curve_broker(cluster: Cluster, keys: Keys,
                                                     tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "mdpctl", "keys", "new", "ops",
                           "--dir", str(tmp_path / "ops")], capture_output=True, text=True,
                          timeout=30)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "ops" / "ops.key_secret").stat().st_mode & 0o077 == 0
    shutil.copy(tmp_path / "ops" / "ops.key", keys.clients)
    broker = curve_broker(cluster, keys)
    cluster.worker([broker], "echo", *keys.worker_args("worker"), wait=False)
    wait_for(lambda: worker_pids(broker.endpoint, keys), 10, "worker over CURVE")
    cluster_file = tmp_path / "cluster.toml"
    cluster_file.write_text(
        f'brokers = ["{broker.endpoint}"]\n'
        f'curve_secret = "{tmp_path / "ops" / "ops.key_secret"}"\n'
        f'broker_key = "{keys.private / "broker.key"}"\n'
        f'[hosts.none]\nsupervisor = "unix:///nonexistent/supervisor.sock"\n')
    called = subprocess.run([sys.executable, "-m", "mdpctl", "--cluster", str(cluster_file),
                             "call", "echo", "--json", '{"over": "curve"}'],
                            capture_output=True, text=True, timeout=60)
    assert called.returncode == 0, called.stderr
    assert '"over": "curve"' in called.stdout
