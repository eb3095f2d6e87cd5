"""mdp-gearman draining after SIGTERM: every job it accepted (JOB_CREATED) is answered before
it closes; a foreground job submitted meanwhile is refused at once (ERROR ``shutting_down``),
so that its client goes to another door. (The door accepted it, sent it into DIPS, and cut
it unanswered when it closed, if it outlasted the jobs in flight at the signal: 5 of 10
one-and-a-half-second jobs submitted during a 3 s drain.)"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from gwkit import Raw, start_gateway

from clusterkit import FAST_HEARTBEAT, Cluster
from mdp_gearman.packets import T
from testkit import wait_for


def test_a_job_submitted_while_the_door_drains_is_refused_or_answered(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        broker = cluster.broker()
        for _ in range(2):
            cluster.worker([broker], "slow", faulty=True)
        door = start_gateway(cluster, [broker], *FAST_HEARTBEAT)
        port = int(door.endpoint.rpartition(":")[2])
        started = tmp_path / "started"
        first, second = Raw(port, timeout=30), Raw(port, timeout=30)
        first.send(T.SUBMIT_JOB, b"slow", b"", json.dumps(
            {"sleep": 2.0, "started_file": str(started)}).encode())
        assert first.recv()[0] == T.JOB_CREATED
        wait_for(started.exists, 20, "the first job running")
        door.signal(signal.SIGTERM)
        wait_for(lambda: "stopping" in door.output(), 10, "the door to begin its drain")
        # a job that would outlast the one in flight
        second.send(T.SUBMIT_JOB, b"slow", b"", b'{"sleep": 2.0, "n": 2}')
        kind, args = second.recv()
        if kind == T.JOB_CREATED:  # accepted: then it must be answered
            kind, args = second.recv()
            assert kind == T.WORK_COMPLETE and json.loads(args[-1])["n"] == 2
        else:
            assert (kind, args[0]) == (T.ERROR, b"shutting_down"), (kind, args)
        assert first.recv()[0] == T.WORK_COMPLETE  # the job in flight is answered
        assert door.wait(20) == 0
        first.close()
        second.close()
    finally:
        cluster.stop_all()
