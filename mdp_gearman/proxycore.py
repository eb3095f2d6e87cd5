"""The DIPS worker a Gearman worker becomes: :class:`mdp.workercore.WorkerCore`, per function.

A Gearman worker connected to the door does one job at a time for any of its functions. At
every broker the door registers it once per function, so :class:`ProxyCore` has one link per
(function, broker) pair, each announcing its own function in READY, and keeps every other
rule of the worker core: one task at a time over all links, BUSY to the other links once a
task runs past ``busy_after`` (so no broker sends it a second task as to an idle worker,
whatever the function), BOUNCE, RECALL, prefetch, heartbeats and reconnects.

Two things a Python worker never needs:

* :meth:`ProxyCore.busy_elsewhere`: the Gearman worker is busy where the core cannot see
  it (a job from another door; a job given up on that it still runs): every link says BUSY
  and the tasks waiting here go back to their brokers. The next :meth:`begin` that finds
  nothing to run says FREE again.

* :meth:`ProxyCore.on_refused`: a broker that refuses a link's READY (``--max-services``,
  ``--max-workers``) is recorded in silence; the door logs it, and tells the Gearman
  worker when every broker refused every function it offers.

WORK_STATUS, WORK_DATA and WORK_WARNING become PROGRESS through the core's own
``progress``.

The core's own time limit is not used: the door gives up on a Gearman job itself (the
function's CAN_DO_TIMEOUT or ``--worker-time-limit``) and keeps the connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from mdp import protocol as p
from mdp.workercore import WorkerCore, ready_meta
from mdp.workerstate import LinkMode, Task, Timing

NO_TIME_LIMIT_S = 10.0 * 365 * 24 * 3600  # the door enforces job limits itself


class ProxyCore(WorkerCore):
    """A WorkerCore whose links are (function, broker) pairs; see the module docstring."""

    def __init__(self, functions: Sequence[str], brokers: Sequence[str], meta: dict[str, Any],
                 timing: Timing, prefetch: int) -> None:
        self.functions = tuple(functions)
        self.link_functions = [f for f in self.functions for _ in brokers]
        super().__init__([b for _ in self.functions for b in brokers], b"", meta, timing,
                         0, prefetch)
        ready = ready_meta(meta, prefetch)
        self._readies = [p.ready(f.encode(), ready) for f in self.link_functions]

    def connected(self, i: int, now: float) -> None:
        self._ready = self._readies[i]  # the READY this link sends: its own function
        super().connected(i, now)

    def busy_elsewhere(self, now: float) -> None:
        """The Gearman worker is busy out of this core's sight: BUSY everywhere, and the
        tasks waiting here back to their brokers."""
        for i, link in enumerate(self.links):
            if link.mode is LinkMode.DIPS and not link.told_busy:
                self._send(i, p.busy(), now)
                self._set_told_busy(i, link, True)
        kept: deque[Task] = deque()
        for task in self.waiting:
            if task.dips:
                self._send(task.link, p.bounce(task.key), now)
            else:
                kept.append(task)  # a standard broker cannot take it back: it waits
        self.waiting = kept

    def on_refused(self, i: int, reason: str, now: float) -> None:
        """A broker refused a link's READY: kept for the door, which logs it naming the
        worker (the core's own line could not), and tells the Gearman worker when every
        broker refused every function it offers."""
        self.refused[i] = reason

    def function_of(self, task: Task) -> str:
        return self.link_functions[task.link]
