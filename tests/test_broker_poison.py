"""A poisoned request costs two workers, not the fleet (PROTOCOL.md, "Poisoned requests").

Two brokers with their default settings, four workers attached to both and started again
0.3 s after they die (the way supervisord restarts a crashed program), ordinary requests
flowing from four clients, and one request whose handler kills the process that runs it,
as a crash of a native decoder on one malformed image would.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from clusterkit import Cluster, Respawner
from mdp.client import MDPClient
from mdp.errors import WorkerLost
from testkit import count_workers, status_of, wait_for

pytestmark = pytest.mark.slow

RESPAWN_S = 0.3
WORKERS = 4


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
    respawner = Respawner(cluster, endpoints, tmp_path, WORKERS, RESPAWN_S)
    for endpoint in endpoints:
        wait_for(lambda e=endpoint: count_workers(e, "echo") == WORKERS, 30,
                 f"{WORKERS} workers at {endpoint}")
    respawner.start()
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
    respawner.stop.set()
    respawner.join(10)
    print(f"\npoisoned request: worker_lost after {took:.2f} s, {respawner.deaths} worker "
          f"deaths; {sum(load.ok for load in loads)} ordinary requests, all answered")
    assert respawner.deaths <= 2
    assert [f for load in loads for f in load.failures] == []
    assert "gave up: 2 workers were lost" in Path(
        next(p.log for p in cluster.procs if p.endpoint == owner)).read_text()
