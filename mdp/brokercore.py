"""The broker's decisions, without sockets (``docs/PROTOCOL.md`` sections 2-4).

:class:`BrokerCore` is fed what arrived on the broker's ROUTER (the peer's identity, its
frames, its CURVE key) and the time, and answers with the frames to send, as
:class:`~mdp.actions.Send` actions on link 0, and its next deadline, the way h11's
``Connection`` is driven by whoever owns the socket. It never reads a clock and never
touches a socket: ``mdp.broker`` is the loop around it (sockets, CURVE/ZAP, signals, the
command line), and the unit tests drive it with an explicit clock.

What it decides (the per-message paths here, the rest through the parts named):

* **Who does what.** Requests are queued per service and given to idle workers, least
  recently used first (:mod:`mdp.dispatch` keeps the books); a held task is recalled when
  a worker of its service falls idle; ``mmi.*`` is answered by the broker itself
  (:mod:`mdp.brokerstatus`).
* **Handshakes.** WELCOME to DIPS workers (batches and progress on) and clients; HELLO's
  ``first`` gives the next MDPC01 request of that connection its id, deadline and key
  (:mod:`mdp.hellos`).
* **Roles.** Under CURVE only client keys send requests and only worker keys serve; a key
  revoked while its request runs gets no reply.
* **Wire order.** Tasks for a worker that takes TASKS, and replies for a client that takes
  batched RESULTs, are gathered while the shell reads messages that arrived together, and
  go out when it says the pass is over (:meth:`BrokerCore.flush`); whatever else is sent to
  that peer meanwhile (a PONG, PROGRESS, a RECALL, a probe) goes *after* what was gathered
  for it. A message that came alone gathers nothing: a lone request costs no gathering.
* **Clients that failed over.** A client's CANCEL gives up the requests it names (it sent
  them to another broker): queued ones are dropped, tasks at workers recalled and their
  replies dropped (:mod:`mdp.cancels`). A CANCEL the shell has read but not yet handed in
  (:attr:`BrokerCore.ahead`) is in force for the requests in front of it; a shell that
  finds it was stopped holds dispatch while it catches up (:meth:`BrokerCore.hold`).
* **Faults.** A worker whose send failed (:class:`~mdp.actions.Lost`), that stayed silent,
  or that was probed while it held a task and had gone is forgotten, and its tasks go to
  others; one lost while running a request costs that request a loss (its waiting clients
  that asked are told its count, LOSSES), and a request that has cost
  ``--max-worker-losses`` workers is answered ``worker_lost``; a request sent here with
  the count another broker told its client (``losses``) counts on from it. A worker's READY,
  signals and faults are its :class:`~mdp.brokerworkers.WorkerKeeper`'s.
* **Timers.** Heartbeats, probes of workers holding tasks, the unknown-service grace,
  expiry of queued requests and of callers of shared requests.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from mdp import protocol as p
from mdp.actions import Event, Lost, Opened, Received, Send, Tick
from mdp.brokerframes import HEARTBEAT_SIGNAL, heads_as_bytes, is_error, quick_parse
from mdp.brokerstatus import broker_status, mmi_answer, unknown_service
from mdp.brokerworkers import WorkerKeeper
from mdp.cancels import CancelsAhead, cancel_requests
from mdp.config import BrokerConfig
from mdp.dispatch import Dispatcher, Request, Service, Worker
from mdp.errors import BadRequest, Expired, ProtocolError, RequestError, WorkerLost
from mdp.hellos import BATCH, LOSSES, PROGRESS, note_hello
from mdp.keys import CLIENT_ROLE, WORKER_ROLE, fingerprint
from mdp.logs import RateLimitedLog
from mdp.outbox import Outbox
from mdp.standing import answered, heard_from, recalls
from mdp.sweeps import (
    detach_expired,
    drop_all,
    drop_expired,
    drop_requests_of,
    unknown_requests,
)
from mdp.version import code_version

log = logging.getLogger("mdp.broker")  # (the shell's logger too: one name for the broker)

RoleOf = Callable[[str], str]
"""The role of a CURVE key now: "client", "worker", or "" (not allowed)."""


class BrokerCore:
    """Every decision of a broker; see the module docstring."""

    def __init__(self, config: BrokerConfig, now: float, *, role_of: RoleOf | None = None,
                 about: dict[str, Any] | None = None, instance: str | None = None) -> None:
        """``role_of``: the CURVE role of a key (None: CURVE is off); ``about``: what the
        shell knows of itself for ``mmi.status`` (endpoint, pid, host)."""
        config.validate()
        self.config = config
        self.dispatcher = Dispatcher(
            max_queue=config.max_queue,
            max_services=config.max_services,
            unknown_grace_s=config.unknown_grace_s,
            worker_expiry_s=config.heartbeat_interval_s * config.heartbeat_liveness,
            max_total_queue=config.max_total_queue,
            max_queue_bytes=config.max_queue_bytes,
            max_workers=config.max_workers,
            max_prefetch=config.max_prefetch,
            max_worker_losses=config.max_worker_losses,
            poison_memory_s=config.poison_memory_s,
            link_floor=config.link_floor,
        )
        self.started = now
        self.instance = instance or secrets.token_hex(8)  # tells a restarted broker apart
        self.about = dict(about or {})
        self._role_of = role_of
        self._version = code_version()
        welcome = {"broker": self._version, "instance": self.instance}
        # (it takes CANCEL; it sends LOSSES, and counts on from a request's "losses")
        self._client_welcome = {**welcome, "cancel": True, "losses": True}
        self._firsts: dict[bytes, p.First] = {}  # HELLO "first", by client
        self._hellos: dict[bytes, int] = {}  # clients' HELLO flags (BATCH, PROGRESS)
        self._cancelled_ahead = CancelsAhead()  # read (ahead), not yet handed in
        # ahead(frames): a message the shell has read but not yet handed in with
        # :meth:`receive` (it reads what waits in its socket before it handles any): a
        # client's CANCEL among them is in force at once, so that none of the requests it
        # names, read before it (in the socket since this broker last read, frozen say), is
        # given to a worker. The shell hands in every message it was shown, in order. (The
        # notes' own method: the shell calls it for every message it reads ahead.)
        self.ahead: Callable[[list[bytes]], None] = self._cancelled_ahead.note
        # while the shell catches up after a stop (:meth:`hold`): services whose dispatch
        # waits for :meth:`release`; None when dispatch is not held
        self._held: dict[bytes, Service] | None = None
        self._out = Outbox(self.dispatcher.workers)
        # what to send, in order (a broker only ever sends: its shell opens and closes
        # nothing); the shell reports a send that failed with :meth:`lost`. (The outbox's
        # own method: the shell asks after every message, with no call in between.)
        self.take_actions: Callable[[], list[Send]] = self._out.take
        self._now = now  # the time of the event being handled
        self._gather = False  # the message being handled has others behind it
        self._warnings = RateLimitedLog(log)
        self._keeper = WorkerKeeper(config, self.dispatcher, self._out, self._warnings, welcome,
                                    send=self._send, dispatch=self._dispatch,
                                    answer_error=self._answer_error,
                                    tell_losses=self._tell_losses)
        self._next_heartbeat = now + config.heartbeat_interval_s
        self._next_probe = now + config.probe_interval_s
        self._next_grace = now
        self._grace_every_s = min(0.1, config.unknown_grace_s or 0.1)

    # --- what the shell calls ----------------------------------------------------------

    def handle(self, event: Event, now: float) -> None:
        """Feed one event (the shell may also call the method each case names)."""
        match event:
            case Received(_, frames, user):
                self.receive(frames, user, now)
            case Lost(_, peer):
                self.lost(peer, now)
            case Tick():
                self.tick(now)
            case Opened():
                pass

    @property
    def gathered(self) -> bool:
        """Output waits for the end of the pass (:meth:`flush`)."""
        return bool(self._out.sizes)

    def next_deadline(self) -> float:
        """When :meth:`tick` is next due."""
        deadline = self._next_heartbeat
        dispatcher = self.dispatcher
        if dispatcher.busy and self._next_probe < deadline:
            deadline = self._next_probe
        if dispatcher.orphans and self._next_grace < deadline:
            deadline = self._next_grace
        if dispatcher.retries and dispatcher.retries[0][0] < deadline:
            deadline = dispatcher.retries[0][0]
        return deadline

    def tick(self, now: float) -> None:
        """The shell has read what arrived, or a deadline came: run the timers that are
        due, then send what was gathered."""
        self._now = now
        self._gather = False
        for service in self.dispatcher.due_retries(now):
            self._dispatch(service, now)
        if now >= self._next_grace and self.dispatcher.orphans:
            self._next_grace = now + self._grace_every_s
            for request in unknown_requests(self.dispatcher, now):
                self._answer_error(request, unknown_service(self.dispatcher.services,
                                                            request.service))
        if now >= self._next_heartbeat:  # reaches every worker: a probe too
            self._next_heartbeat = now + self.config.heartbeat_interval_s
            self._next_probe = now + self.config.probe_interval_s
            self._probe(now, send=False)
            self._keeper.heartbeat(now)
            self._expire(now)
        elif now >= self._next_probe:
            self._next_probe = now + self.config.probe_interval_s
            self._probe(now)
        self.flush(now)

    def flush(self, now: float) -> None:
        """Send every gathered task and reply."""
        self._now = now
        self._out.flush(now)

    def hold(self) -> None:
        """Give nothing to a worker until :meth:`release`: the shell found it had been
        stopped (SIGSTOP, say) and what came meanwhile is still being read. Requests are
        queued meanwhile, so that a client's CANCEL, behind the requests it names, removes
        them before any worker has them, though libzmq's I/O thread, stopped too, hands the
        shell a backlog piece by piece as it catches up."""
        if self._held is None:
            self._held = {}

    def check_clients(self, now: float) -> None:
        """The shell has caught up (after :meth:`hold`), and calls :meth:`release` next:
        an unasked PONG (``lost`` empty; a client accepts one) to each DIPS client with a
        request queued in a service that waited, so that a send that fails (the client
        closed that connection: it failed over while this broker was stopped) marks it
        gone and its requests are dropped unworked as they come up. Its CANCEL may never
        have come: what a client had not yet handed to the kernel when it closed the
        connection, its CANCEL last of all, goes with the socket (linger 0), while the
        requests before it that had reached the kernel's buffers are read here."""
        self._now = now
        self._gather = False
        if not self._held:
            return
        gone = self.dispatcher.gone_clients
        clients: dict[bytes, None] = {}
        for service in self._held.values():
            for request in service.queue:
                if request.rid is not None and request.callers is None \
                        and request.client not in gone:
                    clients[request.client] = None
        for client in clients:
            self._send(p.pong(client, [], self.instance))

    def release(self, now: float) -> None:
        """Dispatch again (after :meth:`hold`): every service that waited gets its turn."""
        held, self._held = self._held, None
        for service in (held or {}).values():
            if self.dispatcher.services.get(service.name) is service:
                self._dispatch(service, now)
        self.flush(now)

    def lost(self, peer: bytes, now: float) -> None:
        """A send to ``peer`` failed: it is no longer connected."""
        self._now = now
        self._gather = False
        worker = self.dispatcher.workers.get(peer)
        if worker is None:
            self.dispatcher.counters.undeliverable += 1
            self._hellos.pop(peer, None)
            self._firsts.pop(peer, None)
            # a client gone (it failed over from this broker while it was frozen, say):
            # what it still has queued here can never be answered, so none of it runs
            self.dispatcher.client_gone(peer)
            return
        self._warnings(now, "worker %s is gone; requeueing its tasks", peer.hex()[:20])
        self._keeper.forget(worker, now, lost=True)

    def purge_revoked(self, now: float) -> None:
        """After the allow-lists changed: forget workers, and drop queued requests, of keys
        now refused (replies to running requests of such keys are dropped as they come)."""
        self._now = now
        self._gather = False
        role_of, dispatcher = self._role_of, self.dispatcher
        if role_of is None:
            return
        self._keeper.forget_revoked(role_of, now)
        dropped = drop_requests_of(dispatcher, lambda r: role_of(r.user) != CLIENT_ROLE)
        if dropped:
            log.warning("dropped %d queued requests of revoked client keys", dropped)

    def goodbye(self) -> None:
        """DISCONNECT to every worker, and the requests held unworked dropped (the broker
        is stopping: their clients send them elsewhere)."""
        for identity in self.dispatcher.workers:
            self._send(p.worker_command(identity, p.DISCONNECT))
        dropped = drop_all(self.dispatcher)
        if dropped:
            log.info("stopping: dropped %d requests not yet given to a worker", dropped)

    # --- input ---------------------------------------------------------------------------

    def receive(self, frames: list[bytes], user: str, now: float, more: bool = False) -> None:
        """One message from the ROUTER: ``frames[0]`` is the peer's identity; ``user`` its
        CURVE key (z85) when CURVE is on. ``more``: other messages came with it (the shell
        reads on, then calls :meth:`flush`), so batched output may be gathered; a message
        that came alone is answered at once, unless it carries several requests or replies
        (a batched SUBMIT, REPLIES): then too its output is gathered for :meth:`flush`."""
        self._now = now
        self._gather = more
        identity = frames[0]
        if len(frames) > 4 and (type(frames[4]) is not bytes
                                or (len(frames) > 5 and type(frames[5]) is not bytes)):
            frames = heads_as_bytes(frames)
        try:
            count = len(frames)
            if count == 7:
                message = quick_parse(frames)
            elif count == 4 and frames[3] == p.HEARTBEAT and frames[2] == p.WORKER \
                    and not frames[1]:
                message = HEARTBEAT_SIGNAL  # (a thousand idle workers send one a second)
            else:
                message = None
            if message is None:
                if len(frames) > self.config.max_frames + 1:
                    raise ProtocolError(f"{len(frames) - 1} frames; the limit is "
                                        f"{self.config.max_frames} (--max-frames)")
                message = p.parse_broker_inbound(frames[1:])
        except ProtocolError as exc:
            self._malformed(identity, frames, exc, now)
            return
        if self._role_of is not None and not self._role_allows(
                identity, message, user, self._role_of(user), now):
            return
        match message:
            case p.WorkerReply(key, body):
                # (a worker that speaks again after its silence is given tasks only once
                # its reply is taken: its request may wait in the queue, taken back)
                worker = self._known_worker(identity, now, dispatch=False)
                if worker is not None:
                    self._take_reply(worker, key, body, now)
                    self._dispatch(worker.service, now)
            case p.ClientRequest():
                self._on_request(identity, message, user, now)
            case p.WorkerReplies(keys, bodies):
                worker = self._known_worker(identity, now, dispatch=False)
                self._gather = True  # several replies: their RESULTs may go together
                if worker is not None:  # each taken as if it came alone
                    for one_key, one_body in zip(keys, bodies, strict=True):
                        self._take_reply(worker, one_key, [one_body], now)
                    self._dispatch(worker.service, now)
            case p.ClientBatch():
                self._on_batch(identity, message, user, now)
            case p.WorkerSignal():
                self._keeper.on_signal(identity, message, now)
            case p.ClientPing(rids):
                holds = self.dispatcher.holds
                lost = [rid for rid in rids if not holds(identity, rid)]
                # wire order: replies gathered for this client go first (_send)
                self._send(p.pong(identity, lost, self.instance))
            case p.WorkerProgress():
                self._on_progress(identity, message, now)
            case p.ClientHello():
                self._on_hello(identity, message)
            case p.ClientCancel(rids):
                self._on_cancel(identity, rids, now)
            case p.WorkerReady():
                self._keeper.on_ready(identity, message, user, now)

    def _malformed(self, identity: bytes, frames: list[bytes], exc: ProtocolError,
                   now: float) -> None:
        self.dispatcher.counters.dropped += 1
        self._warnings(now, "dropped message from %s: %s", identity.hex()[:20], exc)
        if len(frames) > 3 and frames[2] == p.CLIENT:
            self._answer_error(Request(identity, bytes(frames[3][:100]), [], now),
                               BadRequest(str(exc)))
        elif len(frames) > 5 and frames[2] == p.DIPS_CLIENT and frames[3] == p.SUBMIT:
            # its ids still tell whom to answer: each gets the error rather than a timeout
            # (none it holds already: a resend of a request held is ignored, as ever)
            service, error = bytes(frames[4][:100]), BadRequest(str(exc))
            holds = self.dispatcher.holds
            for rid in p.submit_ids(frames[4:], self.config.max_frames):
                if not holds(identity, rid):
                    self._answer_error(Request(identity, service, [], now, rid), error)

    def _role_allows(self, identity: bytes, message: p.BrokerInbound, user: str, role: str,
                     now: float) -> bool:
        """With CURVE, only client keys send requests and only worker keys serve."""
        client_kinds = (p.ClientRequest | p.ClientBatch | p.ClientPing | p.ClientHello
                        | p.ClientCancel)
        wants = CLIENT_ROLE if isinstance(message, client_kinds) else WORKER_ROLE
        if role == wants:
            return True
        self.dispatcher.counters.refused += 1
        self._warnings(now, "refused a %s message from %s (key %s): %s", wants,
                       identity.hex()[:20], fingerprint(user.encode()),
                       f"its key is a {role} key" if role else "its key is not allowed")
        rid: int | None
        match message:
            case p.ClientBatch(service, rids):
                rid = rids[0]
            case p.ClientRequest(service, _, request_id):
                rid = request_id
            case _:
                return False
        why = ("this key may not send requests" if role else
               "this key is not (or no longer) allowed")
        self._answer_error(Request(identity, service, [], now, rid), BadRequest(why))
        return False

    def _on_hello(self, identity: bytes, msg: p.ClientHello) -> None:
        """A DIPS client; ``first`` gives an id, deadline and key to its next MDPC01
        request."""
        note_hello(self._hellos, self._firsts, identity, msg)
        self.dispatcher.gone_clients.pop(identity, None)  # a new connection under its name
        self._send(p.client_welcome(identity, self._client_welcome))

    def _on_request(self, identity: bytes, msg: p.ClientRequest, user: str,
                    now: float) -> None:
        rid, ttl_ms, priority, ck, losses = msg.rid, msg.ttl_ms, msg.priority, msg.ck, msg.losses
        if rid is None and self._firsts:
            first = self._firsts.pop(identity, None)
            if first is not None:
                rid, ttl_ms, priority, ck = first.rid, first.ttl_ms, first.priority, first.ck
                losses = first.losses
        if rid is not None and (identity in self.dispatcher.gone_clients or (
                self._cancelled_ahead and self._cancelled_ahead.names(identity, rid))):
            return  # read after a send to it failed (it waited while we were frozen)
        deadline = None if ttl_ms is None else now + ttl_ms / 1000
        name = msg.service
        request = Request(identity, name, msg.body, now, rid, deadline, priority, user=user,
                          ck=ck)
        if name.startswith(p.MMI_PREFIX):
            self._reply_to(request, [mmi_answer(request, self.dispatcher.services,
                                                self.status, now)])
            return
        dispatcher = self.dispatcher
        service = dispatcher.services.get(name)
        if service is None and not p.valid_service(name):
            dispatcher.counters.requests += 1
            self._answer_error(request, BadRequest(
                "service names are 1-100 letters, digits, '.', '_' or '-'", "service"))
            return
        if request.expired(now):
            dispatcher.counters.requests += 1
            dispatcher.counters.expired += 1
            return
        if (service is None or not service.workers) and self._unknown_now(name, now):
            dispatcher.counters.requests += 1
            self._answer_error(request, unknown_service(dispatcher.services, name))
            return
        if losses:  # a resend that cost workers elsewhere (never an ordinary request)
            self._on_carried(request, losses, now)
            return
        if service is not None and service.idle and self._held is None:
            worker = dispatcher.dispatch_now(service, request, now)
            if worker is not None:  # (the usual lone request: no queue on the way)
                self._out.task(worker, request, False, now, self._gather)
                return
        error = dispatcher.enqueue(request, now)
        if error is not None:
            self._answer_error(request, error)
            return
        service = dispatcher.services.get(name)
        if service is not None:
            self._dispatch(service, now)

    def _on_carried(self, request: Request, losses: int, now: float) -> None:
        """A request its client sends with the workers it cost at another broker (that
        broker's LOSSES, ``docs/PROTOCOL.md`` "Poisoned requests"): its count starts there,
        so it goes out as a suspect (with ASK), and is given up once it has cost
        ``--max-worker-losses`` workers in all; one that already has is answered
        ``worker_lost`` at once. Either way it is remembered by its ids only: the count is
        its client's word, which must cost no other request anything."""
        dispatcher = self.dispatcher
        limit = self.config.max_worker_losses
        if 0 < limit <= losses:
            if request.rid is not None and dispatcher.holds(request.client, request.rid):
                return  # a resend of a request held here is ignored, as ever
            dispatcher.counters.requests += 1
            self._answer_error(request, WorkerLost(
                f"service {request.service.decode()!r}: {losses} workers were lost while "
                "running this request (as its client reports)"))
            return
        request.losses = losses
        request.claimed = losses
        error = dispatcher.enqueue(request, now)
        if error is not None:
            self._answer_error(request, error)
            return
        service = dispatcher.services.get(request.service)
        if service is not None:
            self._dispatch(service, now)

    def _on_batch(self, identity: bytes, msg: p.ClientBatch, user: str, now: float) -> None:
        """Several requests in one SUBMIT: each is queued as if it came alone (a worker's
        share goes as one TASKS)."""
        if identity in self.dispatcher.gone_clients:
            return  # read after a send to it failed (it waited while we were frozen)
        if self._cancelled_ahead:
            names = self._cancelled_ahead.names
            kept = [(rid, body) for rid, body in zip(msg.rids, msg.bodies, strict=True)
                    if not names(identity, rid)]
            if not kept:
                return
            msg = msg._replace(rids=[rid for rid, _ in kept], bodies=[b for _, b in kept])
        self._gather = True
        deadline = now + msg.ttl_ms / 1000
        name = msg.service
        dispatcher = self.dispatcher
        service = dispatcher.services.get(name)
        error: RequestError | None = None
        if name.startswith(p.MMI_PREFIX) or not (service is not None or p.valid_service(name)):
            error = BadRequest("a batch names a service of 1-100 letters, digits, '.', '_' "
                               "or '-' (not mmi.*)", "service")
            name = name[:100]
        elif (service is None or not service.workers) and self._unknown_now(name, now):
            error = unknown_service(dispatcher.services, name)
        if error is not None:
            for rid in msg.rids:
                dispatcher.counters.requests += 1
                self._answer_error(Request(identity, name, [], now, rid), error)
            return
        for rid, body in zip(msg.rids, msg.bodies, strict=True):
            service = dispatcher.services.get(name)
            if (service is not None and service.queue.length >= dispatcher.max_queue
                    and (service.idle or service.open)):
                self._dispatch(service, now)  # a full queue with workers free: not overloaded
            request = Request(identity, name, [body], now, rid, deadline, msg.priority,
                              user=user)
            error = dispatcher.enqueue(request, now)
            if error is not None:
                self._answer_error(request, error)
        service = dispatcher.services.get(name)
        if service is not None:  # all at once: a worker's share goes as one TASKS
            self._dispatch(service, now)

    def _on_cancel(self, identity: bytes, rids: list[int], now: float) -> None:
        """The client gave these requests up on this connection (it failed over): none
        that no worker has yet is run; a DIPS worker that has one is asked for it back
        (RECALL), and any reply to one is dropped. Ids not held are ignored."""
        self._cancelled_ahead.handed_in(identity, rids)
        done = cancel_requests(self.dispatcher, identity, rids)
        for worker, request in done.recall:
            self._send(p.recall(worker.identity, request.key))
        if done.queued or done.detached or done.in_hand:
            log.info("client %s gave up %d request(s) here: %d dropped from the queue, "
                     "%d detached from shared ones, %d in workers' hands (%d recalled)",
                     identity.hex()[:20], len(rids), done.queued, done.detached,
                     done.in_hand, len(done.recall))

    def _unknown_now(self, name: bytes, now: float) -> bool:
        """Answer ``unknown_service`` at once: no worker has offered ``name`` since this
        broker started, and its start-up grace (workers registering again) is over."""
        return (now >= self.started + self.config.unknown_grace_s
                and name not in self.dispatcher.offered)

    def _known_worker(self, identity: bytes, now: float,
                      dispatch: bool = True) -> Worker | None:
        """The worker that sent a message (a sign of life); a worker we do not know (we
        restarted, or forgot it) is told DISCONNECT, to register again. ``dispatch``: a
        worker that speaks again after its silence gets its service's tasks now (False:
        the caller dispatches once it has handled the message, a late reply whose request,
        taken back, waits in the queue: given first, it would run there twice)."""
        worker = self.dispatcher.workers.get(identity)
        if worker is None:
            self._send(p.worker_command(identity, p.DISCONNECT))
            return None
        if heard_from(worker, self.dispatcher.worker_expiry_s, now):
            self._keeper.back_from_silence(worker, now, dispatch)
        return worker

    def _take_reply(self, worker: Worker, key: bytes, body: list[bytes], now: float) -> None:
        dispatcher = self.dispatcher
        answered(worker, key)
        error = p.error_code(body) if is_error(body) else None
        held = worker.tasks.get(key)
        if held is not None and held.done:  # answered meanwhile by a worker that went silent
            dispatcher.discard(worker, key)
            return
        if held is not None:
            request = dispatcher.complete(worker, key, now, error)
        elif key in worker.given_up:  # taken back when it went silent: late, not wrong
            request = dispatcher.complete_late(worker, key, now, error)
        else:
            request = None
            dispatcher.counters.dropped += 1
            self._warnings(now, "worker %s replied to a task it does not hold",
                           worker.identity.hex()[:20])
        if request is None:
            return
        if error == "expired" and request.callers and not request.expired(now):
            dispatcher.retry(request)  # callers that came later still wait for it
            return
        dispatcher.counters.replies += 1
        for caller in request.answered_to():
            self._reply_to(caller, body)

    def _on_progress(self, identity: bytes, msg: p.WorkerProgress, now: float) -> None:
        """PROGRESS of a task: to each of its callers that asked for it in HELLO. Dropped
        for a task the worker does not hold (so never after the task's reply)."""
        worker = self._known_worker(identity, now)
        if worker is None:
            return
        request = worker.tasks.get(msg.key)
        if request is None or request.done or not worker.dips:
            return
        hellos = self._hellos
        for caller in request.answered_to():
            if caller.rid is not None and hellos.get(caller.client, 0) & PROGRESS:
                self._send(p.to_client_progress(caller.client, caller.service, caller.rid,
                                                msg.kind, msg.num, msg.den, msg.data))

    def _tell_losses(self, request: Request) -> None:
        """A worker was lost with ``request``, which goes out again: LOSSES, its count, to
        each of its callers that asked for them in HELLO, so that a caller that sends it
        to another broker (this one froze or died) carries the count there. A count past
        MAX_LOSSES (a broker with no limit, ``--max-worker-losses 0``) is told as MAX_LOSSES,
        the most the wire says: it is at least any broker's limit all the same."""
        hellos = self._hellos
        losses = min(request.losses, p.MAX_LOSSES)
        for caller in request.answered_to():
            if caller.rid is not None and hellos.get(caller.client, 0) & LOSSES:
                self._send(p.to_client_losses(caller.client, caller.service, caller.rid,
                                              losses))

    # --- output ---------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        """Send to a peer, after whatever was gathered for it (wire order)."""
        self._out.send(frames, self._now)

    def _dispatch(self, service: Service, now: float) -> None:
        if self._held is not None:  # (the shell is catching up: see hold)
            self._held[service.name] = service
            return
        if service.queue.length:
            out, gather = self._out, self._gather
            for worker, request, hold in self.dispatcher.assignments(service, now):
                if request.losses and worker.checks:  # suspect: ASK first (checked start)
                    self._keeper.ask(worker, request)
                out.task(worker, request, hold, now, gather)
        if service.unrecalled and service.idle:
            for worker, request in recalls(service):
                self._send(p.recall(worker.identity, request.key))

    def _reply_to(self, caller: Request, body: list[bytes]) -> None:
        """A reply (or an error) to one caller: gathered for a client that takes batched
        RESULTs, sent at once otherwise."""
        if caller.user and self._role_of is not None and self._role_of(caller.user) == "":
            self.dispatcher.counters.refused += 1  # revoked while its request ran
            return
        client = caller.client
        gather = self._gather and bool(self._hellos.get(client, 0) & BATCH)
        if caller.rid is not None and body and len(body[-1]) >= p.BIG_BODY:
            # announced: a PONG the client waits for meanwhile would come behind it
            self._send(p.pong(client, [], self.instance, len(body[-1])))
            gather = False
        self._out.result(client, caller.service, caller.rid, body, self._now, gather)

    def _answer_error(self, request: Request, error: RequestError) -> None:
        """An error to every caller of ``request``."""
        self.dispatcher.counters.errors += 1
        service = self.dispatcher.services.get(request.service)
        if service is not None:
            service.counters.error(error.code)
        body = [p.error_body(error)]
        for caller in request.answered_to():
            self._reply_to(caller, body)

    # --- faults and timers ------------------------------------------------------------

    def _probe(self, now: float, send: bool = True) -> None:
        """Probe the workers that hold a task (:meth:`~mdp.brokerworkers.WorkerKeeper.probe`),
        and keep the probe timer no later than the next verdict of silence."""
        silent_due = self._keeper.probe(now, send)
        if silent_due < self._next_probe:  # the verdict on time, not a probe late
            self._next_probe = silent_due

    def _expire(self, now: float) -> None:
        """The heartbeat timer's part for requests: queued ones past their deadline are
        dropped, callers of shared ones past theirs answered ``expired``, poisoned ones
        remembered long enough forgotten."""
        dispatcher = self.dispatcher
        drop_expired(dispatcher, now)
        for caller in detach_expired(dispatcher, now):
            self._answer_error(caller, Expired("the deadline passed while the request ran "
                                               "for other callers"))
        dispatcher.poison.forget_expired(now)

    # --- status ------------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        """The ``mmi.status`` map (``mdp.status.BrokerStatus`` on the wire)."""
        return broker_status(self.dispatcher, self.about, self._version, self.instance,
                             now - self.started, now).to_wire()
