"""The worker's shell runs the short tasks waiting behind one back to back (Worker._run_backlog)
until the sockets are due to be read, a deadline comes or a stop is asked; no socket opened."""

from __future__ import annotations

import math
import time

import pytest

from mdp import protocol as p
from mdp import worker as worker_module
from mdp.actions import Opened
from mdp.config import WorkerConfig
from mdp.handlers import resolve
from mdp.worker import Worker
from tests.inprockit import KeptLink

BODY = p.pack({"d": b"xxxxx"})


def backlog(count: int) -> tuple[Worker, KeptLink, float]:
    """A welcomed echo worker holding ``count`` tasks of one TASKS; the first started. Its
    busy_after is long: a loaded machine could hold one task past the 5 ms default, and
    the backlog would stop for that (a long task) instead of what a test is about."""
    config = WorkerConfig(brokers=["tcp://127.0.0.1:1"], busy_after_s=10.0)
    worker = Worker(config, resolve("echo"))
    link = KeptLink()
    worker.links[0] = link  # type: ignore[assignment]
    start = time.monotonic()  # (the worker reads the clock: its timers start now)
    worker.core.handle(Opened(0), start)
    worker._feed(0, p.worker_welcome(b"", {"broker": "t", "instance": "one",
                                             "batch": True})[1:], start)
    link.sent.clear()
    keys = [b"k%d" % n for n in range(count)]
    frames = p.to_worker_batch(b"", keys, [BODY] * count, [60_000] * count, [False] * count)
    worker._read_at = now = time.monotonic()
    worker._feed(0, frames[1:], now)
    return worker, link, now


def answered(link: KeptLink) -> list[bytes]:
    keys: list[bytes] = []
    for frames in link.sent:
        if frames[2] == p.REPLIES:
            keys += p.unpack_meta(frames[3], "REPLIES")["keys"]
        elif frames[2] == p.REPLY:
            keys.append(frames[3])
    return keys


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """No read is due within a test however slow the machine: a loaded one could take
    READ_EVERY_S (1 ms) over a few tasks, and the backlog would stop for that instead."""
    monkeypatch.setattr(worker_module, "READ_EVERY_S", math.inf)


@pytest.mark.usefixtures("unhurried")
def test_a_backlog_runs_back_to_back_and_its_replies_go_together() -> None:
    worker, link, now = backlog(16)
    task = worker.core.begin(now)
    assert task is not None
    assert worker._run_backlog(task, math.inf) == []  # short tasks: the next poll reads
    assert not worker.core.waiting and worker.core.current is None
    assert answered(link) == [b"k%d" % n for n in range(16)]


def test_a_backlog_stops_when_the_sockets_are_due_to_be_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "READ_EVERY_S", 0.0)
    worker, link, now = backlog(4)
    task = worker.core.begin(now)
    assert task is not None
    assert worker._run_backlog(task, math.inf) is None  # every link read before the next
    assert len(worker.core.waiting) == 3


@pytest.mark.usefixtures("unhurried")
def test_a_backlog_stops_at_the_loops_deadline_and_at_a_stop() -> None:
    worker, link, now = backlog(4)
    task = worker.core.begin(now)
    assert task is not None
    assert worker._run_backlog(task, now) == []  # a timer is due: the loop's turn runs it
    assert len(worker.core.waiting) == 3
    task = worker.core.begin(time.monotonic())
    assert task is not None
    worker._stop_requested = True
    assert worker._run_backlog(task, math.inf) == []
    assert len(worker.core.waiting) == 2
