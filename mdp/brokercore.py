"""The broker's decisions, without sockets (``docs/PROTOCOL.md`` sections 2-4).

:class:`BrokerCore` is fed what arrived on the broker's ROUTER (the peer's identity, its
frames, its CURVE key) and the time, and answers with the frames to send, as
:class:`~mdp.actions.Send` actions on link 0, and its next deadline, the way h11's
``Connection`` is driven by whoever owns the socket. It never reads a clock and never
touches a socket: ``mdp.broker`` is the loop around it (sockets, CURVE/ZAP, signals, the
command line), and the unit tests drive it with an explicit clock.

What it decides, in one place:

* **Who does what.** Requests are queued per service and given to idle workers, least
  recently used first (:mod:`mdp.dispatch` keeps the books); a held task is recalled when
  a worker of its service falls idle.
* **Handshakes.** WELCOME to DIPS workers (batches and progress on) and clients; HELLO's
  ``first`` gives the next MDPC01 request of that connection its id, deadline and key.
* **Roles.** Under CURVE only client keys send requests and only worker keys serve; a key
  revoked while its request runs gets no reply.
* **Wire order.** Tasks for a worker that takes TASKS, and replies for a client that takes
  batched RESULTs, are gathered while the shell reads messages that arrived together, and
  go out when it says the pass is over (:meth:`BrokerCore.flush`); whatever else is sent to
  that peer meanwhile (a PONG, PROGRESS, a RECALL, a probe) goes *after* what was gathered
  for it. A message that came alone gathers nothing: a lone request costs no gathering.
* **Faults.** A worker whose send failed (:class:`~mdp.actions.Lost`), that stayed silent,
  or that was probed while it held a task and had gone is forgotten, and its tasks go to
  others; one lost while running a request costs that request a loss, and a request that
  has cost ``--max-worker-losses`` workers is answered ``worker_lost``.
* **Timers.** Heartbeats, probes of workers holding tasks, the unknown-service grace,
  expiry of queued requests and of callers of shared requests.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from typing import Any

from mdp import protocol as p
from mdp.actions import Event, Lost, Opened, Received, Send, Tick
from mdp.brokerstatus import broker_status, clean_meta
from mdp.config import BrokerConfig
from mdp.dispatch import Dispatcher, Request, Service, Worker
from mdp.errors import (
    BadRequest,
    Expired,
    ProtocolError,
    RequestError,
    UnknownService,
    WorkerLost,
)
from mdp.keys import CLIENT_ROLE, WORKER_ROLE, fingerprint
from mdp.outbox import Outbox
from mdp.standing import (
    answered,
    expired_workers,
    gave_up,
    heard_from,
    quiet_holders,
    recalls,
    set_away,
    set_draining,
)
from mdp.sweeps import detach_expired, drop_expired, drop_requests_of, unknown_requests
from mdp.version import code_version

log = logging.getLogger("mdp.broker")

MAX_FIRSTS = 10_000  # HELLOs whose first request has not arrived yet
MAX_HELLOS = 100_000  # clients remembered as taking batched RESULTs or PROGRESS
BATCH = 1  # HELLO flags: the client takes RESULTs of several replies
PROGRESS = 2  # ... and PROGRESS
_LISTED_SERVICES = 20  # services named in an unknown_service answer

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
            max_workers=config.max_workers,
            max_prefetch=config.max_prefetch,
            max_worker_losses=config.max_worker_losses,
            poison_memory_s=config.poison_memory_s,
        )
        self.started = now
        self.instance = instance or secrets.token_hex(8)  # tells a restarted broker apart
        self.about = dict(about or {})
        self._role_of = role_of
        self._version = code_version()
        welcome = {"broker": self._version, "instance": self.instance}
        self._client_welcome = welcome
        self._worker_welcome = {**welcome, "batch": True, "progress": True, "announce": True}
        self._firsts: dict[bytes, p.First] = {}  # HELLO "first", by client
        self._hellos: dict[bytes, int] = {}  # clients' HELLO flags (BATCH, PROGRESS)
        self._out = Outbox(self.dispatcher.workers)
        self._now = now  # the time of the event being handled
        self._gather = False  # the message being handled has others behind it
        self._warnings = _Warnings()
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

    def take_actions(self) -> list[Send]:
        """What to send, in order (a broker only ever sends: its shell opens and closes
        nothing); the shell reports a send that failed with :meth:`lost`."""
        return self._out.take()

    @property
    def gathered(self) -> bool:
        """Output waits for the end of the pass (:meth:`flush`)."""
        return self._out.gathered

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
                self._answer_error(request, self._unknown(request.service))
        if now >= self._next_heartbeat:  # reaches every worker: a probe too
            self._next_heartbeat = now + self.config.heartbeat_interval_s
            self._next_probe = now + self.config.probe_interval_s
            self._probe(now, send=False)
            self._heartbeat(now)
        elif now >= self._next_probe:
            self._next_probe = now + self.config.probe_interval_s
            self._probe(now)
        self.flush(now)

    def flush(self, now: float) -> None:
        """Send every gathered task and reply."""
        self._now = now
        self._out.flush(now)

    def lost(self, peer: bytes, now: float) -> None:
        """A send to ``peer`` failed: it is no longer connected."""
        self._now = now
        self._gather = False
        worker = self.dispatcher.workers.get(peer)
        if worker is None:
            self.dispatcher.counters.undeliverable += 1
            self._hellos.pop(peer, None)
            self._firsts.pop(peer, None)
            return
        self._warnings(now, "worker %s is gone; requeueing its tasks", peer.hex()[:20])
        self._forget(worker, now, lost=True)

    def purge_revoked(self, now: float) -> None:
        """After the allow-lists changed: forget workers, and drop queued requests, of keys
        now refused (replies to running requests of such keys are dropped as they come)."""
        self._now = now
        self._gather = False
        role_of, dispatcher = self._role_of, self.dispatcher
        if role_of is None:
            return
        for worker in list(dispatcher.workers.values()):
            if role_of(worker.user) != WORKER_ROLE:
                log.warning("worker %s: its key %s was revoked; forgetting it",
                            worker.identity.hex()[:20], fingerprint(worker.user.encode()))
                self._send(p.worker_command(worker.identity, p.DISCONNECT))
                self._forget(worker, now)
        dropped = drop_requests_of(dispatcher, lambda r: role_of(r.user) != CLIENT_ROLE)
        if dropped:
            log.warning("dropped %d queued requests of revoked client keys", dropped)

    def goodbye(self) -> None:
        """DISCONNECT to every worker (the broker is stopping)."""
        for identity in self.dispatcher.workers:
            self._send(p.worker_command(identity, p.DISCONNECT))

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
            frames = _heads_as_bytes(frames)
        try:
            count = len(frames)
            if count == 7:
                message = _quick_parse(frames)
            elif count == 4 and frames[3] == p.HEARTBEAT and frames[2] == p.WORKER \
                    and not frames[1]:
                message = _HEARTBEAT  # (a thousand idle workers send one a second)
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
                worker = self._known_worker(identity, now)
                if worker is not None:
                    self._take_reply(worker, key, body, now)
                    self._dispatch(worker.service, now)
            case p.ClientRequest():
                self._on_request(identity, message, user, now)
            case p.WorkerReplies(keys, bodies):
                worker = self._known_worker(identity, now)
                self._gather = True  # several replies: their RESULTs may go together
                if worker is not None:  # each taken as if it came alone
                    for one_key, one_body in zip(keys, bodies, strict=True):
                        self._take_reply(worker, one_key, [one_body], now)
                    self._dispatch(worker.service, now)
            case p.ClientBatch():
                self._on_batch(identity, message, user, now)
            case p.WorkerSignal():
                self._on_signal(identity, message, now)
            case p.ClientPing(rids):
                holds = self.dispatcher.holds
                lost = [rid for rid in rids if not holds(identity, rid)]
                # wire order: replies gathered for this client go first (_send)
                self._send(p.pong(identity, lost, self.instance))
            case p.WorkerProgress():
                self._on_progress(identity, message, now)
            case p.ClientHello():
                self._on_hello(identity, message)
            case p.WorkerReady():
                self._on_ready(identity, message, user, now)

    def _malformed(self, identity: bytes, frames: list[bytes], exc: ProtocolError,
                   now: float) -> None:
        self.dispatcher.counters.dropped += 1
        self._warnings(now, "dropped message from %s: %s", identity.hex()[:20], exc)
        if len(frames) > 3 and frames[2] == p.CLIENT:
            self._answer_error(Request(identity, bytes(frames[3][:100]), [], now),
                               BadRequest(str(exc)))

    def _role_allows(self, identity: bytes, message: p.BrokerInbound, user: str, role: str,
                     now: float) -> bool:
        """With CURVE, only client keys send requests and only worker keys serve."""
        client_kinds = p.ClientRequest | p.ClientBatch | p.ClientPing | p.ClientHello
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
        flags = (BATCH if msg.batch else 0) | (PROGRESS if msg.progress else 0)
        hellos = self._hellos
        if flags:
            if identity not in hellos and len(hellos) >= MAX_HELLOS:
                hellos.pop(next(iter(hellos)))
            hellos[identity] = flags
        else:
            hellos.pop(identity, None)
        if msg.first is not None:
            firsts = self._firsts
            if len(firsts) >= MAX_FIRSTS:  # clients that never sent their request
                firsts.pop(next(iter(firsts)))
            firsts[identity] = msg.first
        self._send(p.client_welcome(identity, self._client_welcome))

    def _on_request(self, identity: bytes, msg: p.ClientRequest, user: str,
                    now: float) -> None:
        rid, ttl_ms, priority, ck = msg.rid, msg.ttl_ms, msg.priority, msg.ck
        if rid is None and self._firsts:
            first = self._firsts.pop(identity, None)
            if first is not None:
                rid, ttl_ms, priority, ck = first.rid, first.ttl_ms, first.priority, first.ck
        deadline = None if ttl_ms is None else now + ttl_ms / 1000
        name = msg.service
        request = Request(identity, name, msg.body, now, rid, deadline, priority, user=user,
                          ck=ck)
        if name.startswith(p.MMI_PREFIX):
            self._on_mmi(request, now)
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
            self._answer_error(request, self._unknown(name))
            return
        if service is not None and service.idle:
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

    def _on_batch(self, identity: bytes, msg: p.ClientBatch, user: str, now: float) -> None:
        """Several requests in one SUBMIT: each is queued as if it came alone (a worker's
        share goes as one TASKS)."""
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
            error = self._unknown(name)
        if error is not None:
            for rid in msg.rids:
                dispatcher.counters.requests += 1
                self._answer_error(Request(identity, name, [], now, rid), error)
            return
        for rid, body in zip(msg.rids, msg.bodies, strict=True):
            service = dispatcher.services.get(name)
            if (service is not None and len(service.queue) >= dispatcher.max_queue
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

    def _unknown_now(self, name: bytes, now: float) -> bool:
        """Answer ``unknown_service`` at once: no worker has offered ``name`` since this
        broker started, and its start-up grace (workers registering again) is over."""
        return (now >= self.started + self.config.unknown_grace_s
                and name not in self.dispatcher.offered)

    def _unknown(self, name: bytes) -> UnknownService:
        offered = sorted(s.name.decode("ascii", "replace")
                         for s in self.dispatcher.services.values() if s.workers)
        if not offered:
            return UnknownService(f"no worker offers {name.decode('ascii', 'replace')!r}; "
                                  "no service is offered here")
        listed = ", ".join(offered[:_LISTED_SERVICES])
        if len(offered) > _LISTED_SERVICES:
            listed += f" and {len(offered) - _LISTED_SERVICES} more"
        return UnknownService(f"no worker offers {name.decode('ascii', 'replace')!r}; "
                              f"the services offered here are {listed}")

    def _on_mmi(self, request: Request, now: float) -> None:
        if request.service == p.MMI_SERVICE:
            name = request.body[0] if request.body else b""
            service = self.dispatcher.services.get(bytes(name))
            body = b"200" if service is not None and service.workers else b"404"
        elif request.service == p.MMI_STATUS:
            body = p.pack(self.status(now))
        else:
            body = b"501"
        self._reply_to(request, [body])

    def _on_ready(self, identity: bytes, msg: p.WorkerReady, user: str, now: float) -> None:
        dispatcher = self.dispatcher
        known = dispatcher.workers.get(identity)
        if known is not None:  # READY twice is a protocol error: start over
            self._warnings(now, "worker %s sent READY twice; disconnecting",
                           identity.hex()[:20])
            self._send(p.worker_command(identity, p.DISCONNECT))
            self._forget(known, now)
            return
        if not p.valid_service(msg.service) or msg.service.startswith(p.MMI_PREFIX):
            self._warnings(now, "worker %s offers an invalid service %r; disconnecting",
                           identity.hex()[:20], msg.service[:110])
            self._send(p.worker_command(identity, p.DISCONNECT))
            return
        if len(dispatcher.workers) >= self.config.max_workers:
            self._warnings(now, "refused worker %s: %d workers attached (--max-workers)",
                           identity.hex()[:20], len(dispatcher.workers))
            self._send(p.worker_command(identity, p.DISCONNECT))
            return
        meta = clean_meta(msg.meta)
        prefetch = meta.pop("prefetch", 0)
        worker = dispatcher.add_worker(identity, msg.service, msg.meta is not None, meta, now,
                                       prefetch, meta.pop("batch", False))
        worker.announce = worker.dips and meta.pop("announce", False)
        worker.user = user
        log.info("worker %s ready for %r (host %s pid %s version %s)", identity.hex()[:20],
                 msg.service.decode(), meta.get("host"), meta.get("pid"), meta.get("version"))
        if worker.dips:
            self._send(p.worker_welcome(identity, self._worker_welcome))
        self._dispatch(worker.service, now)

    def _known_worker(self, identity: bytes, now: float) -> Worker | None:
        """The worker that sent a message (a sign of life); a worker we do not know (we
        restarted, or forgot it) is told DISCONNECT, to register again."""
        worker = self.dispatcher.workers.get(identity)
        if worker is None:
            self._send(p.worker_command(identity, p.DISCONNECT))
            return None
        if heard_from(worker, self.dispatcher.worker_expiry_s, now):
            self._back_from_silence(worker, now)
        return worker

    def _back_from_silence(self, worker: Worker, now: float) -> None:
        log.info("worker %s speaks again; it gets tasks again", worker.identity.hex()[:20])
        self._dispatch(worker.service, now)

    def _take_reply(self, worker: Worker, key: bytes, body: list[bytes], now: float) -> None:
        dispatcher = self.dispatcher
        answered(worker, key)
        error = p.error_code(body) if _is_error(body) else None
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

    def _on_signal(self, identity: bytes, msg: p.WorkerSignal, now: float) -> None:
        dispatcher = self.dispatcher
        worker = dispatcher.workers.get(identity)
        command = msg.command
        if worker is None:
            if command != p.DISCONNECT:
                self._send(p.worker_command(identity, p.DISCONNECT))
            return
        if heard_from(worker, dispatcher.worker_expiry_s, now):
            self._back_from_silence(worker, now)
        if command == p.HEARTBEAT:
            if msg.sending:  # a big reply follows: no probe, no silence, until it may be here
                size = min(msg.sending, self.config.max_message_bytes)  # (none can be larger)
                worker.reply_until = p.sent_until(worker.reply_until, size, now)
            return
        if not worker.dips and command != p.DISCONNECT:
            self._warnings(now, "standard worker %s sent a DIPS command %r; ignored",
                           identity.hex()[:20], command)
            return
        if command == p.DISCONNECT:
            log.info("worker %s left", identity.hex()[:20])
            self._forget(worker, now)
            return
        if command == p.BUSY:
            if msg.draining:
                set_draining(worker)
            else:
                set_away(worker, True)
        elif command == p.FREE:
            set_away(worker, False)
        elif command == p.BOUNCE:
            answered(worker, msg.key)
            if not dispatcher.bounce(worker, msg.key) and not gave_up(worker, msg.key):
                self._warnings(now, "worker %s bounced a task it does not hold",
                               identity.hex()[:20])
        self._dispatch(worker.service, now)

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

    # --- output ---------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        """Send to a peer, after whatever was gathered for it (wire order)."""
        self._out.send(frames, self._now)

    def _dispatch(self, service: Service, now: float) -> None:
        if service.queue:
            out, gather = self._out, self._gather
            for worker, request, hold in self.dispatcher.assignments(service, now):
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

    def _forget(self, worker: Worker, now: float, lost: bool = False) -> None:
        """Forget a worker and give its tasks to others. ``lost``: it died or froze, which
        costs each request it held a loss (not one whose task never reached it)."""
        self._out.forget_worker(worker.identity)  # gathered, never sent: queued again
        for request in self.dispatcher.remove_worker(
                worker, now, self._out.delivered if lost else None):
            self._poisoned(request)
        self._dispatch(worker.service, now)

    def _poisoned(self, request: Request) -> None:
        """Workers died running ``request`` again and again: answer ``worker_lost``."""
        service = request.service.decode("ascii", "replace")
        callers = request.answered_to()
        log.warning("request %s to %r gave up: %d workers were lost while running it; "
                    "answered worker_lost, and refused for %gs",
                    ", ".join(f"{c.client.hex()[:20]}/{c.rid}" for c in callers) or "-",
                    service, request.losses, self.config.poison_memory_s)
        self._answer_error(request, WorkerLost(
            f"service {service!r}: {request.losses} workers were lost while running this "
            "request"))

    def _probe(self, now: float, send: bool = True) -> None:
        """A heartbeat to each worker that holds a task and has said nothing for a probe
        interval (``send``; the heartbeat burst reaches them otherwise): a send to one whose
        connection dropped (dead, or frozen past its ZMTP heartbeats) fails, and the shell
        says :meth:`lost`; a DIPS worker answers it while its handler runs. Workers that
        answer their tasks quickly are never probed. A DIPS worker that answers nothing
        for ``--frozen-after`` has its tasks given to others, unless half or more of its
        service's workers are as quiet: a freeze strikes a process, and a whole fleet gone
        quiet together is overloaded (or this broker was stalled itself), not frozen."""
        dispatcher, config = self.dispatcher, self.config
        quiet, silent, silent_due = quiet_holders(
            dispatcher.busy.values(), dispatcher.worker_expiry_s, config.probe_interval_s,
            config.frozen_after_s, now)
        if silent_due < self._next_probe:  # the verdict on time, not a probe late
            self._next_probe = silent_due
        by_service: dict[bytes, list[Worker]] = {}
        for worker in silent:
            by_service.setdefault(worker.service.name, []).append(worker)
        for workers in by_service.values():
            service = workers[0].service
            if len(workers) > max(1, len(service.workers) // 2):
                self._warnings(now, "%d of %d workers of %r quiet for %.1fs while they run a "
                               "task: taken for an overload, not for frozen workers",
                               len(workers), len(service.workers), service.name.decode(),
                               config.frozen_after_s)
                continue
            for worker in workers:
                self._warnings(now, "worker %s silent for %.1fs while it runs a task; its "
                               "tasks go to other workers", worker.identity.hex()[:20],
                               config.frozen_after_s)
                dispatcher.take_back_from_silent(worker)
            self._dispatch(service, now)
        if send:
            for worker in quiet:
                self._send(p.worker_command(worker.identity, p.HEARTBEAT))

    def _heartbeat(self, now: float) -> None:
        dispatcher = self.dispatcher
        for worker in expired_workers(dispatcher.workers.values(), now):
            log.warning("worker %s silent for %.1fs; forgetting it", worker.identity.hex()[:20],
                        dispatcher.worker_expiry_s)
            self._send(p.worker_command(worker.identity, p.DISCONNECT))
            self._forget(worker, now, lost=True)
        recent = now - self.config.heartbeat_interval_s / 2
        for identity, worker in dispatcher.workers.items():
            if worker.tasked_at < recent:  # a worker sent a task just now has heard from us
                self._send(p.worker_command(identity, p.HEARTBEAT))
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


_HEARTBEAT = p.WorkerSignal(p.HEARTBEAT)


def _quick_parse(frames: list[bytes]) -> p.BrokerInbound | None:
    """The two messages of every sync request, parsed without the general parser: a
    worker's REPLY of one body frame, and a SUBMIT of one request with only an id and a
    deadline (what a DIPS client sends for a lone call). None for anything else, which
    ``parse_broker_inbound`` then parses (and names what is wrong with it)."""
    if frames[1]:
        return None
    command = frames[3]
    if command == p.REPLY and frames[2] == p.WORKER and not frames[5]:
        return p.WorkerReply(frames[4], frames[6:])
    if command == p.SUBMIT and frames[2] == p.DIPS_CLIENT:
        meta = p.unpack_meta(frames[5], "SUBMIT")
        if len(meta) == 2:
            rid, ttl = meta.get("id"), meta.get("ttl_ms")
            if type(rid) is int and type(ttl) is int and 0 <= rid < 2**63 \
                    and 0 <= ttl < 2**63:
                return p.ClientRequest(frames[4], frames[6:], rid, ttl)
    return None


def _heads_as_bytes(frames: list[Any]) -> list[bytes]:
    """A big frame is passed as the ``zmq.Frame`` it came as (``sockio.recv``'s
    ``keep_big``), so that a body is never copied; one where the wire puts a service name,
    a key or a meta map (in a malformed message) is made bytes, for the parser."""
    header, command = frames[2], frames[3]
    if header == p.CLIENT:
        first_body = 4
    elif header == p.WORKER and command in (p.REPLY, p.REPLIES):
        first_body = 5
    else:
        first_body = 6
    return [f if i >= first_body or type(f) is bytes else bytes(f)
            for i, f in enumerate(frames)]


_ERROR_HEAD = p.error_body(Expired(""))[:7]  # how every DIPS error body begins


def _is_error(body: list[Any]) -> bool:
    """Whether a reply body is a DIPS error (a body frame kept as ``zmq.Frame`` is big,
    and never one)."""
    return len(body) == 1 and type(first := body[0]) is bytes \
        and first.startswith(_ERROR_HEAD) and p.is_error_body(body)


class _Warnings:
    """WARNING logs, at most ``per_second`` a second (a peer must not flood the log)."""

    def __init__(self, per_second: int = 10) -> None:
        self.per_second = per_second
        self._window_start = -math.inf
        self._count = 0
        self._suppressed = 0

    def __call__(self, now: float, msg: str, *args: object) -> None:
        if now - self._window_start >= 1.0:
            if self._suppressed:
                log.warning("%d similar warnings suppressed", self._suppressed)
            self._window_start, self._count, self._suppressed = now, 0, 0
        if self._count < self.per_second:
            self._count += 1
            log.warning(msg, *args)
        else:
            self._suppressed += 1
