"""mdp-http keeps serving while a broker is SIGKILLed: no HTTP request fails."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from httpkit import HttpLoad, start_gateway

from clusterkit import Cluster
from testkit import wait_for


@pytest.mark.slow
def test_serving_goes_on_while_a_broker_is_killed(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        brokers = [cluster.broker() for _ in range(2)]
        for _ in range(2):
            cluster.worker(brokers, "echo")
        gateway = start_gateway(cluster, [b.endpoint for b in brokers])
        with HttpLoad(gateway) as load:
            wait_for(lambda: load.ok >= 150 or load.failures, 60, "150 replies")
            brokers[0].signal(signal.SIGKILL)
            killed_at = load.ok
            wait_for(lambda: load.ok >= killed_at + 300 or len(load.failures) > 5, 90,
                     "300 replies after the kill")
        assert load.failures == []
        wait_for(lambda: gateway.get_json("/healthz")["brokers_down"] == [brokers[0].endpoint],
                 10, "the health check to show the killed broker down")  # a poll may be older
    finally:
        cluster.stop_all()
