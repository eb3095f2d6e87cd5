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

On Linux each worker has a *busy timer* (a ``timerfd``, :class:`BusyTimer`): ``enter`` sets
it to go off at the handler's start plus ``busy_after_s`` and ``leave`` clears it (a system
call each, ~1.5 us), and the sentinel waits on those timers instead of ticking. A handler
that returns in time then never wakes the sentinel, whose every wake-up took the GIL from a
running handler (an ecard worker under the real job's load spent 25-65 us less per card
outside its main thread). Where there is no timerfd (or ``DIPS_SENTINEL_TIMERS=0``), the
sentinel ticks as described above.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from typing import Any, Protocol

import zmq

from mdp.clock import poll_timeout_ms

log = logging.getLogger(__name__)

BUSY_TICK_S = 0.005  # how often the sentinel looks for handlers past busy_after
IDLE_TICKS = 200  # ticks without any handler before the sentinel sleeps
TIMERS_ENV = "DIPS_SENTINEL_TIMERS"  # "0": tick even where busy timers are available

_CLOCK_MONOTONIC = 1  # Linux <time.h>: the clock of time.monotonic()
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd_calls() -> tuple[Any, Any] | None:
    """libc's ``timerfd_create`` and ``timerfd_settime``, or None (not Linux, or turned off)."""
    if not sys.platform.startswith("linux") or os.environ.get(TIMERS_ENV, "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                        ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime


_TIMERFD = _timerfd_calls()


class BusyTimer:
    """A one-shot timer on CLOCK_MONOTONIC whose descriptor becomes readable when it goes off
    (a Linux ``timerfd``). ``set`` and ``clear`` are called by the worker's own thread, the
    reads and ``close`` by the sentinel's. Setting it again forgets an expiry not yet read."""

    def __init__(self) -> None:
        if _TIMERFD is None:
            raise OSError("no timerfd here")
        create, self._settime = _TIMERFD
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._at = _Itimerspec()
        self._off = _Itimerspec()  # all zero: disarmed

    def set(self, at: float) -> None:
        """Go off at ``at`` (time.monotonic()); at once if that has passed."""
        value = self._at.it_value
        seconds = int(at)
        nanoseconds = int((at - seconds) * 1e9) + 1  # rounded up: not before ``at``
        if nanoseconds >= 1_000_000_000:
            seconds += 1
            nanoseconds -= 1_000_000_000
        value.tv_sec = seconds
        value.tv_nsec = nanoseconds
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, self._at, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        self._settime(self.fd, 0, self._off, None)

    def read(self) -> None:
        """Take the expiry, if any, so that the descriptor waits for the next."""
        try:
            os.read(self.fd, 8)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        os.close(self.fd)


class Watched(Protocol):
    """What the sentinel needs of a worker (``mdp.worker.Worker``)."""

    lock: threading.Lock
    busy_after_s: float  # (one value for the worker's life: its busy timer is set from it)

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
        self._timed = _TIMERFD is not None  # busy timers, not ticks (the module docstring)
        self._timers: dict[Watched, BusyTimer] = {}  # every worker seen, until forget()
        self._timer_fds: dict[int, BusyTimer] = {}  # the sentinel's copy, for its poll
        self._closing: list[BusyTimer] = []  # of forgotten workers: closed by the sentinel
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child: the thread is not there; start a new one when needed."""
        self._lock = threading.Lock()
        self._pending.clear()
        self._active.clear()
        self._returning.clear()
        self._rfd = self._wfd = -1
        for timer in [*self._timers.values(), *self._closing]:
            timer.close()  # (the parent's workers do not run here)
        self._timers.clear()
        self._timer_fds = {}
        self._closing.clear()

    def _start_thread(self) -> None:
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        threading.Thread(target=self._run, name="dips-sentinel", daemon=True).start()

    def enter(self, worker: Watched, now: float) -> None:
        """``worker``'s handler starts (it started at ``now``, time.monotonic())."""
        with self._lock:
            if self._rfd < 0:
                self._start_thread()
            self._pending[worker] = now
            self._entries += 1
            wake = self._sleeping
            self._sleeping = False
            timer = self._timers.get(worker) if self._timed else None
            if timer is None and self._timed:
                timer = self._new_timer(worker)
                wake = True  # (the sentinel polls its descriptor from its next turn)
        if timer is not None:  # (after _pending: a timer that goes off finds it there)
            timer.set(now + worker.busy_after_s)
        if wake:
            self.nudge()

    def _new_timer(self, worker: Watched) -> BusyTimer | None:
        """A busy timer for ``worker`` (the caller holds ``_lock``); without one, every
        worker goes back to ticks."""
        try:
            timer = BusyTimer()
        except OSError as exc:
            log.warning("sentinel: no busy timer (%s); ticking every %g s instead",
                        exc, BUSY_TICK_S)
            self._timed = False
            return None
        self._timers[worker] = timer
        return timer

    def forget(self, worker: Watched) -> None:
        """``worker`` runs no more handlers: its busy timer goes."""
        with self._lock:
            timer = self._timers.pop(worker, None)
            if timer is None:
                return
            self._closing.append(timer)
        self.nudge()

    def leave(self, worker: Watched) -> None:
        """``worker``'s handler returned."""
        timer = self._timers.get(worker)
        if timer is not None:
            timer.clear()
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
        now = time.monotonic()  # (after _poll read the timers that went off)
        due: list[Watched] = []
        with self._lock:
            timed = self._timed
            if self._closing:
                for timer in self._closing:
                    timer.close()
                self._closing.clear()
            if timed:
                self._timer_fds = {timer.fd: timer for timer in self._timers.values()}
            elif self._timer_fds:
                self._timer_fds = {}
            for worker in self._returning:
                if self._active.pop(worker, 0) is None:
                    worker.lock.release()
            self._returning.clear()
            next_due = None
            for worker, started in self._pending.items():
                at = started + worker.busy_after_s
                if at <= now:
                    due.append(worker)
                elif timed:
                    continue  # its busy timer wakes us
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
        if timed:
            return None, 0, entries  # the busy timers and the pipe wake us
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
        timers = self._timer_fds
        items += [(fd, zmq.POLLIN) for fd in timers]
        for worker in self._active:
            items += worker.poll_items()
        events = zmq.zmq_poll(items, -1 if timeout_ms is None else timeout_ms)
        for fd, _ in events:
            if fd == self._rfd:
                try:
                    while os.read(self._rfd, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif type(fd) is int and (timer := timers.get(fd)) is not None:
                timer.read()  # before _turn reads the clock: one that goes off later wakes us


SENTINEL = Sentinel()
