"""mdp-gearman within its file descriptors: Gearman workers cost the door a ZeroMQ socket and
a monitor per function and broker, so a door started with a service manager's usual limit ran
out of descriptors at about 200 one-function workers, after which it could neither register
a worker nor accept a connection. Now it raises its soft limit where it can, and otherwise
fits its connection and link limits to what it has, saying so."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from gwkit import _LISTENING, Raw

from clusterkit import Cluster, Proc
from mdp_gearman import packets as g
from testkit import status_of, wait_for

SOFT = HARD = 600  # 344 beside the door's reserve of 256: 172 connections, 43 links
WORKERS = 150  # one function each: 150 links would take 750 descriptors


def _door(cluster: Cluster, broker: Proc, tmp_path: Path) -> Proc:
    log = tmp_path / "door.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))

    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "mdp_gearman", "--listen",
                                  "127.0.0.1:0", "--broker", broker.endpoint,
                                  "--worker-functions", "fd*"],
                                 stdout=out, stderr=out, preexec_fn=limit)
    proc = Proc(popen, log)
    cluster.procs.append(proc)
    match = wait_for(lambda: popen.poll() is not None or _LISTENING.search(proc.output()), 20,
                     "the door to listen")
    assert popen.poll() is None, proc.output()
    proc.endpoint = f"127.0.0.1:{match.group(1)}"
    return proc


@pytest.mark.slow
def test_a_door_with_few_descriptors_fits_its_limits_and_keeps_serving(
        cluster: Cluster, tmp_path: Path) -> None:
    broker = cluster.broker()
    door = _door(cluster, broker, tmp_path)
    port = int(door.endpoint.rpartition(":")[2])
    assert "the file-descriptor limit is 600" in door.output()
    assert "at most 172 connections and 43 links" in door.output()

    workers = []
    try:
        for i in range(WORKERS):
            raw = Raw(port)
            raw.send(g.T.CAN_DO, b"fd%d" % i)
            raw.send(g.T.PRE_SLEEP)
            workers.append(raw)

        def registered() -> int:
            services = status_of(broker.endpoint).services
            return sum(1 for name, entry in services.items()
                       if name.startswith("fd") and entry.workers)

        wait_for(lambda: registered() == 43, 20, "43 Gearman workers registered")
        refused = 0
        for raw in workers[43:]:  # every worker past the links the door can hold is told
            kind, args = raw.recv()
            refused += kind == g.T.ERROR and args[0] == b"too_many_workers"
        assert refused == WORKERS - 43
        assert len(os.listdir(f"/proc/{door.pid}/fd")) < SOFT
        echo = Raw(port)  # a new peer is still served
        echo.send(g.T.ECHO_REQ, b"still here")
        assert echo.recv() == (g.T.ECHO_RES, [b"still here"])
        echo.close()
        assert registered() == 43
    finally:
        for raw in workers:
            raw.close()
    assert door.popen.poll() is None
    assert "Too many open files" not in door.output()
