"""A DIPS cluster with a gateway in front, shared by the tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gwkit import Door, start_gateway

from clusterkit import Cluster


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """Two brokers; two ecard workers, an echo worker and a test worker ("slow")
    attached to both; a gateway with a state dir."""
    tmp = tmp_path_factory.mktemp("door")
    cluster = Cluster(tmp)
    try:
        brokers = [cluster.broker(), cluster.broker()]
        for _ in range(2):
            cluster.worker(brokers, "ecard", wait=False)
        cluster.worker(brokers, "echo", wait=False)
        cluster.worker(brokers, "slow", faulty=True, wait=False)
        gateway = start_gateway(cluster, brokers, "--timeout", "8", state_dir=tmp / "state")
        door = Door(cluster, brokers, gateway, tmp / "state")
        from testkit import count_workers, wait_for
        for service, n in (("ecard", 2), ("echo", 1), ("slow", 1)):
            for broker in brokers:
                wait_for(lambda b=broker, s=service, n=n: count_workers(b.endpoint, s) == n,
                         20, f"{n} {service} worker(s) at {broker.endpoint}")
        yield door
    finally:
        cluster.stop_all()
