"""What a broker sends, in wire order (``docs/PROTOCOL.md``, "Batches").

:class:`Outbox` holds the :class:`~mdp.actions.Send` actions a broker core has decided,
for its shell to carry out in order. Tasks for a worker that takes TASKS, and replies for
a client that takes batched RESULTs, may be *gathered* while the shell reads messages that
arrived together; they go out as one message per worker (per client and service) when the
shell's pass is over (:meth:`Outbox.flush`), and before anything else sent to the same
peer meanwhile: a PONG never overtakes a reply it no longer lists, a RECALL never overtakes
the task it asks back. A batch goes as soon as it holds BIG_BODY bytes, and a big body is
never gathered: no unannounced message is big enough to hold back a peer's heartbeat for
long (a big one is announced just before it, see docs/PROTOCOL.md). No sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping

from mdp import protocol as p
from mdp.actions import Send
from mdp.records import Request, Worker


class Outbox:
    """The broker's output, gathered where it may be and in order where it must be."""

    def __init__(self, workers: Mapping[bytes, Worker]) -> None:
        """``workers``: the attached workers (tasks for one that left are not sent)."""
        self.actions: list[Send] = []
        self.taken = 0  # how many times the shell took the actions
        self._workers = workers
        # tasks for workers that take TASKS: identity -> (worker, [(task, hold)])
        self._tasks: dict[bytes, tuple[Worker, list[tuple[Request, bool]]]] = {}
        # replies for clients that take batched RESULTs: client -> service -> (ids, bodies)
        self._results: dict[bytes, dict[bytes, tuple[list[int], list[bytes]]]] = {}
        self.sizes: dict[bytes, int] = {}  # bytes gathered for each peer (empty: none)

    def take(self) -> list[Send]:
        """The actions decided since the last call, in order."""
        actions, self.actions = self.actions, []
        self.taken += 1
        return actions

    def delivered(self, request: Request) -> bool:
        """Whether the task of ``request`` went out in a batch the shell has carried out
        before the one it is carrying out now (so a failed send now was not its own)."""
        return request.sent_mark < self.taken - 1

    def send(self, frames: list[bytes], now: float) -> None:
        """Send to a peer, after whatever was gathered for it."""
        peer = frames[0]
        if self.sizes and peer in self.sizes:
            self._emit_gathered(peer, now)
        self.actions.append(Send(0, frames))

    def _emit_gathered(self, peer: bytes, now: float) -> None:
        del self.sizes[peer]
        if peer in self._tasks:
            worker, tasks = self._tasks.pop(peer)
            self._emit_tasks(worker, tasks, now)
        if peer in self._results:
            self._emit_results(peer, self._results.pop(peer))

    def _gathered(self, peer: bytes, size: int, now: float) -> None:
        """``size`` more bytes gathered for ``peer``: its batch goes once it is big."""
        total = self.sizes.get(peer, 0) + size
        self.sizes[peer] = total
        if total >= p.BIG_BODY:
            self._emit_gathered(peer, now)

    def task(self, worker: Worker, request: Request, hold: bool, now: float,
             gather: bool) -> None:
        """A task for ``worker``; gathered into a TASKS where it takes them (and ``gather``:
        other messages are being read with the one that caused it)."""
        body = request.body
        size = len(body[-1]) if body else 0
        if size >= p.BIG_BODY:
            if worker.announce:  # sent alone, announced: the heartbeats to it wait behind it
                self.send(p.sending_to_worker(worker.identity, size), now)
        elif gather and worker.batch and len(body) == 1:
            identity = worker.identity
            pending = self._tasks.get(identity)
            if pending is None:
                self._tasks[identity] = (worker, [(request, hold)])
            else:
                pending[1].append((request, hold))
            self._gathered(identity, size, now)
            return
        request.sent_mark = self.taken
        worker.tasked_at = now
        self.send(p.to_worker(worker.identity, request.key, request.body, worker.dips,
                              request.ttl_ms(now), hold, request.ck), now)

    def result(self, client: bytes, service: bytes, rid: int | None, body: list[bytes],
               now: float, gather: bool) -> None:
        """A reply for a client; gathered into a batched RESULT where ``gather`` (the
        client takes them, and other messages are being read with this one)."""
        if gather and rid is not None and len(body) == 1 and len(body[0]) < p.BIG_BODY:
            results = self._results.get(client)
            if results is None:
                self._results[client] = {service: ([rid], list(body))}
            elif (pending := results.get(service)) is None:
                results[service] = ([rid], list(body))
            else:
                pending[0].append(rid)
                pending[1].append(body[0])
            self._gathered(client, len(body[0]), now)
            return
        self.send(p.to_client(client, service, body, rid), now)

    def forget_worker(self, identity: bytes) -> None:
        """The worker has gone: its gathered tasks are not sent (they are queued again)."""
        if self._tasks.pop(identity, None) is not None:
            self.sizes.pop(identity, None)

    def flush(self, now: float) -> None:
        """Send everything gathered, peer by peer in the order gathered (as
        :meth:`_emit_gathered` would for each in turn)."""
        if not self.sizes:
            return
        tasks, results = self._tasks, self._results
        for peer in self.sizes:
            if peer in tasks:
                worker, held = tasks[peer]
                self._emit_tasks(worker, held, now)
            if peer in results:
                self._emit_results(peer, results[peer])
        self.sizes = {}
        self._tasks = {}
        self._results = {}

    def _emit_tasks(self, worker: Worker, tasks: list[tuple[Request, bool]],
                    now: float) -> None:
        """One TASKS per worker (more past MAX_BATCH), unless it has gone meanwhile."""
        if self._workers.get(worker.identity) is not worker:
            return  # gone meanwhile: its tasks are queued again
        if len(tasks) == 1:  # (the usual share of a pass: one task, no batch to build)
            request, hold = tasks[0]
            worker.tasked_at = now
            if worker.tasks.get(request.key) is request:
                request.sent_mark = self.taken
                self.actions.append(Send(0, p.to_worker(
                    worker.identity, request.key, request.body, True, request.ttl_ms(now),
                    hold, request.ck)))
            return
        # those it still holds; a request gathered twice for it (a worker that bounced the
        # key of a task not yet sent, then said FREE) goes once, as it was gathered last
        once = {r.key: (r, hold) for r, hold in tasks if worker.tasks.get(r.key) is r}
        tasks = list(once.values())
        taken = self.taken
        worker.tasked_at = now
        for start in range(0, len(tasks), p.MAX_BATCH):
            part = tasks[start:start + p.MAX_BATCH]
            for request, _ in part:
                request.sent_mark = taken
            if len(part) == 1:
                request, hold = part[0]
                frames = p.to_worker(worker.identity, request.key, request.body, True,
                                     request.ttl_ms(now), hold, request.ck)
            else:
                cks = [r.ck for r, _ in part]
                frames = p.to_worker_batch(
                    worker.identity, [r.key for r, _ in part], [r.body[0] for r, _ in part],
                    [r.ttl_ms(now) for r, _ in part], [hold for _, hold in part],
                    cks if any(cks) else None)
            self.actions.append(Send(0, frames))

    def _emit_results(self, client: bytes,
                      results: dict[bytes, tuple[list[int], list[bytes]]]) -> None:
        """One RESULT per service of the gathered replies to ``client``."""
        for service, (rids, bodies) in results.items():
            if len(rids) == 1:
                frames = p.to_client(client, service, bodies, rids[0])
            else:
                frames = p.to_client_batch(client, service, rids, bodies)
            self.actions.append(Send(0, frames))
