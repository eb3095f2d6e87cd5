"""Where a broker's worker stands: what it holds, whether it may take more (idle, open or
neither), and whether it is alive. Functions over the records of :mod:`mdp.records`, with no
state of their own; no sockets, no clock (those that need the time take ``now``).

A task taken from a worker (:func:`take_back`) or asked back (:func:`recalls`) changes the
books of tasks held behind another; a change in what a worker holds or may take files it
again as idle, open or neither (:func:`place`). A message from a worker is a sign of life
(:func:`heard_from`), for the workers of its process too; a REPLY or BOUNCE also says that
what was sent to it before has arrived (:func:`answered`). The broker's timers ask which
workers that hold a task have been quiet long enough to be probed, or to be taken for
silent (:func:`quiet_holders`), and which have said nothing for too long
(:func:`expired_workers`).

These are apart from :mod:`mdp.dispatch` because none needs the queues or the requests'
books: the dispatcher gives tasks out and calls these as they come back, and the broker core
calls the liveness checks as messages and timers come.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from mdp.records import Process, Request, Service, Worker

SILENT_SLACK_S = 0.001  # a verdict of silence is due this long after the exact moment


def place(worker: Worker) -> None:
    """File the worker as idle, open or neither, from its state: the one place where
    a worker's standing with the dispatcher changes."""
    identity, service = worker.identity, worker.service
    service.idle.pop(identity, None)
    service.open.pop(identity, None)
    if worker.draining or worker.away or worker.silent:
        return
    if not worker.tasks:
        service.idle[identity] = worker
    elif len(worker.tasks) <= service.hold_depth(worker):
        service.open[identity] = worker


def take_back(busy: dict[bytes, Worker], worker: Worker, request: Request) -> None:
    """Remove a task from its worker (the request itself is not released). ``busy``: the
    workers that hold a task of ours (the dispatcher's), which it leaves with its last."""
    service = worker.service
    tasks = worker.tasks
    first = next(iter(tasks), None)
    del tasks[request.key]
    if request.key != first:
        service.held -= 1
        service.unrecalled.pop(request, None)
    elif tasks:  # the next task is now the one it runs: no longer held (a recalled
        service.held -= 1  # one keeps its flag: a BOUNCE of it was asked for)
        service.unrecalled.pop(next(iter(tasks.values())), None)
    else:
        busy.pop(worker.identity, None)
    request.key = b""


def gave_up(worker: Worker, key: bytes) -> bool:
    """Whether ``key`` is a task taken back from the worker (its reply or bounce of it
    is late, not wrong); forgets it."""
    return worker.given_up.pop(key, None) is not None


def recalls(service: Service) -> list[tuple[Worker, Request]]:
    """Tasks to take back: one for each idle worker, while nothing else is queued.

    A task held at a busy worker behind another task would wait while a worker is
    idle; it is asked back (RECALL) and, when the worker returns it, dispatched again.
    """
    unrecalled = service.unrecalled
    if not unrecalled or service.queue.length or not service.idle:
        return []
    found: list[tuple[Worker, Request]] = []
    for _ in range(min(len(service.idle), len(unrecalled))):  # the longest held first
        request = next(iter(unrecalled))
        found.append((unrecalled.pop(request), request))
        request.recalled = True
    return found


def heard_from(worker: Worker, expiry_s: float, now: float) -> bool:
    """A message from the worker, a sign of life; True if it had gone silent (it may
    be given tasks again). ``expiry_s``: how long it may now say nothing (the
    dispatcher's ``worker_expiry_s``)."""
    worker.expires_at = now + expiry_s
    if worker.process is not None:
        worker.process.heard_at = now
    if not worker.silent:
        return False
    worker.silent = False
    place(worker)
    return True


def join_process(processes: dict[tuple[str, int], Process], worker: Worker,
                 now: float) -> None:
    """File a new DIPS worker under the process its READY names (host, pid), if it does:
    several workers may share one, and one that speaks is a sign of life for all."""
    meta, dips = worker.meta, worker.dips
    host, pid = meta.get("host"), meta.get("pid")
    if dips and isinstance(host, str) and isinstance(pid, int):
        process = processes.get((host, pid))
        if process is None:
            process = processes[(host, pid)] = Process()
        process.workers += 1
        process.heard_at = now
        worker.process = process


