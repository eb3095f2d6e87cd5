"""A client's CANCEL, on the dispatcher's books (``docs/PROTOCOL.md`` section 3, "Failing
over"): the requests a client gave up on one connection, because it sent them to another
broker, are run by none of this broker's workers that do not have them yet.

:func:`cancel_requests` drops those still queued (or waiting to go out again after a lost
worker), detaches the client from a shared request that others still wait for, and marks
done those already in a worker's hands: a DIPS worker is asked to hand such a task back
(RECALL; the broker drops it when it comes back), any worker's reply to it is dropped, and
its loss costs nothing. It goes through the dispatcher's own operations
(:meth:`~mdp.dispatch.Dispatcher.release`, :meth:`~mdp.dispatch.Dispatcher.forget_caller`,
:meth:`~mdp.dispatch.Dispatcher.unqueued`) like :mod:`mdp.sweeps`. :class:`CancelsAhead`
keeps the CANCELs the broker's shell has read but not yet handed in (it reads what waits in
its socket before it handles any), so that the requests in front of them are dropped as
they are handed in. No sockets, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mdp import protocol as p
from mdp.dispatch import Dispatcher
from mdp.errors import ProtocolError
from mdp.records import Request, Worker


@dataclass
class Cancelled:
    """What a CANCEL did: requests dropped from their queues, callers detached from shared
    requests that still run for others, and tasks in workers' hands to recall."""

    queued: int = 0
    detached: int = 0
    recall: list[tuple[Worker, Request]] = field(default_factory=list)
    in_hand: int = 0  # tasks marked done at a worker (recalled where it can hand them back)


class CancelsAhead:
    """CANCELs the broker's shell has read but not yet handed in (it reads what waits in
    its socket before it handles any of it): by client, the ids each gave up, whose
    requests, read before their CANCEL, are dropped as they are handed in."""

    def __init__(self) -> None:
        self._ids: dict[bytes, set[int]] = {}

    def __bool__(self) -> bool:
        return bool(self._ids)

    def note(self, frames: list[bytes]) -> None:
        """A message read ahead (``frames[0]``: the peer's identity): noted if it is a
        well-formed CANCEL; anything else is left to the broker core's ``receive`` (the
        check costs a few comparisons)."""
        if (len(frames) == 5 and frames[3] == p.CANCEL and frames[2] == p.DIPS_CLIENT
                and not frames[1]):
            try:
                message = p.parse_broker_inbound(frames[1:])
            except ProtocolError:
                return  # (receive says what was wrong)
            if isinstance(message, p.ClientCancel) and message.rids:
                self._ids.setdefault(frames[0], set()).update(message.rids)

    def names(self, client: bytes, rid: int) -> bool:
        """Whether a CANCEL read ahead names this request of ``client``."""
        rids = self._ids.get(client)
        return rids is not None and rid in rids

    def handed_in(self, client: bytes, rids: list[int]) -> None:
        """The CANCEL itself is handed in: in order now, it is no longer ahead."""
        ahead = self._ids.get(client)
        if ahead is not None:
            ahead.difference_update(rids)
            if not ahead:
                del self._ids[client]


def cancel_requests(dispatcher: Dispatcher, client: bytes, rids: list[int]) -> Cancelled:
    """Give up the requests ``rids`` that ``client`` sent on this connection; ids the
    broker does not hold are ignored. O(ids) when it holds none of them, else one scan of
    the queue and the workers of each service concerned."""
    held = dispatcher.held
    gone = {rid for rid in rids if (client, rid) in held}
    done = Cancelled()
    if not gone:
        return done
    names = {held[(client, rid)].service for rid in gone}

    def cancelled(request: Request) -> bool:
        """Whether nobody is left to answer (dropping the client's callers of a shared
        request on the way)."""
        callers = request.callers
        if callers is None:
            return request.client == client and request.rid in gone
        keep = [c for c in callers if not (c.client == client and c.rid in gone)]
        if len(keep) < len(callers):
            for caller in callers:
                if caller.client == client and caller.rid in gone:
                    dispatcher.forget_caller(caller)
            done.detached += len(callers) - len(keep)
            request.callers = keep
        return not keep

    for name in names:
        service = dispatcher.services.get(name)
        if service is None:
            continue
        dropped = service.queue.remove_if(cancelled)
        dispatcher.unqueued(dropped)
        for request in dropped:
            dispatcher.release(request)
        done.queued += len(dropped)
        for worker in service.workers.values():
            for request in (*worker.tasks.values(), *worker.given_up.values()):
                if not request.done and cancelled(request):
                    dispatcher.release(request)  # its reply or bounce is dropped
                    done.in_hand += 1
                    if worker.dips and request.key in worker.tasks:
                        service.unrecalled.pop(request, None)
                        request.recalled = True  # (a bounce of it says nothing of the worker)
                        done.recall.append((worker, request))
    for _, _, request in dispatcher.retries:  # waiting to go out again: due_retries skips
        if not request.done and request.service in names and cancelled(request):
            dispatcher.release(request)
            done.queued += 1
    return done
