"""The sentinel: one thread per process that watches workers whose handler runs long.

A worker runs its handler inline on its own thread and holds its ``lock`` at all other
times. ``enter`` and ``leave`` (around each handler) cost a lock and a dict operation, no
system call, unless the sentinel has gone to sleep (no handler for a while: then the first
``enter`` wakes it) or had taken the worker over (then ``leave`` wakes it, to give the lock
back). A worker whose handler is younger than its ``busy_after_s`` is only *pending*; the
sentinel ticks every ``BUSY_TICK_S`` while handlers come and go, and moves a pending worker
whose handler is past it to *active*: it takes the worker's lock and, with it, its links,
calls ``sentinel_turn`` (BUSY, bounces, RECALLs, heartbeats, the time limit) whenever one
of them has input (or, for a plain link, bytes waiting to go and room for them) or a timer
is due, and releases the lock when the handler returns. A plain link (``--transport
plain``) has no libzmq thread to answer the broker's ZMTP PINGs: the sentinel's reads do,
so ``busy_after`` (5 ms by default) must stay far below the broker's ZMTP timeout (4.4 s
by default, 0.3 s at the least); a handler that holds the GIL for longer than that starves
the sentinel too, and the broker drops the connection.
Every Worker in the process shares the one sentinel, so that hundreds of workers hosted as
threads cost nothing while idle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

import zmq

from mdp.clock import poll_timeout_ms

log = logging.getLogger(__name__)

BUSY_TICK_S = 0.005  # how often the sentinel looks for handlers past busy_after
IDLE_TICKS = 200  # ticks without any handler before the sentinel sleeps


class Watched(Protocol):
    """What the sentinel needs of a worker (``mdp.worker.Worker``)."""

    lock: threading.Lock
    busy_after_s: float

    def poll_items(self) -> list[tuple[Any, int]]: ...
    def next_deadline(self, now: float) -> float: ...
    def sentinel_turn(self, now: float, took_over: bool) -> None: ...


class Sentinel:
    """The watch over every worker of this process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Watched, float] = {}  # in a handler since (monotonic)
        self._active: dict[Watched, None] = {}  # we hold their lock
        self._returning: list[Watched] = []  # active ones whose handler returned
        self._entries = 0
        self._sleeping = False
        self._rfd = self._wfd = -1  # the wake-up pipe; -1 until the thread runs
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child: the thread is not there; start a new one when needed."""
        self._lock = threading.Lock()
        self._pending.clear()
        self._active.clear()
        self._returning.clear()
        self._rfd = self._wfd = -1

    def _start_thread(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        threading.Thread(target=self._run, name="dips-sentinel", daemon=True).start()

    def enter(self, worker: Watched, now: float) -> None:
        with self._lock:
            if self._rfd < 0:
                self._start_thread()
            self._pending[worker] = now
            self._entries += 1
            wake = self._sleeping
            self._sleeping = False
        if wake:
            self.nudge()

    def leave(self, worker: Watched) -> None:
        with self._lock:
            if self._pending.pop(worker, None) is not None or worker not in self._active:
                return
            self._returning.append(worker)
        self.nudge()

    def nudge(self) -> None:
        if self._wfd >= 0:
            try:
                os.write(self._wfd, b"\0")
            except (BlockingIOError, OSError):
                pass

    def _run(self) -> None:
        idle_ticks = 0
        seen = -1
        while True:
            try:
                timeout_ms, idle_ticks, seen = self._turn(idle_ticks, seen)
                self._poll(timeout_ms)
            except Exception:  # the barrier: the sentinel never dies
                log.exception("sentinel turn failed")
                time.sleep(1.0)  # not a hot loop of tracebacks

    def _turn(self, idle_ticks: int, seen: int) -> tuple[int | None, int, int]:
        now = time.monotonic()
        due: list[Watched] = []
        with self._lock:
            for worker in self._returning:
                if self._active.pop(worker, 0) is None:
                    worker.lock.release()
            self._returning.clear()
            next_due = None
            for worker, started in self._pending.items():
                at = started + worker.busy_after_s
                if at <= now:
                    due.append(worker)
                elif next_due is None or at < next_due:
                    next_due = at
            for worker in due:
                del self._pending[worker]
                self._active[worker] = None
                worker.lock.acquire()  # free: its main thread is in the handler
            entries = self._entries
        for worker in list(self._active):
            worker.sentinel_turn(now, worker in due)
        deadline = next_due
        for worker in self._active:
            at = worker.next_deadline(now)
            deadline = at if deadline is None else min(deadline, at)
        if deadline is not None:
            return poll_timeout_ms(deadline, now), 0, entries
        if entries != seen:
            idle_ticks = 0
        else:
            idle_ticks += 1
        if idle_ticks < IDLE_TICKS:
            return max(1, int(BUSY_TICK_S * 1000)), idle_ticks, entries
        with self._lock:
            if self._entries == entries and not self._pending:
                self._sleeping = True
                return None, idle_ticks, entries
        return 1, 0, entries

    def _poll(self, timeout_ms: int | None) -> None:
        items: list[tuple[Any, int]] = [(self._rfd, zmq.POLLIN)]
        for worker in self._active:
            items += worker.poll_items()
        events = zmq.zmq_poll(items, -1 if timeout_ms is None else timeout_ms)
        if any(fd == self._rfd for fd, _ in events):
            try:
                while os.read(self._rfd, 4096):
                    pass
            except BlockingIOError:
                pass


SENTINEL = Sentinel()
