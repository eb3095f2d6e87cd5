"""A graceful restart of mdp-gearman (SIGTERM, then the same --state-dir) runs no background
job twice: the door lets the jobs it has in DIPS finish before it exits. (It cut them at
once; they stayed in the outbox, ran on in DIPS, and ran again after the restart: 16 of 40,
every job in DIPS at the signal.)"""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

from gwkit import Raw, port_of, start_gateway

from clusterkit import Cluster, recorded
from mdp_gearman.packets import T
from testkit import wait_for

JOBS = 40


def _runs(record: Path) -> collections.Counter[int]:
    return collections.Counter(recorded(record))


def test_background_jobs_through_a_graceful_restart(cluster: Cluster, tmp_path: Path) -> None:
    brokers = [cluster.broker()]
    record = tmp_path / "runs.txt"
    for _ in range(2):
        cluster.recorder(brokers, record)
    state = tmp_path / "state"
    gateway = start_gateway(cluster, brokers, state_dir=state)
    raw = Raw(port_of(gateway))
    for n in range(JOBS):
        raw.send(T.SUBMIT_JOB_BG, b"record", b"", json.dumps({"n": n, "sleep": 0.3}).encode())
    handles = [raw.recv() for _ in range(JOBS)]
    assert all(kind == T.JOB_CREATED for kind, _ in handles)
    wait_for(lambda: sum(_runs(record).values()) >= 3, 20, "a few runs")
    gateway.signal(signal.SIGTERM)
    assert gateway.wait(30) == 0
    ran_before = sum(_runs(record).values())
    again = start_gateway(cluster, brokers, state_dir=state)
    wait_for(lambda: len(_runs(record)) == JOBS, 60, "every background job to run")
    runs = _runs(record)
    twice = sorted(n for n, count in runs.items() if count > 1)
    print(f"ran before the restart: {ran_before}; twice: {len(twice)} {twice}")
    assert twice == []
    again.signal(signal.SIGTERM)
    assert again.wait(30) == 0
