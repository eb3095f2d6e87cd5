"""mdp-http keeps serving while a broker is SIGKILLed: no HTTP request fails."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from httpkit import Gateway, start_gateway

from clusterkit import Cluster, wait_for


class Load:
    """Threads that keep posting echo requests and check every reply."""

    def __init__(self, gateway: Gateway, threads: int = 6) -> None:
        self.gateway = gateway
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[object] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(threads)]

    def _run(self, thread: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            request = {"t": thread, "i": i}
            try:
                status, _, body = self.gateway.post_json("echo", request, timeout=30)
                good = status == 200 and json.loads(body) == request
            except Exception as exc:  # recorded; the test fails on it
                status, body, good = -1, repr(exc).encode(), False
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append((status, body[:200]))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(40)


@pytest.mark.slow
def test_serving_goes_on_while_a_broker_is_killed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        brokers = [cluster.broker() for _ in range(2)]
        for _ in range(2):
            cluster.worker(brokers, "echo")
        gateway = start_gateway(cluster, [b.endpoint for b in brokers])
        with Load(gateway) as load:
            wait_for(lambda: load.ok >= 150 or load.failures, 60, "150 replies")
            brokers[0].signal(signal.SIGKILL)
            killed_at = load.ok
            wait_for(lambda: load.ok >= killed_at + 300 or len(load.failures) > 5, 90,
                     "300 replies after the kill")
        assert load.failures == []
        health = gateway.get_json("/healthz")
        assert health["brokers_down"] == [brokers[0].endpoint]
    finally:
        cluster.stop_all()
