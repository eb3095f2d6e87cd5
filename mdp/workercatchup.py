"""Catch-up after a stop: a worker whose loop comes back late reads what came before it acts.

A worker stopped (SIGSTOP) or starved of the CPU may be taken for silent by a broker, which
then gives the tasks it held to another worker and RECALLs them. libzmq's I/O thread, stopped
with it, hands the backlog over piece by piece when it wakes: a TASK may come before the
RECALL behind it. So a shell that comes back much later than the deadline it was last given
(``STOPPED_GAP_S``) first catches up for ``CATCH_UP_S``: it starts nothing and judges no
broker silent meanwhile (``docs/PROTOCOL.md`` section 2, RECALL).

:class:`CatchUp` holds the two instants that takes, and the rules on them;
:class:`~mdp.workercore.WorkerCore` owns one and sequences it with everything else. On its
per-task path (``begin``, ``lone_task``, ``task_done``, ``next_deadline``) the core reads
:attr:`CatchUp.late_after` and :attr:`CatchUp.until` itself, and sets ``late_after``
without a call: to the deadline it hands an idle shell (at most ``IDLE_WAKE_S`` away) or one
whose handler the sentinel watches, plus ``STOPPED_GAP_S``, and to math.inf when a handler
starts. So an ordinary task reads as many attributes for it as when this lived in the core,
and calls nothing. No sockets, no clock of its own, no logging (the core says what
happened, under its own logger).
"""

from __future__ import annotations

import math

# A shell that comes back this much later than the deadline it was last given (with no task
# in hand, or one past busy_after: the sentinel watches it) was stopped (SIGSTOP) or starved.
STOPPED_GAP_S = 0.25
CATCH_UP_S = 0.05  # then for this long it starts nothing and judges no broker silent
# An idle worker's shell comes back at least this often, so that a stop long enough for a
# broker to take it for silent (--frozen-after, 0.8 s) is always longer than the deadline it
# was given plus STOPPED_GAP_S (two wake-ups a second cost an idle worker ~0.01 % of a core).
IDLE_WAKE_S = 0.5


class CatchUp:
    """When the worker's shell is late, and until when the worker catches up."""

    __slots__ = ("late_after", "until")

    def __init__(self) -> None:
        # the deadline the shell was last given with no task in hand (or one the sentinel
        # watches), plus STOPPED_GAP_S: it waits no longer unless stopped (math.inf: a
        # handler runs, and may take as long as it takes)
        self.late_after = math.inf
        self.until = 0.0  # catching up before this: nothing starts, no broker is silent

    def woke(self, now: float) -> None:
        """The shell came back late (``now`` past ``late_after``): catch up for CATCH_UP_S."""
        self.late_after = math.inf
        self.until = now + CATCH_UP_S

    def catching_up(self, now: float) -> bool:
        """Whether the worker still reads what came during a stop: it starts nothing and
        judges no broker silent."""
        return now < self.until

    def late_in_task(self, started_at: float, busy_after_s: float, now: float) -> bool:
        """Whether the sentinel's turn at ``busy_after`` of a task started at ``started_at``
        came this late (it takes over then, unless the process was stopped)."""
        return now > started_at + busy_after_s + STOPPED_GAP_S
