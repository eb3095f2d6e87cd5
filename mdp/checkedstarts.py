"""Checked starts, the worker's side (``docs/PROTOCOL.md`` section 6; :mod:`mdp.protocol.checks`).

A broker sends ASK just before the task of a *suspect* request (one that has already cost a
worker). A worker starts such a task only after it has sent CHECK and read GO; once it has
answered it (its REPLY goes at once, never gathered) it CHECKs again and starts nothing
before that GO either, so that its broker charges the request a loss only on proof. Nothing
starts while a CHECK waits for its GO; after ``CHECK_WAIT_S`` without one (a frozen broker)
a task not yet started goes back unrun, and after an answered one the worker goes on.

:class:`CheckedStarts` keeps what that takes (the tasks ASKed about, the CHECK waiting for
its GO, the task whose GO came) and answers the core's questions about it;
:class:`~mdp.workercore.WorkerCore` owns one, sends the CHECKs and BOUNCEs, and sequences it
with everything else. On its per-task path the core reads only :attr:`CheckedStarts.active`
(False unless a suspect task is about), so an ordinary task costs what it did before checked
starts. No sockets, no clock of its own, no logging (the core says what happened).
"""

from __future__ import annotations

import math
from typing import NamedTuple

CHECK_WAIT_S = 0.25  # a GO later than this: the broker is frozen; go on without it
MAX_ASKS = 64  # ASKed tasks remembered (a task handed back unrun leaves its entry)


class Check(NamedTuple):
    """A CHECK sent for task ``key`` of link ``link`` at ``since``, whose GO is awaited."""

    link: int
    key: bytes
    since: float


class CheckedStarts:
    """The ASKs a worker has read, and the CHECK it waits on: what may start, and when."""

    __slots__ = ("asks", "checking", "cleared", "active")

    def __init__(self) -> None:
        # the tasks a broker ASKed us to CHECK before we start them, by (link, key), oldest
        # first; the CHECK whose GO we wait for (nothing starts meanwhile); the ASKed task
        # whose GO came: the next ``begin`` starts it, unless a RECALL read with the GO (a
        # worker frozen while it waited, taken for silent) took it back
        self.asks: dict[tuple[int, bytes], None] = {}
        self.checking: Check | None = None
        self.cleared: tuple[int, bytes] | None = None
        self.active = False  # any of those three is there (kept by _changed)

    def _changed(self) -> None:
        """The one place ``active`` is set: after every change of the other three."""
        self.active = bool(self.asks) or self.checking is not None or self.cleared is not None

    # --- questions ----------------------------------------------------------------------

    def asked(self, i: int, key: bytes) -> bool:
        """Whether task ``key`` of link ``i`` was ASKed about (and not yet answered)."""
        return (i, key) in self.asks

    def holds_back(self, i: int, key: bytes) -> bool:
        """Whether task ``key`` of link ``i``, come alone to an idle worker, may not start
        at once: a CHECK waits for its GO, or this task was ASKed about."""
        return self.checking is not None or (i, key) in self.asks

    def must_check(self, i: int, key: bytes, deadline: float | None, now: float) -> bool:
        """Whether task ``key`` of link ``i``, next in line, waits for a CHECK's GO before it
        starts: ASKed about, its GO not yet come, and its client still waiting (an expired
        one is answered ``expired`` unworked without a CHECK)."""
        return (i, key) in self.asks and (i, key) != self.cleared and not (
            deadline is not None and now >= deadline)

    def go_by(self) -> float:
        """When the CHECK waiting for its GO is given up (math.inf: none waits)."""
        checking = self.checking
        return checking.since + CHECK_WAIT_S if checking is not None else math.inf

    # --- changes ------------------------------------------------------------------------

    def ask(self, i: int, key: bytes) -> None:
        """Broker ``i`` (DIPS: an ASK before the WELCOME is ignored) ASKs about task
        ``key``; the oldest ASK is forgotten past MAX_ASKS."""
        asks = self.asks
        if len(asks) >= MAX_ASKS:
            del asks[next(iter(asks))]
        asks[(i, key)] = None
        self._changed()

    def checked(self, i: int, key: bytes, now: float) -> None:
        """CHECK ``key`` was sent to broker ``i`` at ``now``: nothing starts before its GO
        (or CHECK_WAIT_S)."""
        self.checking = Check(i, key, now)
        self._changed()

    def go(self, i: int, key: bytes) -> None:
        """GO ``key`` from broker ``i``: the task CHECKed before its start may start (at the
        next ``begin``, first in line: nothing has run since its CHECK); after an answered
        one's CHECK, the next task may. A GO late (given up on) or never asked for does
        nothing."""
        checking = self.checking
        if checking is None or checking.link != i or checking.key != key:
            return
        self.checking = None
        if (i, key) in self.asks:  # (else the CHECK after its reply)
            self.cleared = (i, key)
        self._changed()

    def started(self) -> None:
        """A task started: the GO that cleared one is spent."""
        self.cleared = None
        self._changed()

    def answered(self, i: int, key: bytes) -> bool:
        """Task ``key`` of link ``i`` was answered: True if it was ASKed about (then it is
        forgotten, and the core CHECKs it again so that nothing else starts before its
        broker has read the reply)."""
        if (i, key) not in self.asks:
            return False
        del self.asks[(i, key)]
        self._changed()
        return True

    def overdue(self, now: float) -> Check | None:
        """The CHECK given up on at ``now`` (no GO within CHECK_WAIT_S: the broker is
        frozen or overloaded), no longer awaited; None if none is. If its task was ASKed
        about and not started, the core hands it back unrun (or :meth:`drop` s the ASK when
        it no longer holds the task); after an answered one the worker goes on."""
        checking = self.checking
        if checking is None or now < checking.since + CHECK_WAIT_S:
            return None
        self.checking = None
        self._changed()
        return checking

    def drop(self, i: int, key: bytes) -> None:
        """Forget the ASK about task ``key`` of link ``i`` (which must be there)."""
        del self.asks[(i, key)]
        self._changed()

    def forget(self, i: int, key: bytes) -> None:
        """Task ``key`` of link ``i`` left the worker unrun (handed back, or answered
        ``expired``): its ASK, and a CHECK or GO of it, are void."""
        if self.asks:
            self.asks.pop((i, key), None)
            checking = self.checking
            if checking is not None and checking.link == i and checking.key == key:
                self.checking = None
            if self.cleared == (i, key):
                self.cleared = None
            self._changed()

    def forget_link(self, i: int) -> None:
        """Link ``i`` closed (its broker requeues what it gave us): everything of it goes."""
        if self.checking is not None and self.checking.link == i:
            self.checking = None
        if self.cleared is not None and self.cleared[0] == i:
            self.cleared = None
        if self.asks:
            self.asks = {ask: None for ask in self.asks if ask[0] != i}
        self._changed()

    def clear(self) -> None:
        """The worker drains: what waited for its GO goes back with everything else."""
        self.checking = self.cleared = None
        self.asks.clear()
        self._changed()
