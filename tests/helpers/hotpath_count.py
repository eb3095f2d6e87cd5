"""Calls and opcodes one ordinary request costs in the broker core, client core and worker.

Run it against two trees to compare them (a change must add no call per ordinary request):

    PYTHONPATH=TREE python tests/helpers/hotpath_count.py

Broker core: a lone SUBMIT given at once to an idle DIPS worker, and that worker's REPLY
(the frames built beforehand); client core: a call placed on a DIPS connection and sent,
and its RESULT; client shell (``MDPClient.send``, its lone-call path, on a link that answers
at once with the RESULT, as a socket would after its round trip); worker (its shell and
core, a link that keeps what is sent): a lone TASK
taken, run and answered (``Worker._lone``, the sync path), and a TASKS of 16 fed and run
back to back (``Worker._run_backlog``, the pipelined path; per task). Counted with
``sys.settrace`` (Python calls and opcodes executed) and ``sys.setprofile`` (C calls), after
one warm-up round each.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from mdp import protocol as p
from mdp import worker as worker_module
from mdp.actions import Opened, Received, Tick
from mdp.brokercore import BrokerCore
from mdp.client import MDPClient
from mdp.clientcore import ClientCore
from mdp.config import BrokerConfig, WorkerConfig
from mdp.handlers import resolve
from mdp.worker import Worker
from tests.inprockit import KeptLink

REPLY = b"\x81\xa1r\x01"


def counting(round_: Callable[[], None]) -> tuple[Counter[str], int]:
    calls: Counter[str] = Counter()
    ops = [0]

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            calls[frame.f_code.co_qualname] += 1
        elif event == "opcode":
            ops[0] += 1
        return tracer

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            calls["C:" + getattr(arg, "__qualname__", str(arg))] += 1

    sys.setprofile(profiler)
    sys.settrace(tracer)
    try:
        round_()
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return calls, ops[0]


def broker_rounds() -> Callable[[], None]:
    core = BrokerCore(BrokerConfig(bind=["inproc://x"]), 0.0, instance="one")
    core.handle(Received(0, [b"W", *p.ready(b"echo", {"pid": 1, "checks": True})], ""), 0.0)
    core.handle(Received(0, [b"C", *p.client_hello(batch=True, progress=True)], ""), 0.0)
    core.take_actions()
    submits = [[b"C", *p.client_submit(b"echo", rid, 1000, [b"\x80"])] for rid in (1, 2)]

    def round_() -> None:
        core.receive(submits.pop(0), "", 0.1)
        [task] = core.take_actions()
        core.receive([b"W", *p.reply(task.frames[4], [REPLY])], "", 0.1)
        core.take_actions()
    return round_


def client_rounds() -> Callable[[], None]:
    client = ClientCore(["tcp://b:1"], shuffle=False)
    client.submit(b"echo", [b"\x80"], 0.0, timeout=10.0)
    client.take_actions()
    client.handle(Opened(0), 0.0)
    welcome = p.client_welcome(b"i", {"broker": "t", "instance": "one"})[1:]
    client.handle(Received(0, welcome), 0.0)

    def round_() -> None:
        if not client.pending:
            client.submit(b"echo", [b"\x80"], 0.1, timeout=10.0)
        client.take_actions()
        [rid] = client.pending
        client.handle(Received(0, p.to_client(b"i", b"echo", [REPLY], rid)[1:]), 0.1)
        client.handle(Tick(), 0.1)
        client.take_actions()
        client.take_finished()
    return round_


class EchoLink:
    """A client link (``MDPClient._links``) that answers each SUBMIT at once with the
    RESULT the broker would send, built beforehand (keyed by the SUBMIT's meta frame)."""

    up = True

    def __init__(self, service: bytes, rids: range) -> None:
        result = p.pack({"result": 1})
        self._replies = {p.client_submit(service, rid, 10000, [b""])[4]:
                         p.to_client(b"", service, [result], rid)[1:] for rid in rids}
        self._inbox: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> None:
        self._inbox.append(self._replies[frames[4]])

    write = send

    def wait(self, timeout_ms: int) -> list[list[bytes]]:
        inbox, self._inbox = self._inbox, []
        return inbox

    def close(self) -> None:
        pass


def client_lone_rounds() -> Callable[[], None]:
    client = MDPClient(["tcp://127.0.0.1:1"], shuffle=False, transport="zmq")
    core = client._core
    core.submit(b"echo", [b"\x80"], 0.0, timeout=10.0)  # (rid 1: up on a DIPS broker)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    welcome = p.client_welcome(b"i", {"broker": "t", "instance": "one"})[1:]
    core.handle(Received(0, welcome), 0.0)
    core.handle(Received(0, p.to_client(b"i", b"echo", [REPLY], 1)[1:]), 0.0)
    core.take_finished()
    core.take_actions()
    client._links[0] = EchoLink(b"echo", range(2, 10))  # type: ignore[assignment]
    client._connecting.clear()
    request = {"d": b"xxxxx"}

    def round_() -> None:
        if client.send("echo", request) != 1:
            raise RuntimeError("the lone call did not take its reply")
    return round_


BACKLOG = 16  # tasks in the worker's TASKS round
BODY = b"\x81\xa1d\xc4\x05xxxxx"  # {"d": 5 bytes}


def _worker() -> tuple[Worker, KeptLink]:
    """A welcomed echo worker on one kept link (no socket opened, no loop run)."""
    worker = Worker(WorkerConfig(brokers=["tcp://127.0.0.1:1"]), resolve("echo"))
    link = KeptLink()
    worker.links[0] = link
    now = time.monotonic()  # (the rounds read the clock: its timers start now)
    worker.core.handle(Opened(0), now)
    welcome = p.worker_welcome(b"", {"broker": "t", "instance": "one", "batch": True})[1:]
    worker._feed(0, welcome, now)
    link.sent.clear()
    return worker, link


def worker_lone_rounds() -> Callable[[], None]:
    worker, link = _worker()
    tasks = [p.to_worker(b"", bytes([n]), [BODY], True, ttl_ms=30000)[1:] for n in (1, 2)]

    def round_() -> None:
        worker._lone(0, tasks.pop(0))
        link.sent.clear()
    return round_


def worker_backlog_rounds() -> Callable[[], None]:
    worker, link = _worker()
    batches = [p.to_worker_batch(b"", [bytes([n, k]) for k in range(BACKLOG)],
                                 [BODY] * BACKLOG, [30000] * BACKLOG, [False] * BACKLOG)[1:]
               for n in (1, 2)]

    worker_module.READ_EVERY_S = float("inf")  # (traced, a round takes longer than that)

    def round_() -> None:
        worker._read_at = now = time.monotonic()
        worker._feed(0, batches.pop(0), now)
        task = worker.core.begin(now)
        if task is not None:
            worker._run_backlog(task, now + 1.0)
        link.sent.clear()
    return round_


def main() -> int:
    for name, make, per in (("broker core (SUBMIT + REPLY)", broker_rounds, 1),
                            ("client core (call + RESULT)", client_rounds, 1),
                            ("client shell (MDPClient.send, a lone call)", client_lone_rounds, 1),
                            ("worker (a lone TASK, run and answered)", worker_lone_rounds, 1),
                            (f"worker (TASKS of {BACKLOG}, run back to back), per task",
                             worker_backlog_rounds, BACKLOG)):
        round_ = make()
        round_()  # warm-up: the first call of each kind is not the steady path
        calls, ops = counting(round_)
        print(f"{name}: {sum(calls.values()) / per:g} calls, {ops / per:g} opcodes")
        print("   ", ", ".join(f"{k} {v}" for k, v in sorted(calls.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
