"""The sentinel's busy timers: a handler that returns within busy_after never wakes the
sentinel, and one that runs past it is still taken over (mdp.sentinel)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from mdp import sentinel as sentinel_module
from mdp.sentinel import BusyTimer, Sentinel

pytestmark = pytest.mark.skipif(sentinel_module._TIMERFD is None,
                                reason="no timerfd here: the sentinel ticks")

WAIT_S = 10.0  # the longest any wait below may take


class FakeWorker:
    """What the sentinel needs of a worker, counting its turns."""

    def __init__(self, busy_after_s: float) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # held by its own thread except while a handler runs
        self.busy_after_s = busy_after_s
        self.turns = 0
        self.took_over = threading.Event()

    def poll_items(self) -> list[tuple[Any, int]]:
        return []

    def next_deadline(self, now: float) -> float:
        return now + 3600.0

    def sentinel_turn(self, now: float, took_over: bool) -> None:
        self.turns += 1
        if took_over:
            self.took_over.set()

    def handler(self, sentinel: Sentinel, seconds: float) -> None:
        """A handler of ``seconds`` (busy-waiting, as a render holds its thread)."""
        started = time.monotonic()
        self.lock.release()
        sentinel.enter(self, started)
        try:
            while time.monotonic() < started + seconds:
                pass
        finally:
            sentinel.leave(self)
            self.lock.acquire()  # (given back by the sentinel if it had taken over)


def counting(sentinel: Sentinel) -> list[int]:
    """Count the sentinel's turns (its wake-ups)."""
    turns = [0]
    turn = sentinel._turn

    def counted(idle_ticks: int, seen: int) -> tuple[int | None, int, int]:
        turns[0] += 1
        return turn(idle_ticks, seen)

    sentinel._turn = counted  # type: ignore[method-assign]
    return turns


def short_handlers(sentinel: Sentinel) -> int:
    """The sentinel's turns over 100 handlers of 1 ms, 1 ms apart, each far shorter than
    busy_after (ticking, it would wake every 20 ms: ~10 turns)."""
    turns = counting(sentinel)
    worker = FakeWorker(busy_after_s=0.02)
    worker.handler(sentinel, 0.0)  # the first starts the thread and registers the timer
    deadline = time.monotonic() + WAIT_S
    while turns[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    before = turns[0]
    for _ in range(100):
        worker.handler(sentinel, 0.001)
        time.sleep(0.001)  # (the worker reading its sockets between tasks)
    sentinel.forget(worker)
    return turns[0] - before


def test_short_handlers_do_not_wake_the_sentinel() -> None:
    # (a handler preempted past busy_after on a loaded machine costs two turns)
    assert short_handlers(Sentinel()) <= 4


def test_a_long_handler_is_taken_over_at_busy_after() -> None:
    sentinel = Sentinel()
    worker = FakeWorker(busy_after_s=0.005)
    for _ in range(3):
        worker.handler(sentinel, 0.001)  # short ones first: the timer is set again each time
    done = threading.Event()

    def long_handler() -> None:  # (on a thread of its own: the test waits for it)
        started = time.monotonic()
        sentinel.enter(worker, started)
        try:
            worker.took_over.wait(WAIT_S)
        finally:
            sentinel.leave(worker)
            done.set()

    worker.lock.release()
    thread = threading.Thread(target=long_handler)
    thread.start()
    assert worker.took_over.wait(WAIT_S), "the sentinel never took the long handler over"
    thread.join(WAIT_S)
    assert done.is_set()
    # the sentinel gives the lock back once the handler returned
    assert worker.lock.acquire(timeout=WAIT_S)
    sentinel.forget(worker)


def test_a_timer_set_again_forgets_an_expiry_not_read() -> None:
    timer = BusyTimer()
    try:
        timer.set(time.monotonic() - 1.0)  # has passed: goes off at once
        timer.set(time.monotonic() + 3600.0)
        with pytest.raises(BlockingIOError):
            os.read(timer.fd, 8)
        timer.clear()
    finally:
        timer.close()
