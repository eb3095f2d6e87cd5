"""A poisoned request costs at most two workers even when the broker that holds it freezes
or dies after its first loss (PROTOCOL.md, "Poisoned requests"), with real processes.

Two brokers with their default settings, two workers attached to both and started again
1 s after they die (the way supervisord restarts a crashed program; its backoff starts at
1 s). One worker runs a
request held open by the test (a gate file), so that no broker has an idle worker once the
other dies; then a request whose handler kills the process that runs it goes to one broker
(A: whichever its client reached first), kills the idle worker, and costs its request one
loss there: A puts it back in its queue, where it waits for a worker. The test then stops
A (SIGSTOP) or kills it (SIGKILL): the client fails over to the other broker, B. Before
the request's count travelled with it (LOSSES to the client, ``losses`` in its SUBMIT to
B), B started counting from zero and the request killed a third worker there.

The held request's client is closed at the end of the test, whatever happened: held at A
(when A is the broker it reached), it would otherwise keep trying a broker the test killed,
or the cluster fixture stopped, until its timeout, and warn about it in the tests that run
next.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, Proc, Respawner
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
from mdp.errors import WorkerLost
from testkit import broker_status, count_workers, status_of, wait_for

pytestmark = pytest.mark.slow

RESPAWN_S = 1.0  # the broker that charged the first loss has no idle worker meanwhile
WORKERS = 2


class Call(threading.Thread):
    """One request in the background: its outcome (a reply or an exception) and how long
    it took."""

    def __init__(self, endpoints: list[str], request: dict[str, Any], **options: Any) -> None:
        super().__init__(daemon=True)
        self.endpoints, self.request, self.options = endpoints, request, options
        self.outcome: Any = None
        self.took = 0.0

    def run(self) -> None:
        started = time.monotonic()
        with MDPClient(self.endpoints, **self.options) as client:
            try:
                self.outcome = client.send("echo", self.request)
            except Exception as exc:  # the test fails on it, naming it
                self.outcome = exc
        self.took = time.monotonic() - started


class Held(threading.Thread):
    """A request held open in the background until :meth:`close` (a sync client cannot be
    stopped from another thread; this one's event loop is told to)."""

    def __init__(self, endpoints: list[str], request: dict[str, Any], timeout: float) -> None:
        super().__init__(daemon=True)
        self.endpoints, self.request, self.timeout = endpoints, request, timeout
        self.loop = asyncio.new_event_loop()
        self.closing = asyncio.Event()

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._hold())
        finally:
            self.loop.close()

    async def _hold(self) -> None:
        async with AsyncMDPClient(self.endpoints, timeout=self.timeout) as client:
            call = asyncio.ensure_future(client.send("echo", self.request))
            closing = asyncio.ensure_future(self.closing.wait())
            await asyncio.wait([call, closing], return_when=asyncio.FIRST_COMPLETED)
            for task in (call, closing):
                task.cancel()
            await asyncio.gather(call, closing, return_exceptions=True)

    def close(self) -> None:
        """Give up the request (if it is still out) and close the client."""
        try:
            self.loop.call_soon_threadsafe(self.closing.set)
        except RuntimeError:  # its loop is closed: the thread has ended
            pass
        self.join(10)
        assert not self.is_alive(), "the held request's client did not close"


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_a_poisoned_request_whose_broker_freezes_or_dies_costs_two_workers_in_all(
        cluster: Cluster, tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mdp.clientcore")
    brokers = [cluster.broker(fast=False), cluster.broker(fast=False)]
    endpoints = [broker.endpoint for broker in brokers]
    respawner = Respawner(cluster, endpoints, tmp_path, WORKERS, RESPAWN_S)
    for endpoint in endpoints:
        wait_for(lambda e=endpoint: count_workers(e, "echo") == WORKERS, 30,
                 f"{WORKERS} workers at {endpoint}")
    respawner.start()
    gate, started = tmp_path / "gate", tmp_path / "held.started"
    held = Held(endpoints[:1], {"gate_file": str(gate), "started_file": str(started)},
                timeout=30.0)
    held.start()  # one worker runs it until the gate opens: one idle worker left
    try:
        _poison_and_fail_a(brokers, respawner, gate, started, fault, caplog)
    finally:
        held.close()
        respawner.stop.set()
        respawner.join(10)


def _poison_and_fail_a(brokers: list[Proc], respawner: Respawner, gate: Path, started: Path,
                       fault: str, caplog: pytest.LogCaptureFixture) -> None:
    """The test's scenario once the held request is out (see the module docstring)."""
    endpoints = [broker.endpoint for broker in brokers]
    wait_for(started.exists, 20, "the held request running")
    for endpoint in endpoints:  # (busy there, or busy elsewhere: BUSY came)
        wait_for(lambda e=endpoint: count_workers(e, "echo", "idle") == 1, 20,
                 f"one idle worker at {endpoint}")

    poison = Call(endpoints, {"die": True, "tag": "poison"})
    poison.start()  # with the default timeout (10 s)

    def charged() -> Proc | None:
        """The broker that charged the request its first loss (and queued it again)."""
        for broker in brokers:
            status = broker_status(broker.endpoint)
            if status is not None and status.counters.requeued > status.counters.bounced:
                return broker
        return None

    try:
        a = wait_for(charged, 20, "a broker charging the request its first loss")
    except AssertionError:
        raise AssertionError(f"deaths {respawner.deaths}, outcome {poison.outcome!r}\n"
                             + "\n".join(b.output()[-2000:] for b in brokers)) from None
    [b] = [broker for broker in brokers if broker is not a]
    assert respawner.deaths == 1
    if fault == "stop":
        a.signal(signal.SIGSTOP)
    else:
        a.popen.kill()
    poison.join(30)
    assert isinstance(poison.outcome, WorkerLost), f"answered {poison.outcome!r}"
    assert poison.took < 10.0
    assert "2 workers were lost" in str(poison.outcome)

    if fault == "stop":  # woken, A runs nothing of it: the client's CANCEL came first
        a.signal(signal.SIGCONT)
        wait_for(lambda: "gave up 1 request(s) here" in a.output(), 20, "A reading the CANCEL")
        assert status_of(a.endpoint).counters.poisoned == 0
    gate.touch()
    deaths = wait_for(respawner.counted, 10, "every death counted")
    print(f"\n{fault}: worker_lost after {poison.took:.2f} s; {deaths} worker deaths")
    assert deaths == 2, f"the poisoned request cost {deaths} workers"
    assert "gave up: 2 workers were lost" in b.output()
    assert f"broker {a.endpoint} lost a worker running request" in caplog.text
