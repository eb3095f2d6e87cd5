"""An ``iter_many`` and other calls on the same sync client: the iterator yields its own
calls' results only, and what it leaves behind (dropped early) does not reach later calls.
Before, a ``send`` made while an iterator was alive had its finished call taken and yielded
by the iterator (as an index of None), and one made before the iterator was dropped stayed
in the core's list, so that the next ``send_many`` failed on it."""

from __future__ import annotations

import pytest

from clusterkit import Cluster
from mdp.client import MDPClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", ["plain", "zmq"])
def test_a_send_beside_a_live_iterator_is_neither_yielded_nor_left_behind(
        cluster: Cluster, transport: str) -> None:
    broker = cluster.broker()
    cluster.worker([broker])
    with MDPClient([broker.endpoint], transport=transport) as client:
        requests = [{"i": i} for i in range(40)]
        results = client.iter_many("echo", requests, window=8)
        seen = [next(results)]
        assert client.send("echo", {"beside": 1}) == {"beside": 1}
        seen += list(results)
        assert sorted(index for index, _ in seen) == list(range(40))
        assert all(outcome == requests[index] for index, outcome in seen)

        dropped = client.iter_many("echo", requests, window=8)
        next(dropped)
        assert client.send("echo", {"beside": 2}) == {"beside": 2}
        dropped.close()
        assert client._core.finished == []
        assert client.send_many("echo", [{"x": 1}, {"x": 2}]) == [{"x": 1}, {"x": 2}]
