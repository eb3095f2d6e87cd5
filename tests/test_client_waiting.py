"""Waiting costs nothing (promise 9): clients whose brokers are all down wait in the kernel.

Every broker is down: one refuses connections (nothing listens on its port), the other is
SIGSTOPped after the client has used it (its host accepts TCP connections but nothing
answers). A sync ``MDPClient`` and an ``AsyncMDPClient`` each wait out a call's timeout;
the process's CPU time over the wait (``time.process_time``: every thread, libzmq's
included) must stay within 5 % of the wait. The figure is CPU time, not speed: no timing
assertion. And a library configures no logging: with none configured, nothing is printed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from clusterkit import Cluster, Proc
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
from mdp.errors import Timeout
from testkit import free_port, free_ports

WAIT_S = 3.0
MAX_SHARE = 0.05  # of one core, over the wait


@pytest.fixture
def outage(cluster: Cluster) -> Iterator[tuple[list[str], Proc]]:
    """[refusing endpoint, live broker's endpoint] and the live broker (with an echo
    worker), which the test freezes once its client has used it."""
    broker = cluster.broker()
    cluster.worker([broker])
    try:
        yield [f"tcp://127.0.0.1:{free_port()}", broker.endpoint], broker
    finally:
        broker.signal(signal.SIGCONT)


def cpu_share(wait: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of this process while ``wait`` runs."""
    wall, cpu = time.monotonic(), time.process_time()
    wait()
    return time.process_time() - cpu, time.monotonic() - wall


def test_a_sync_client_with_every_broker_down_waits_in_the_kernel(
        outage: tuple[list[str], Proc], caplog: pytest.LogCaptureFixture) -> None:
    brokers, live = outage
    with MDPClient(brokers, timeout=10.0) as client:
        assert client.send("echo", {"x": 1}) == {"x": 1}
        live.signal(signal.SIGSTOP)

        def wait() -> None:
            with pytest.raises(Timeout):
                client.send("echo", {"x": 2}, timeout=WAIT_S)

        with caplog.at_level(logging.WARNING, logger="mdp"):
            cpu, wall = cpu_share(wait)
    print(f"\nsync client, every broker down: {cpu * 1000:.0f} ms of CPU over "
          f"{wall:.1f} s ({100 * cpu / wall:.1f} % of a core)")
    assert cpu <= MAX_SHARE * wall
    for endpoint in brokers:  # at most one warning per broker per few seconds
        warnings = [r for r in caplog.records if endpoint in r.getMessage()]
        assert len(warnings) <= 1 + int(wall // 5), [r.getMessage() for r in warnings]


def test_an_async_client_with_every_broker_down_waits_in_the_kernel(
        outage: tuple[list[str], Proc]) -> None:
    brokers, live = outage

    async def main() -> tuple[float, float]:
        async with AsyncMDPClient(brokers, timeout=10.0) as client:
            assert await client.send("echo", {"x": 1}) == {"x": 1}
            live.signal(signal.SIGSTOP)
            wall, cpu = time.monotonic(), time.process_time()
            with pytest.raises(Timeout):
                await client.send("echo", {"x": 2}, timeout=WAIT_S)
            return time.process_time() - cpu, time.monotonic() - wall

    cpu, wall = asyncio.run(main())
    print(f"\nasync client, every broker down: {cpu * 1000:.0f} ms of CPU over "
          f"{wall:.1f} s ({100 * cpu / wall:.1f} % of a core)")
    assert cpu <= MAX_SHARE * wall


SILENT_CLIENT = """
import sys
from mdp.client import MDPClient
from mdp.errors import Timeout
try:
    MDPClient(sys.argv[1:], timeout=2.0, down_for=0.1, connect_timeout=0.1).send("echo", {})
except Timeout:
    pass
"""


def test_with_no_logging_configured_a_client_prints_nothing() -> None:
    brokers = [f"tcp://127.0.0.1:{port}" for port in free_ports(2)]
    done = subprocess.run([sys.executable, "-c", SILENT_CLIENT, *brokers],
                          capture_output=True, timeout=30, env=os.environ.copy())
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout == b"" and done.stderr == b""
