"""Background jobs survive a SIGKILLed gateway; priorities under a backlog."""

from __future__ import annotations

import collections
import json
import signal
import time
from pathlib import Path

import pytest
from gwkit import Raw, port_of, start_gateway

from clusterkit import Cluster, recorded
from mdp_gearman.packets import T
from testkit import status_of, wait_for

JOBS = 500


def _runs(record: Path) -> collections.Counter[int]:
    return collections.Counter(recorded(record))


@pytest.mark.slow
def test_500_background_jobs_survive_a_gateway_sigkill(cluster: Cluster, tmp_path: Path) -> None:
    brokers = [cluster.broker(), cluster.broker()]
    record = tmp_path / "runs.txt"
    for _ in range(2):
        cluster.recorder(brokers, record)
    state = tmp_path / "state"
    gateway = start_gateway(cluster, brokers, "--sync", "NORMAL", state_dir=state)
    raw = Raw(port_of(gateway))
    for n in range(JOBS):  # pipelined: every submission first, then every JOB_CREATED
        raw.send(T.SUBMIT_JOB_BG, b"record", b"", json.dumps({"n": n, "sleep": 0.004}).encode())
    handles = [raw.recv() for _ in range(JOBS)]
    assert all(kind == T.JOB_CREATED for kind, _ in handles)
    gateway.signal(signal.SIGKILL)  # accepted, mostly not yet run
    gateway.wait()
    ran_before = sum(_runs(record).values())
    assert ran_before < JOBS, "the jobs ran too fast to test the restart; slow them down"
    again = start_gateway(cluster, brokers, "--sync", "NORMAL", state_dir=state)
    raw = Raw(port_of(again))
    raw.send(T.GET_STATUS, handles[-1][1][0])  # a handle from before the restart
    status = raw.recv()
    wait_for(lambda: len(_runs(record)) == JOBS, 60, "every background job to run")
    runs = _runs(record)
    twice = sorted(n for n, count in runs.items() if count > 1)
    print(f"ran before the kill: {ran_before}; after the restart: {JOBS - ran_before}+; "
          f"run twice: {len(twice)} {twice[:20]}")
    assert set(runs) == set(range(JOBS))
    assert len(twice) <= 16 + 1  # at most the jobs in DIPS when the gateway died
    assert status[0] == T.STATUS_RES and status[1][1] in (b"0", b"1")
    wait_for(lambda: _unknown(raw, handles[-1][1][0]), 20, "the last job to be forgotten")


def _unknown(raw: Raw, handle: bytes) -> bool:
    raw.send(T.GET_STATUS, handle)
    return raw.recv()[1][1] == b"0"


def test_high_overtakes_normal_and_low_under_a_backlog(cluster: Cluster, tmp_path: Path) -> None:
    brokers = [cluster.broker()]
    record = tmp_path / "order.txt"
    cluster.recorder(brokers, record)  # one worker: everything else queues
    gateway = start_gateway(cluster, brokers, "--concurrency", "200", "--timeout", "30")
    raw = Raw(port_of(gateway))
    kinds = [(T.SUBMIT_JOB_LOW, 0), (T.SUBMIT_JOB, 1000), (T.SUBMIT_JOB_HIGH, 2000)]
    for kind, base in kinds:
        for i in range(30 if base < 2000 else 10):
            raw.send(kind, b"record", b"", json.dumps({"n": base + i, "sleep": 0.01}).encode())
    replies = [raw.recv() for _ in range(140)]
    assert sum(kind == T.WORK_COMPLETE for kind, _ in replies) == 70  # LOW ones finish too
    order = recorded(record)
    high_done = max(order.index(n) for n in range(2000, 2010))
    normal_done = [order.index(n) for n in range(1000, 1030)]
    assert high_done < sorted(normal_done)[15], order  # HIGH ahead of most NORMAL ones
    assert max(order.index(n) for n in range(30)) > min(normal_done)  # LOW after NORMAL


def test_a_service_with_no_worker_holds_no_slot_and_stalls_no_other(cluster: Cluster,
                                                                     tmp_path: Path) -> None:
    """200 background jobs for a service nobody offers, then one for a healthy service: that
    one runs at once (the figure is printed); the 200 wait in the door, none sent to DIPS,
    and a slow healthy service's backlog does not hold up a third service either."""
    brokers = [cluster.broker(), cluster.broker()]
    record = tmp_path / "runs.txt"
    cluster.recorder(brokers, record)
    cluster.recorder(brokers, record, "--service", "slowrecord")
    gateway = start_gateway(cluster, brokers, "--background-concurrency", "4",
                            state_dir=tmp_path / "state")
    raw = Raw(port_of(gateway))
    for n in range(200):
        raw.send(T.SUBMIT_JOB_BG, b"nobody", b"", json.dumps({"n": n}).encode())
    for n in range(1000, 1040):  # 40 x 0.2 s on one worker, 4 at a time
        raw.send(T.SUBMIT_JOB_BG, b"slowrecord", b"", json.dumps({"n": n, "sleep": 0.2}).encode())
    assert all(raw.recv()[0] == T.JOB_CREATED for _ in range(240))
    sent = time.monotonic()
    raw.send(T.SUBMIT_JOB_BG, b"record", b"", b'{"n": 5000}')
    assert raw.recv()[0] == T.JOB_CREATED
    wait_for(lambda: 5000 in _runs(record), 20, "the healthy service's job to run")
    print(f"the healthy service's background job ran {time.monotonic() - sent:.3f} s after "
          f"its submission, behind {200} jobs for a dead service and {40} slow ones")
    assert len(_runs(record)) < 41, "it ran before the slow service's backlog"
    rows = {r.split("\t")[0]: r.split("\t")[1:] for r in raw.line("status").splitlines()
            if "\t" in r}
    assert rows["nobody"] == ["200", "0", "0"]  # all held by the door
    for broker in brokers:
        service = status_of(broker.endpoint).services.get("nobody")
        assert service is None or service.counters is None or service.counters.requests == 0
