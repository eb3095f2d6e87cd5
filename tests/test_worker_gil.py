"""A handler that holds the GIL in C for longer than the broker's ZMTP timeout: why a worker's
``--transport auto`` stays pyzmq.

On a pyzmq link, libzmq's own I/O thread answers the broker's ZMTP PINGs without the GIL, so
the connection outlives the handler and its reply is taken. On a plain link nobody can answer
them (the sentinel is a Python thread), so the broker drops the connection: the reply is lost
and the request costs a worker loss; after two it is answered ``worker_lost`` and refused for
a while (docs/OPERATIONS.md, "The worker's transport"). The broker's ZMTP timeout is cut to
0.3 s (SHORT_ZMTP) so that a hold of 1.5 s shows it; the default is 4.4 s.
"""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from clusterkit import HERE, Cluster
from mdp.client import MDPClient
from mdp.errors import RequestError

pytestmark = pytest.mark.slow

GIL_WORKER = HERE / "helpers" / "gil_worker.py"
SHORT_ZMTP = ("--zmtp-heartbeat", "100", "--max-message-bytes", "100000")  # timeout 0.3 s
HOLD_S = 1.5  # five times the broker's ZMTP timeout


@pytest.mark.parametrize("transport", [
    "auto",
    "zmq",
    pytest.param("plain", marks=pytest.mark.xfail(
        strict=True, raises=RequestError,
        reason="the known limit of a plain link: nobody answers the broker's ZMTP PINGs "
               "while C code holds the GIL")),
])
def test_a_handler_holding_the_gil_past_the_zmtp_timeout_is_answered(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    monkeypatch.setattr("clusterkit.FAULTY_WORKER", GIL_WORKER)
    monkeypatch.delenv("DIPS_WORKER_TRANSPORT", raising=False)  # "auto" is the default's
    broker = cluster.broker(None, *SHORT_ZMTP)
    worker = cluster.worker([broker], "gil", "--transport", transport, faulty=True)
    with MDPClient([broker.endpoint], timeout=20) as client:
        reply = client.send("gil", {"hold_gil": HOLD_S})
    assert reply["pid"] == worker.pid and reply["held"] >= HOLD_S


def test_the_helper_really_holds_the_gil() -> None:
    """No other thread runs while the helper's handler holds the GIL (else the test above
    would prove nothing)."""
    spec = importlib.util.spec_from_file_location("gil_worker", GIL_WORKER)
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        helper.handle({"hold_gil": 0.3})
    finally:
        stop.set()
        thread.join(5)
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) >= 0.25
