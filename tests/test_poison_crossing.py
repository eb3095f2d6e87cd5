"""An ordinary request that waits behind another broker's fatal request, at two workers that
die, is not given up as poisoned (PROTOCOL.md, "Checked starts"), with real processes.

Two brokers; workers attached to both whose handlers hold their requests until the test
opens a gate (``--busy-after 20``: they tell no broker BUSY meanwhile, so each broker but
the one whose request runs still believes them idle, as both brokers do for the moment in
which each gives one idle worker a request). The test kills a worker while it runs broker
A's request, with broker B's request I waiting unread in its socket: twice, at two workers.
Killed from outside at a moment the test chooses, as a fatal handler would kill its own
process, so that every step is decided by the test rather than by timing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, Proc
from mdp.client import MDPClient
from testkit import status_of, wait_for

pytestmark = pytest.mark.slow

# long heartbeats: two workers stuck in their handlers for a second or two are not taken
# for a stalled fleet (which would excuse every loss and prove nothing); no verdict of
# silence (a task taken back from a stuck worker would go elsewhere unasked)
BROKER = ("--heartbeat-interval", "3", "--frozen-after", "10")
STUCK = ("--busy-after", "20", "--transport", "zmq", "--heartbeat-interval", "3")


def held(broker: Proc, worker: Proc) -> int:
    """How many tasks ``broker`` has given ``worker`` and not had answered."""
    for status in status_of(broker.endpoint).workers("echo"):
        if status.pid == worker.pid:
            return status.queued
    return -1


class Call(threading.Thread):
    """One request through one broker, in the background; its reply or its error."""

    def __init__(self, broker: Proc, request: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.request = broker.endpoint, request
        self.outcome: Any = None

    def run(self) -> None:
        with MDPClient([self.endpoint], timeout=60.0) as client:
            try:
                self.outcome = client.send("echo", self.request)
            except Exception as exc:  # the test fails on it, naming it
                self.outcome = exc


def test_a_request_that_waited_behind_another_brokers_fatal_one_twice_is_answered(
        cluster: Cluster, tmp_path: Path) -> None:
    a, b = (cluster.broker(None, *BROKER, fast=False) for _ in range(2))
    w1 = cluster.worker([a, b], "echo", *STUCK, faulty=True, fast=False)
    w2 = cluster.worker([a, b], "echo", *STUCK, faulty=True, fast=False)  # after W1
    gate = tmp_path / "gate"
    started = {name: tmp_path / f"{name}.started" for name in ("p", "k")}
    p = Call(a, {"tag": "p", "gate_file": str(gate), "started_file": str(started["p"])})
    p.start()  # to W1, the least recently used
    wait_for(lambda: started["p"].exists() and held(a, w1) == 1, 20, "P running at W1")
    k = Call(a, {"tag": "k", "gate_file": str(gate), "started_file": str(started["k"])})
    k.start()  # to W2: W1 is busy at A
    wait_for(lambda: started["k"].exists() and held(a, w2) == 1, 20, "K running at W2")
    i = Call(b, {"tag": "i"})
    i.start()  # B believes both idle: to W1, where it waits behind P, unread
    wait_for(lambda: held(b, w1) == 1, 20, "I given to W1")

    w1.popen.kill()  # P kills W1: P and I have cost a worker each
    w1.popen.wait(10)
    # after its pause, I goes to W2 (idle as far as B knows) with an ASK: it waits there,
    # unread, behind K; P waits at A for a worker of its own
    wait_for(lambda: held(b, w2) == 1, 20, "I given to W2")
    w2.popen.kill()  # K kills W2: I never ran, and B had no CHECK of it
    w2.popen.wait(10)

    gate.touch()
    cluster.worker([a, b], "echo", "--heartbeat-interval", "3", faulty=True, fast=False)
    for call in (p, k, i):
        call.join(60)
    assert isinstance(i.outcome, dict) and i.outcome.get("tag") == "i", \
        f"the ordinary request was answered {i.outcome!r}"
    assert all(isinstance(c.outcome, dict) for c in (p, k)), (p.outcome, k.outcome)
    assert "had not started" in Path(b.log).read_text()
