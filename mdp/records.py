"""The broker's records: a request as it holds it, a worker attached to it, a service.

Plain mutable records, filed and changed by :class:`mdp.dispatch.Dispatcher` (and by the
functions of :mod:`mdp.standing` and :mod:`mdp.sweeps` it and the core call); no sockets,
no clock.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from mdp.queues import ServiceQueue
from mdp.tally import ServiceTally


class WorkerState(enum.Enum):
    IDLE = "idle"  # may be given a request
    BUSY = "busy"  # holds one or more of this broker's requests
    AWAY = "away"  # busy with another broker's request (it told us so)
    DRAINING = "draining"  # leaving; takes no new request
    SILENT = "silent"  # held a task and answered no probe: its tasks went to others


HOLD_BUDGET_S = 0.005  # a worker holds at most about this much work behind its current task
WORK_EWMA = 0.2  # weight of each new sample in a service's moving average of work time


@dataclass(eq=False, slots=True)
class Request:
    """A client request as the broker holds it."""

    client: bytes
    service: bytes
    body: list[bytes]
    received_at: float
    rid: int | None = None  # set for DIPS clients
    deadline: float | None = None  # monotonic; set for DIPS clients
    priority: int = 0
    key: bytes = b""  # set while a worker holds it
    dispatched_at: float = 0.0
    recalled: bool = False
    user: str = ""  # the client's CURVE key (z85) when CURVE is on
    ck: bytes | None = None  # coalescing key: identical requests are worked once
    losses: int = 0  # workers lost while running it
    sent_mark: int = 0  # when its task was given to the shell (BrokerCore's count)
    hedged: bool = False  # taken back once from a worker gone silent while running it
    done: bool = False  # answered or given up; a copy left in a queue or at a worker is void
    # a shared request's callers (each with its own client, id and deadline; the first is
    # the one that came first); None while it has only its own caller
    callers: list[Request] | None = None
    # bytes of its body, set when it enters a queue (the dispatcher's ``queued_bytes``);
    # unset until then, so that a request given out at once costs no store
    size: int = field(init=False, repr=False)
    # set only on a request whose count began with the losses its client said it cost at
    # another broker (``ClientRequest.losses``): that count. Such a request shares only
    # with requests claiming as many (mdp.dispatch.shared_key), and given up, it is
    # remembered by its callers' ids only, never by its body (mdp.poison), so that a
    # client's word hurts no other request; unset on every other request (no store per
    # request: read it with ``getattr(request, "claimed", 0)``)
    claimed: int = field(init=False, repr=False)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def answered_to(self) -> list[Request] | tuple[Request]:
        """Who gets this request's reply: its callers, or the request itself."""
        return self.callers if self.callers is not None else (self,)

    def ttl_ms(self, now: float) -> int | None:
        if self.deadline is None:
            return None
        return max(0, int((self.deadline - now) * 1000))


@dataclass(eq=False, slots=True)
class Process:
    """A worker process as its READY names it (host, pid): several workers may share one
    (a process that hosts workers as threads)."""

    workers: int = 0  # attached workers that live in it
    heard_at: float = 0.0  # when one of them last said anything


@dataclass(eq=False, slots=True)
class Worker:
    """A worker attached to this broker."""

    identity: bytes
    service: Service
    dips: bool  # speaks the DIPS extensions
    meta: dict[str, Any]
    registered_at: float
    expires_at: float
    prefetch: int = 0  # tasks it may hold beyond the one it runs
    last_done_at: float = 0.0  # when it last answered one of our tasks
    tasked_at: float = 0.0  # when we last sent it a task
    # a probe waits behind the big tasks sent to it, and its answer behind the big reply it
    # announced: neither is due before they may have arrived (protocol.sent_until). The
    # tasks' time ends early when it answers (or bounces) the last big one, ``big_key``, or
    # any later one: it has them all; the reply's, when the reply (next after it) comes.
    tasks_until: float = 0.0
    big_key: bytes = b""
    reply_until: float = 0.0
    batch: bool = False  # takes TASKS (several tasks in one message)
    announce: bool = False  # takes a HEARTBEAT announcing a big task
    tasks: dict[bytes, Request] = field(default_factory=dict)  # oldest first
    away: bool = False
    draining: bool = False
    served: int = 0
    failures: int = 0
    user: str = ""  # the worker's CURVE key (z85) when CURVE is on
    process: Process | None = None  # the process it lives in, if its READY says
    silent: bool = False  # went silent holding tasks; gets none until it speaks again
    # tasks taken back from it when it went silent, by key: a late reply still counts
    given_up: dict[bytes, Request] = field(default_factory=dict)
    checks: bool = False  # takes ASK: CHECKs before it starts a suspect task (its READY says)
    # the suspect tasks it was given with ASK, by key: True once its CHECK came (started);
    # a lost worker costs such a task a loss only then (mdp.protocol.checks)
    asked: dict[bytes, bool] = field(default_factory=dict)

    @property
    def running(self) -> Request | None:
        """The task it runs (the first of ours it holds; for a worker gone silent, the
        first taken back from it), if any and not yet answered."""
        for request in (*self.tasks.values(), *self.given_up.values())[:1]:
            if not request.done:
                return request
        return None

    @property
    def state(self) -> WorkerState:
        if self.draining:
            return WorkerState.DRAINING
        if self.silent:
            return WorkerState.SILENT
        if self.tasks:
            return WorkerState.BUSY
        return WorkerState.AWAY if self.away else WorkerState.IDLE


@dataclass(eq=False, slots=True)
class Service:
    """Requests queued for one service and the workers that offer it."""

    name: bytes
    empty_since: float  # when it last had no worker (or was first asked for)
    queue: ServiceQueue[Request] = field(default_factory=ServiceQueue)
    idle: OrderedDict[bytes, Worker] = field(default_factory=OrderedDict)  # LRU first
    open: OrderedDict[bytes, Worker] = field(default_factory=OrderedDict)  # may prefetch
    workers: dict[bytes, Worker] = field(default_factory=dict)
    held: int = 0  # tasks waiting at a worker behind another of its tasks
    # of those, the ones not asked back (no RECALL sent), longest held first, with their
    # workers: recalls take from the front, O(1) however many workers hold tasks
    unrecalled: dict[Request, Worker] = field(default_factory=dict)
    work_s: float = 0.0  # moving average of a task's time at a worker; 0: none seen yet
    hold_cap: int = 1  # tasks a worker may hold for HOLD_BUDGET_S of work (from work_s)
    counters: ServiceTally = field(default_factory=ServiceTally)

    def hold_depth(self, worker: Worker) -> int:
        """How many tasks ``worker`` may hold beyond the one it runs: its ``prefetch``, but
        no more than about HOLD_BUDGET_S of this service's work, and 1 until a task has
        been timed (a held task waits behind the ones before it at that worker)."""
        prefetch = worker.prefetch
        return prefetch if prefetch < self.hold_cap else self.hold_cap

    def timed(self, sample_s: float) -> None:
        """One more task's time at a worker: the moving average, and the hold cap."""
        work_s = self.work_s
        self.work_s = work_s = sample_s if work_s <= 0.0 else (
            work_s + WORK_EWMA * (sample_s - work_s))
        self.hold_cap = max(1, int(HOLD_BUDGET_S / work_s)) if work_s > 0.0 else 1
