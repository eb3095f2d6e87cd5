"""What a Gearman worker connected to the door may do, against real brokers and doors, with a
Gearman worker written by hand (raw packets, so each misbehaviour is exact):

- only the functions a door's ``--worker-functions`` allows (none by default): before, any
  peer of the door could register for any service and read and answer its requests;
- under CURVE, its broker links use a worker key of their own (``--worker-secret``): before,
  they used the door's client key, which every broker refuses as a worker's;
- a result or progress past the brokers' message limit is its error, not a lost worker: a
  broker dropped the link, the request counted two lost workers and was refused for 60 s;
- a caller's coalescing key holding a NUL cannot split JOB_ASSIGN_UNIQ's fields (it made
  part of the key the worker's workload).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gwkit import Raw, port_of, start_gateway

from clusterkit import Cluster, Proc
from mdp.client import MDPClient
from mdp.errors import MDPError
from mdp.keys import new_keypair
from mdp_gearman.packets import T
from testkit import count_workers, wait_for

BROKER_LIMIT = 2 * 1024 * 1024  # the brokers' --max-message-bytes here


@dataclass
class Rig:
    cluster: Cluster
    broker: Proc
    open_door: Proc  # Gearman workers may offer lim.*
    closed_door: Proc  # the default: no Gearman worker

    def client(self) -> MDPClient:
        return MDPClient([self.broker.endpoint], timeout=15.0)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    cluster = Cluster(tmp_path_factory.mktemp("worker-limits"))
    try:
        broker = cluster.broker(None, "--max-message-bytes", "2MiB")
        cluster.worker([broker], "echo")
        yield Rig(cluster, broker,
                  start_gateway(cluster, [broker], "--max-message-bytes", "2MiB",
                                worker_functions="lim.*"),
                  start_gateway(cluster, [broker], worker_functions=None))
    finally:
        cluster.stop_all()


def _register(port: int, function: str) -> Raw:
    raw = Raw(port)
    raw.send(T.CAN_DO, function.encode())
    raw.send(T.PRE_SLEEP)
    return raw


def _grab(raw: Raw) -> list[bytes]:
    """Wait for the door's NOOP, ask, and return JOB_ASSIGN_UNIQ's four fields."""
    kind, _ = raw.recv()
    assert kind == T.NOOP, kind
    raw.send(T.GRAB_JOB_UNIQ)
    raw._fill(12)
    kind = int.from_bytes(raw.buffer[4:8], "big")
    size = int.from_bytes(raw.buffer[8:12], "big")
    raw._fill(12 + size)
    body, raw.buffer = raw.buffer[12:12 + size], raw.buffer[12 + size:]
    assert kind == T.JOB_ASSIGN_UNIQ, (kind, body[:100])
    return body.split(b"\0", 3)


class Call(threading.Thread):
    """One MDPClient call in a thread; its result or its error afterwards."""

    def __init__(self, rig: Rig, service: str, request: dict[str, Any], **options: Any):
        super().__init__(daemon=True)
        self.rig, self.service, self.request, self.options = rig, service, request, options
        self.result: Any = None
        self.error: MDPError | None = None

    def run(self) -> None:
        with self.rig.client() as client:
            try:
                self.result = client.send(self.service, self.request, **self.options)
            except MDPError as exc:
                self.error = exc

    def outcome(self) -> Any:
        self.join(30)
        assert not self.is_alive(), "the call did not end"
        return self.error if self.error is not None else self.result


@pytest.mark.slow
def test_a_door_takes_gearman_workers_only_for_the_functions_it_allows(rig: Rig) -> None:
    closed = _register(port_of(rig.closed_door), "lim.closed")
    kind, args = closed.recv()
    assert (kind, args[0]) == (T.ERROR, b"function_not_allowed")
    assert b"none" in args[1]
    impostor = _register(port_of(rig.open_door), "echo")  # a service a real worker serves
    kind, args = impostor.recv()
    assert (kind, args[0]) == (T.ERROR, b"function_not_allowed")
    assert b"lim.*" in args[1]
    allowed = _register(port_of(rig.open_door), "lim.allowed")
    wait_for(lambda: count_workers(rig.broker.endpoint, "lim.allowed") == 1, 15,
             "the allowed Gearman worker at the broker")
    with rig.client() as client:  # every echo is the real worker's
        assert all(client.send("echo", {"i": i}) == {"i": i} for i in range(20))
    assert count_workers(rig.broker.endpoint, "echo") == 1
    for raw in (closed, impostor, allowed):
        raw.close()


@pytest.mark.slow
def test_a_key_with_a_nul_cannot_split_the_workers_fields(rig: Rig) -> None:
    worker = _register(port_of(rig.open_door), "lim.nul")
    wait_for(lambda: count_workers(rig.broker.endpoint, "lim.nul") == 1, 15, "the worker")
    key = b"k\0INJECTED"
    call = Call(rig, "lim.nul", {"x": 1}, key=key)
    call.start()
    handle, function, unique, workload = _grab(worker)
    assert (function, unique) == (b"lim.nul", hashlib.sha256(key).hexdigest().encode())
    assert workload == b'a:1:{s:1:"x";i:1;}'
    worker.send(T.WORK_COMPLETE, handle, b"done")
    assert call.outcome() == b"done"
    worker.close()


@pytest.mark.slow
def test_a_result_past_the_brokers_limit_is_the_workers_error_not_a_lost_worker(
        rig: Rig) -> None:
    worker = _register(port_of(rig.open_door), "lim.big")
    wait_for(lambda: count_workers(rig.broker.endpoint, "lim.big") == 1, 15, "the worker")
    call = Call(rig, "lim.big", {})
    call.start()
    handle = _grab(worker)[0]
    worker.send(T.WORK_COMPLETE, handle, b"x" * (BROKER_LIMIT + 500_000))
    error = call.outcome()
    assert isinstance(error, MDPError) and error.code == "bad_reply", error
    assert "bytes" in error.message and "--max-message-bytes" in error.message
    worker.send(T.PRE_SLEEP)  # the same worker serves on: it was not lost
    second = Call(rig, "lim.big", {})
    second.start()
    worker.send(T.WORK_COMPLETE, _grab(worker)[0], b"small")
    assert second.outcome() == b"small"
    worker.close()


@pytest.mark.slow
def test_progress_data_past_the_brokers_limit_is_the_workers_error(rig: Rig) -> None:
    worker = _register(port_of(rig.open_door), "lim.data")
    wait_for(lambda: count_workers(rig.broker.endpoint, "lim.data") == 1, 15, "the worker")
    seen: list[int] = []
    call = Call(rig, "lim.data", {}, on_progress=lambda *progress: seen.append(1))
    call.start()
    handle = _grab(worker)[0]
    for _ in range(12):  # 3 MiB of WORK_DATA, in 256 KiB packets
        worker.send(T.WORK_DATA, handle, b"d" * 262_144)
    error = call.outcome()
    assert isinstance(error, MDPError) and error.code == "bad_reply", error
    assert "WORK_DATA" in error.message
    assert 1 <= len(seen) <= 8  # what fitted went on; the rest was not sent
    worker.send(T.WORK_COMPLETE, handle, b"late")  # the job given up on, reported: no harm
    worker.close()


def test_under_curve_gearman_workers_need_a_worker_key(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    private, clients, workers = tmp_path / "private", tmp_path / "clients", tmp_path / "workers"
    for folder in (clients, workers):
        folder.mkdir(parents=True)
    for name in ("broker", "door", "caller", "hostworker"):
        new_keypair(private, name)
    shutil.copy(private / "door.key", clients)
    shutil.copy(private / "caller.key", clients)
    shutil.copy(private / "hostworker.key", workers)
    curve = ["--curve-secret", str(private / "door.key_secret"),
             "--broker-key", str(private / "broker.key")]
    refused = subprocess.run([sys.executable, "-m", "mdp_gearman", "--listen", "127.0.0.1:0",
                              "--broker", "tcp://127.0.0.1:1", "--worker-functions", "*",
                              *curve], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "--worker-secret" in refused.stderr
    broker = cluster.broker(None, "--curve-secret", str(private / "broker.key_secret"),
                            "--client-keys", str(clients), "--worker-keys", str(workers),
                            wait=False)
    wait_for(lambda: "broker ready" in broker.output(), 10, "the CURVE broker")
    door = start_gateway(cluster, [broker], *curve, "--worker-secret",
                         str(private / "hostworker.key_secret"))
    worker = _register(port_of(door), "secure.reverse")
    answers: list[Any] = []

    def call() -> None:
        from mdp.keys import CurveConfig
        with MDPClient([broker.endpoint], timeout=20.0, curve=CurveConfig.from_files(
                str(private / "caller.key_secret"), str(private / "broker.key"))) as client:
            answers.append(client.send("secure.reverse", {"image": b"ab"}))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    handle, _, _, workload = _grab(worker)
    assert workload == b"ab"  # the raw field, as the slides' workers take an image
    worker.send(T.WORK_COMPLETE, handle, b"ba")
    caller.join(30)
    assert answers == [b"ba"]
    worker.close()
