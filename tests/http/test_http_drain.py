"""mdp-http stopped with SIGTERM answers the requests it has in flight before it exits, as
long as they take (up to its --timeout): a door restarted under load costs no caller its
reply. (It cut every request still running 2 s after the signal, aiohttp's shutdown
timeout as the door set it: the callers saw the connection closed without a response.)"""

from __future__ import annotations

import concurrent.futures
import json
import signal
from pathlib import Path

from httpkit import start_gateway

from clusterkit import Cluster
from testkit import wait_for


def test_sigterm_lets_the_requests_in_flight_finish(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        broker = cluster.broker()
        for _ in range(2):
            cluster.worker([broker], "slow", faulty=True)
        door = start_gateway(cluster, [broker.endpoint], "--timeout", "20")
        started = [tmp_path / f"started-{i}" for i in range(2)]
        requests = [{"sleep": 6.0, "i": i, "started_file": str(started[i])} for i in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(door.post_json, "slow", r, 30) for r in requests]
            wait_for(lambda: all(f.exists() for f in started), 20, "both requests running")
            door.proc.signal(signal.SIGTERM)
            replies = [call.result(40) for call in calls]
        assert [status for status, _, _ in replies] == [200, 200], replies
        assert [json.loads(body)["i"] for _, _, body in replies] == [0, 1]
        assert door.proc.wait(30) == 0
    finally:
        cluster.stop_all()