def leave_process(processes: dict[tuple[str, int], Process], worker: Worker) -> None:
    """The worker is gone: its process is forgotten with its last worker."""
    process = worker.process
    if process is not None:
        process.workers -= 1
        if not process.workers:
            processes.pop((worker.meta["host"], worker.meta["pid"]), None)


def set_away(worker: Worker, away: bool) -> None:
    """BUSY (away=True) or FREE from a worker."""
    worker.away = away
    place(worker)


def set_draining(worker: Worker) -> None:
    worker.draining = True
    place(worker)


def answered(worker: Worker, key: bytes) -> None:
    """A REPLY or BOUNCE of task ``key`` came from the worker: the reply it announced
    (which comes next after the announcement) has arrived, and so has every task sent
    to it up to ``key`` (keys grow, and a connection keeps its order)."""
    worker.reply_until = 0.0
    if worker.tasks_until and key >= worker.big_key:
        worker.tasks_until = 0.0


def expired_workers(workers: Iterable[Worker], now: float) -> list[Worker]:
    """Workers silent too long. A DIPS worker that holds a task of ours (or did when it
    went silent) is exempt: its handler may hold the GIL for long, while libzmq's own
    thread keeps its connection alive; a dead or frozen one is found when a send to it
    fails (its connection dropped, by ZMTP heartbeats for a frozen one)."""
    return [w for w in workers
            if now >= w.expires_at and not (w.dips and (w.tasks or w.given_up))]


def quiet_holders(busy: Iterable[Worker], expiry_s: float, quiet_s: float, silent_s: float,
                  now: float) -> tuple[list[Worker], list[Worker], float]:
    """Workers that have held a task of ours, and said nothing, for ``quiet_s`` (to
    probe), and of those the DIPS workers quiet for ``silent_s`` (gone silent, see
    :meth:`mdp.dispatch.Dispatcher.take_back_from_silent`). Workers that answer their tasks
    quickly are neither. Also when the first of the quiet ones would be silent if it stays
    so (a probe then gives the verdict on time; ``math.inf``: none). ``busy``: the workers
    that hold a task of ours; ``expiry_s``: the dispatcher's ``worker_expiry_s``."""
    quiet_if = now - quiet_s + expiry_s  # expires_at at most this: quiet for quiet_s
    silent_if = now - silent_s + expiry_s
    quiet: list[Worker] = []
    silent: list[Worker] = []
    due = math.inf
    for worker in busy:
        if worker.expires_at > quiet_if:
            continue
        # a probe waits behind the task bytes sent before it, and its answer behind the
        # big reply the worker announced: a worker is quiet only once they may have
        # arrived (a big upload or result on a slow link is not a freeze)
        given_at = max(next(iter(worker.tasks.values())).dispatched_at,
                       worker.tasks_until, worker.reply_until)
        if given_at > now - quiet_s:
            continue  # given a task just now
        if worker.expires_at <= silent_if and worker.dips and not worker.silent \
                and given_at <= now - silent_s and (
                    worker.process is None or worker.process.heard_at <= now - silent_s):
            silent.append(worker)  # (a worker in a process that speaks is not frozen)
        else:
            quiet.append(worker)
            if worker.dips and not worker.silent:
                process = worker.process
                at = max(worker.expires_at - expiry_s, given_at,
                         process.heard_at if process is not None else 0.0) + silent_s
                if at < due:
                    due = at
    return quiet, silent, due + SILENT_SLACK_S


def most_are_quiet(quiet: int, attached: int) -> bool:
    """Whether ``quiet`` workers of a service of ``attached`` are more than half of it (at
    least two): a freeze or a crash strikes one process, so a service gone quiet together
    is overloaded or stalled (or this broker was), and no request is to blame."""
    return quiet > max(1, attached // 2)


def quiet_workers(workers: Iterable[Worker], expiry_s: float, quiet_s: float,
                  now: float) -> int:
    """How many of ``workers`` have said nothing for ``quiet_s`` (``expiry_s``: the
    dispatcher's ``worker_expiry_s``, from which ``expires_at`` was set)."""
    heard_by = now - quiet_s + expiry_s
    return sum(1 for w in workers if w.expires_at <= heard_by)
