"""A poisoned request costs two workers, not the fleet (PROTOCOL.md, "Poisoned requests").

Two brokers with their default settings, four workers attached to both and started again
0.3 s after they die (the way supervisord restarts a crashed program), ordinary requests
flowing from four clients, and one request whose handler kills the process that runs it,
as a crash of a native decoder on one malformed image would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clusterkit import FAULTY_WORKER, Cluster, Proc
from mdp.client import MDPClient
from mdp.errors import WorkerLost
from testkit import count_workers, status_of, wait_for

pytestmark = pytest.mark.slow

RESPAWN_S = 0.3
WORKERS = 4


class Supervisor(threading.Thread):
    """Keeps WORKERS worker processes running; one that dies is started again after
    RESPAWN_S, and counted."""

    def __init__(self, cluster: Cluster, brokers: list[str], tmp_path: Path) -> None:
        super().__init__(daemon=True)
        self.cluster, self.brokers, self.tmp_path = cluster, brokers, tmp_path
        self.stop = threading.Event()
        self.deaths = 0
        self.spawned = 0
        self.procs = [self._start() for _ in range(WORKERS)]

    def _start(self) -> Proc:
        self.spawned += 1
        log = self.tmp_path / f"worker-{self.spawned:02d}.log"
        args = [sys.executable, str(FAULTY_WORKER), "--service", "echo"]
        for endpoint in self.brokers:
            args += ["--broker", endpoint]
        with log.open("wb") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=out,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        proc = Proc(popen, log)
        self.cluster.procs.append(proc)  # the cluster fixture kills it in the end
        return proc

    def run(self) -> None:
        dead_at: dict[int, float] = {}
        while not self.stop.is_set():
            now = time.monotonic()
            for i, proc in enumerate(self.procs):
                if i in dead_at:
                    if now - dead_at[i] >= RESPAWN_S:  # supervisord's startsecs-like delay
                        self.procs[i] = self._start()
                        del dead_at[i]
                elif proc.popen.poll() is not None:
                    self.deaths += 1
                    dead_at[i] = now
            self.stop.wait(0.01)


class Load(threading.Thread):
    """One client sending ordinary requests until stopped; every failure is kept."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[object] = []

    def run(self) -> None:
        with MDPClient(self.endpoints) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    reply = client.send("echo", {"i": i, "sleep": 0.002})
                except Exception as exc:  # recorded; the test fails on it
                    self.failures.append(exc)
                    continue
                if reply.get("i") == i:
                    self.ok += 1
                else:
                    self.failures.append(reply)


def test_a_poisoned_request_costs_two_workers_and_its_caller_gets_worker_lost(
        cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.broker(fast=False), cluster.broker(fast=False)
    endpoints = [a.endpoint, b.endpoint]
    supervisor = Supervisor(cluster, endpoints, tmp_path)
    for endpoint in endpoints:
        wait_for(lambda e=endpoint: count_workers(e, "echo") == WORKERS, 30,
                 f"{WORKERS} workers at {endpoint}")
    supervisor.start()
    loads = [Load(endpoints if n % 2 else endpoints[::-1]) for n in range(4)]
    for load in loads:
        load.start()
    wait_for(lambda: all(load.ok >= 20 for load in loads), 30, "ordinary load")

    started = time.monotonic()
    with MDPClient(endpoints, timeout=5.0) as client:  # the error must come within 5 s
        with pytest.raises(WorkerLost) as raised:
            client.send("echo", {"die": True, "tag": "poison"})
    took = time.monotonic() - started
    assert "2 workers were lost" in str(raised.value) and "'echo'" in str(raised.value)

    statuses = {e: status_of(e) for e in endpoints}
    [owner] = [e for e, s in statuses.items() if s.counters.poisoned == 1]
    service = statuses[owner].services["echo"].counters
    assert service is not None and service.poisoned == 1
    # the same request again, through the broker that gave it up: refused at once
    with MDPClient([owner], timeout=5.0) as client:
        with pytest.raises(WorkerLost):
            client.send("echo", {"die": True, "tag": "poison"})
    before = [load.ok for load in loads]
    wait_for(lambda: all(load.ok >= n + 20 for load, n in zip(loads, before, strict=True)),
             30, "ordinary load after the poisoned request")
    for load in loads:
        load.stop.set()
    for load in loads:
        load.join(30)
    supervisor.stop.set()
    supervisor.join(10)
    print(f"\npoisoned request: worker_lost after {took:.2f} s, {supervisor.deaths} worker "
          f"deaths; {sum(load.ok for load in loads)} ordinary requests, all answered")
    assert supervisor.deaths <= 2
    assert [f for load in loads for f in load.failures] == []
    assert "gave up: 2 workers were lost" in Path(
        next(p.log for p in cluster.procs if p.endpoint == owner)).read_text()
