"""A worker's timers per broker link: reconnect, heartbeat, and the verdict that a broker is silent.

Each link (:class:`~mdp.workerstate.Link`) has one deadline at a time: when a closed one is
tried again, when an open one owes its broker a heartbeat of ours, or when its broker has
been silent too long (``docs/PROTOCOL.md`` section 2, Liveness). :class:`LinkTimers` says
when that is for a link, and keeps every link's deadline in a heap, so that the earliest
costs O(log links) per task, not a look at every link: a task costs the same at 128 links
(a Gearman worker of 64 functions) as at 2. :class:`~mdp.workercore.WorkerCore` owns one,
tells it when a link's deadline may have come earlier (its mode, retry or announced task
changed), asks it for the earliest and for the links due, and acts on them. No sockets, no
clock of its own.
"""

from __future__ import annotations

import heapq
import math

from mdp.workerstate import Link, LinkMode, Timing

STANDARD_EXPIRY_S = 7.5  # 7/MDP's reference heartbeat (2.5 s) x liveness (3)


class LinkTimers:
    """Every link's next deadline, and the rules that set it."""

    __slots__ = ("links", "timing", "heap", "entry_of", "retrying")

    def __init__(self, links: list[Link], timing: Timing) -> None:
        self.links = links
        self.timing = timing
        # each link's deadline, as (at, link) entries: its live entry is the one whose ``at``
        # is entry_of[link]; others are superseded and go when they reach the top
        self.heap: list[tuple[float, int]] = []
        self.entry_of: list[float] = [math.inf] * len(links)
        self.retrying = True  # closed links are tried again (the worker serves)
        for i in range(len(links)):
            self.schedule(i, 0.0)  # (closed, retry at 0: a link the shell never opens is retried)

    def heartbeat_due(self, link: Link) -> float:
        """When a link next needs a heartbeat of our own: a DIPS broker heartbeats all its
        workers at once and we answer, so our own timer is only the fallback there."""
        interval = self.timing.heartbeat_interval_s
        return link.sent_at + (interval * 1.5 if link.mode is LinkMode.DIPS else interval)

    def expiry_s(self, link: Link) -> float:
        """How long a broker may be silent. A standard broker heartbeats on its own clock
        (the reference brokers every 2.5-5 s), so it gets at least 7/MDP's 2.5 s x 3."""
        expiry = self.timing.expiry_s
        return expiry if link.mode is LinkMode.DIPS else max(expiry, STANDARD_EXPIRY_S)

    def deadline(self, link: Link, until: float) -> float:
        """When ``link`` next needs its timer: a reconnect, a heartbeat of ours, or the
        verdict that its broker is silent, never before ``until`` (the worker catches up
        after a stop: :mod:`mdp.workercatchup`); math.inf: none."""
        mode = link.mode
        if mode is LinkMode.CLOSED:
            return link.retry_at if self.retrying else math.inf
        due = self.heartbeat_due(link)
        silent = (max(link.heard_at, link.task_until) if mode is LinkMode.DIPS
                  else link.heard_at) + self.expiry_s(link)
        if silent < until:
            silent = until  # (no verdict before what came is read)
        return due if due < silent else silent

    def schedule(self, i: int, until: float) -> None:
        """Link ``i``'s deadline may have come earlier (its mode, retry or announced task
        changed): give it an entry in the heap. Sends and answers only move a deadline
        later; its entry is then moved when it reaches the top (:meth:`earliest`), so a task
        costs O(log links) there, not a look at every link."""
        at = self.deadline(self.links[i], until)
        if at < self.entry_of[i]:
            self.entry_of[i] = at
            heapq.heappush(self.heap, (at, i))

    def earliest(self, until: float) -> float:
        """The earliest deadline of any link (math.inf: none): the heap's top, once it is
        true (an entry superseded by an earlier one goes; one whose link's deadline has
        moved is moved)."""
        heap, entry_of, links = self.heap, self.entry_of, self.links
        while heap:
            at, i = heap[0]
            if at != entry_of[i]:
                heapq.heappop(heap)
                continue
            true = self.deadline(links[i], until)
            if true == at:
                return at
            entry_of[i] = true
            if true == math.inf:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (true, i))
        return math.inf

    def due(self, now: float) -> list[int]:
        """The links whose entry is due by ``now``, in link order (their entries taken out:
        the core acts on each and schedules it again)."""
        heap, entry_of = self.heap, self.entry_of
        due = []
        while heap and heap[0][0] <= now:
            at, i = heapq.heappop(heap)
            if at == entry_of[i]:
                entry_of[i] = math.inf
                due.append(i)
        due.sort()
        return due
