"""The dispatcher's sweeps: scans over its queues (or its shared requests) that drop the
requests (or callers) whose time is up, whose service no worker came to offer, or whose
client's key was revoked.

They are apart from :mod:`mdp.dispatch`, which keeps the books message by message, because
each is O(queued) and none runs per message: the broker core runs them from its timers (the
heartbeat, the unknown-service grace) and when the allow-lists change. They take the
:class:`~mdp.dispatch.Dispatcher` and go through its own operations
(:meth:`~mdp.dispatch.Dispatcher.release`, :meth:`~mdp.dispatch.Dispatcher.forget_caller`)
and counts. No sockets, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from mdp.dispatch import Dispatcher
from mdp.records import Request


def detach_expired(dispatcher: Dispatcher, now: float) -> list[Request]:
    """Callers of shared requests whose own deadline has passed: no longer answered
    with the reply (the caller is to be told ``expired``); the task goes on for the
    others."""
    gone: list[Request] = []
    for request in dispatcher.shared.values():
        callers = request.callers
        if callers is None or not any(c.expired(now) for c in callers):
            continue
        keep = []
        for caller in callers:
            if caller.expired(now):
                gone.append(caller)
                dispatcher.forget_caller(caller)
            else:
                keep.append(caller)
        request.callers = keep
    return gone


def drop_expired(dispatcher: Dispatcher, now: float) -> int:
    """Drop queued requests whose deadline passed.

    A scan is O(queued), so it runs only once the earliest deadline seen has come.
    """
    if now < dispatcher.next_expiry:
        return 0
    dropped = 0
    next_expiry = math.inf
    for service in dispatcher.services.values():
        gone = service.queue.remove_if(lambda r: r.expired(now))
        dispatcher.unqueued(gone)
        for request in gone:
            dispatcher.release(request)
        service.counters.expired += len(gone)
        dropped += len(gone)
        for request in service.queue:
            if request.deadline is not None and request.deadline < next_expiry:
                next_expiry = request.deadline
    dispatcher.next_expiry = next_expiry
    dispatcher.counters.expired += dropped
    return dropped


def drop_requests_of(dispatcher: Dispatcher, drop: Callable[[Request], bool]) -> int:
    """Drop every queued request for which ``drop`` is true (revoked clients); a shared
    one loses those callers, and is dropped when none is left."""

    def revoked(request: Request) -> bool:
        if request.callers is None:
            return drop(request)
        keep = []
        for caller in request.callers:
            if drop(caller):
                dispatcher.forget_caller(caller)
            else:
                keep.append(caller)
        request.callers = keep
        return not keep

    dropped = 0
    for service in dispatcher.services.values():
        gone = service.queue.remove_if(revoked)
        dispatcher.unqueued(gone)
        for request in gone:
            dispatcher.release(request)
        dropped += len(gone)
    return dropped


def unknown_requests(dispatcher: Dispatcher, now: float) -> list[Request]:
    """Requests for services that have had no worker for the grace period.

    Forgets services that have neither workers nor requests.
    """
    unknown: list[Request] = []
    grace = dispatcher.unknown_grace_s
    for name in list(dispatcher.orphans):
        service = dispatcher.services.get(name)
        if service is None or service.workers:
            dispatcher.orphans.discard(name)
            continue
        queue = service.queue
        cutoff = now - grace  # requests that arrived (or lost their workers) before it
        if service.empty_since <= cutoff and any(
                r.received_at <= cutoff for r in queue.head_arrivals()):
            gone = queue.remove_if(partial(_arrived_by, cutoff))
            dispatcher.unqueued(gone)
            for request in gone:
                dispatcher.release(request)
            unknown.extend(gone)
        if not queue:
            dispatcher.orphans.discard(name)
            del dispatcher.services[name]
    return unknown


def drop_all(dispatcher: Dispatcher) -> int:
    """The broker is stopping: drop every request it holds unworked (queued, or waiting to
    go out again after its worker was lost), so that nothing of them stays held by an
    object that outlives the loop. Their clients find the broker gone and send them
    elsewhere. How many were dropped."""
    dropped = drop_requests_of(dispatcher, _any)
    for _, _, request in dispatcher.retries:
        if not request.done:
            dispatcher.release(request)
            dropped += 1
    dispatcher.retries.clear()
    return dropped


def _any(request: Request) -> bool:
    return True


def _arrived_by(cutoff: float, request: Request) -> bool:
    return request.received_at <= cutoff
