"""The Majordomo broker: ``python -m mdp.broker --bind tcp://HOST:PORT``.

It queues requests per service and gives each to an idle worker of that service, least
recently used first. Workers that die or fall silent are forgotten and the request they
held goes back to the head of its queue. See ``mdp.protocol`` for the wire.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

import zmq

from mdp import protocol as p
from mdp import sockio
from mdp.auth import (
    CLIENT_ROLE,
    HANDSHAKE_FAILURES,
    WORKER_ROLE,
    RoleAuthenticator,
    log_handshake_failures,
)
from mdp.clock import LOG_FORMAT, RateLimitedLog, poll_timeout_ms
from mdp.config import BrokerConfig, parse_broker_args
from mdp.dispatch import Dispatcher, Request, Service, Worker
from mdp.errors import BadRequest, ConfigError, ProtocolError, RequestError, UnknownService
from mdp.keys import fingerprint, load_secret
from mdp.version import code_version

log = logging.getLogger(__name__)

_BATCH = 256  # messages handled per wake-up before timers get a turn
_MAX_BLOCK_MS = 100  # longest the loop blocks: a stop or reload flag is seen this soon
_MAX_FIRSTS = 10_000  # HELLOs whose first request has not arrived yet
_MAX_BATCHERS = 100_000  # clients remembered as taking batched RESULTs
_FLUSH_EVERY = 32  # messages handled before batched replies go out


class Broker:
    """One ROUTER socket, one poll loop."""

    def __init__(self, config: BrokerConfig, context: zmq.Context | None = None) -> None:
        config.validate()
        self.config = config
        self.context = context or zmq.Context.instance()
        self.dispatcher = Dispatcher(
            max_queue=config.max_queue,
            max_services=config.max_services,
            unknown_grace_s=config.unknown_grace_s,
            worker_expiry_s=config.heartbeat_interval_s * config.heartbeat_liveness,
            max_total_queue=config.max_total_queue,
            max_workers=config.max_workers,
            max_prefetch=config.max_prefetch,
        )
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        self.socket.setsockopt(zmq.SNDHWM, 0)  # replies are never dropped for a slow reader
        self.socket.setsockopt(zmq.RCVHWM, 0)
        # ZMTP heartbeats on every connection: libzmq's I/O thread answers them even while a
        # peer's own thread is busy in a long handler, and stops when the process is frozen
        # (SIGSTOP) or gone; then libzmq drops the connection and the next send fails.
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, config.zmtp_heartbeat_ms)
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * config.zmtp_heartbeat_ms)
        self.auth: RoleAuthenticator | None = None
        self.monitor: zmq.Socket | None = None
        if config.curve_secret and config.client_keys and config.worker_keys:
            self._setup_curve(config.curve_secret, config.client_keys, config.worker_keys)
        self.endpoints: list[str] = []
        for endpoint in config.bind:
            self.socket.bind(endpoint)
            self.endpoints.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        self.started = time.monotonic()
        self.instance = secrets.token_hex(8)  # tells clients a restarted broker apart
        self._welcome_meta = {"broker": code_version(), "instance": self.instance}
        self._firsts: dict[bytes, p.First] = {}  # HELLO "first", by client
        self._user = ""  # the CURVE key of the message being handled
        self._batchers: dict[bytes, None] = {}  # clients that take batched RESULTs
        self._results: dict[tuple[bytes, bytes], tuple[list[int], list[bytes]]] = {}
        self._tasks_out: dict[bytes, tuple[Worker, list[tuple[Request, bool]]]] = {}
        self._again: dict[bytes, Service] = {}  # services whose tasks a lost worker gave back
        self._stopping = False
        self._reload_requested = False
        self._warn = RateLimitedLog(log)
        now = time.monotonic()
        self._next_heartbeat = now + config.heartbeat_interval_s
        self._next_probe = now + config.probe_interval_s
        self._next_grace_check = now + min(0.1, config.unknown_grace_s or 0.1)

    def _setup_curve(self, secret_file: str, client_keys: str, worker_keys: str) -> None:
        own = load_secret(secret_file)
        self.auth = RoleAuthenticator(self.context, Path(client_keys), Path(worker_keys))
        self.auth.start()
        self.socket.curve_server = True
        self.socket.curve_publickey = own.public
        self.socket.curve_secretkey = own.secret
        self.monitor = self.socket.get_monitor_socket(HANDSHAKE_FAILURES)
        log.info("CURVE on; broker key %s", fingerprint(own.public))

    # --- loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stopping = True

    def reload_keys(self) -> None:
        """Ask the loop to read the allow-lists again (safe from a signal handler)."""
        self._reload_requested = True

    def run(self) -> None:
        """Serve until :meth:`stop`.

        The loop blocks in the socket's own receive (no poller: fewer system calls per
        message), waking at least every ``_MAX_BLOCK_MS`` so that a signal's flag is seen.
        """
        log.info("broker ready on %s", " ".join(self.endpoints))
        try:
            while not self._stopping:
                now = time.monotonic()
                timeout = min(poll_timeout_ms(self._next_timer(), now), _MAX_BLOCK_MS)
                self._drain(timeout)
                if self._reload_requested:
                    self._reload()
                self._run_timers(time.monotonic())
                if self._tasks_out or self._again:
                    self._flush_tasks()
                if self._results:
                    self._flush_results()
        finally:
            self._say_goodbye()
            self.close()
            log.info("broker stopped")

    def close(self) -> None:
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
        self.socket.close(linger=0)
        if self.auth is not None:
            self.auth.stop()

    def _reload(self) -> None:
        self._reload_requested = False
        if self.auth is None:
            log.warning("reload asked for, but CURVE is off: there are no allow-lists")
            return
        try:
            self.auth.reload()
        except ConfigError as exc:
            log.error("allow-lists not reloaded, the old ones stay: %s", exc)
            return
        self._purge_revoked(time.monotonic())

    def _purge_revoked(self, now: float) -> None:
        """After a reload: forget workers, and drop queued requests, of keys now refused."""
        auth, dispatcher = self.auth, self.dispatcher
        if auth is None:
            return
        for worker in list(dispatcher.workers.values()):
            if auth.role_of(worker.user) != WORKER_ROLE:
                log.warning("worker %s: its key %s was revoked; forgetting it",
                            worker.identity.hex()[:20], fingerprint(worker.user.encode()))
                self._send(p.worker_command(worker.identity, p.DISCONNECT))
                self._forget(worker, now)
        dropped = dispatcher.drop_requests_of(
            lambda request: auth.role_of(request.user) != CLIENT_ROLE)
        if dropped:
            log.warning("dropped %d queued requests of revoked client keys", dropped)

    def _drain(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for a message, then handle what has arrived.

        Replies to clients that take batches are gathered and sent every
        ``_FLUSH_EVERY`` messages and whenever the socket has nothing more to read.
        """
        sock = self.socket
        curve = self.auth is not None
        frames, user = sockio.recv_wait(sock, timeout_ms, with_user=curve)
        handled = 0
        try:
            while frames is not None:
                try:
                    self._handle(frames, user)
                except Exception:  # the barrier: one bad message never stops the broker
                    self.dispatcher.counters.dropped += 1
                    log.exception("error handling a message from %s", frames[0].hex()[:20])
                handled += 1
                if handled == _BATCH:  # timers get a turn; the rest waits in the socket
                    return
                if handled % _FLUSH_EVERY == 0:
                    if self._tasks_out:
                        self._flush_tasks()
                    if self._results:
                        self._flush_results()
                if handled == 1 and not sockio.readable(sock):
                    break  # one message came alone (a sync peer): no receive to find none
                if curve:
                    frames, user = sockio.recv_with_user(sock)
                else:
                    frames = sockio.recv(sock)
        finally:
            if self._tasks_out or self._again:
                self._flush_tasks()
            if self._results:
                self._flush_results()

    def _next_timer(self) -> float:
        return min(self._next_heartbeat, self._next_probe, self._next_grace_check)

    def _run_timers(self, now: float) -> None:
        if now >= self._next_probe:
            self._next_probe = now + self.config.probe_interval_s
            self._probe_busy_workers(now)
        if now >= self._next_grace_check:
            self._next_grace_check = now + min(0.1, self.config.unknown_grace_s or 0.1)
            for request in self.dispatcher.unknown_requests(now):
                service = request.service.decode("ascii", "replace")
                self._answer_error(request, UnknownService(f"no worker offers {service!r}"))
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval_s
            self._heartbeat(now)
            if self.monitor is not None:
                log_handshake_failures(self.monitor)

    # --- input -----------------------------------------------------------------------

    def _handle(self, frames: list[bytes], user: str = "") -> None:
        """One message; ``user`` is the sender's CURVE public key (z85) when CURVE is on."""
        identity = frames[0]
        try:
            if len(frames) > self.config.max_frames + 1:
                raise ProtocolError(f"{len(frames) - 1} frames; the limit is "
                                    f"{self.config.max_frames} (--max-frames)")
            message = p.parse_broker_inbound(frames[1:])
        except ProtocolError as exc:
            self.dispatcher.counters.dropped += 1
            self._warn.warning("dropped message from %s: %s", identity.hex()[:20], exc)
            if len(frames) > 3 and frames[2] == p.CLIENT:
                self._answer_error(Request(identity, frames[3][:100], [], 0.0),
                                   BadRequest(str(exc)))
            return
        self._user = user
        if self.auth is not None and not self._role_allows(
                identity, message, self.auth.role_of(user)):
            return
        now = time.monotonic()
        kind = type(message)
        if kind is p.WorkerReply:
            self._on_reply(identity, message, now)  # type: ignore[arg-type]
        elif kind is p.WorkerReplies:
            self._on_replies(identity, message, now)  # type: ignore[arg-type]
        elif kind is p.ClientRequest:
            self._on_request(identity, message, now)  # type: ignore[arg-type]
        elif kind is p.WorkerSignal:
            self._on_signal(identity, message, now)  # type: ignore[arg-type]
        elif kind is p.ClientPing:
            lost = [r for r in message.rids  # type: ignore[union-attr]
                    if not self.dispatcher.holds(identity, r)]
            if self._results:  # a reply gathered for a batch goes before the PONG that
                self._flush_results()  # no longer lists its request as held
            self._send(p.pong(identity, lost, self.instance))
        elif kind is p.ClientBatch:
            self._on_batch(identity, message, now)  # type: ignore[arg-type]
        elif kind is p.ClientHello:
            self._on_hello(identity, message)  # type: ignore[arg-type]
        else:
            self._on_ready(identity, message, now)  # type: ignore[arg-type]

    def _role_allows(self, identity: bytes, message: p.BrokerInbound, role: str) -> bool:
        """With CURVE, only client keys send requests and only worker keys serve."""
        client_kinds = p.ClientRequest | p.ClientBatch | p.ClientPing | p.ClientHello
        wants = CLIENT_ROLE if isinstance(message, client_kinds) else WORKER_ROLE
        if role == wants:
            return True
        self.dispatcher.counters.refused += 1
        self._warn.warning("refused a %s message from %s (key %s): %s", wants,
                           identity.hex()[:20], fingerprint(self._user.encode()),
                           f"its key is a {role} key" if role else "its key is not allowed")
        if isinstance(message, p.ClientBatch):
            message = p.ClientRequest(message.service, [], message.rids[0])
        if isinstance(message, p.ClientRequest):
            why = ("this key may not send requests" if role else
                   "this key is not (or no longer) allowed")
            self._answer_error(Request(identity, message.service, [], 0.0, message.rid),
                               BadRequest(why))
        return False

    def _on_hello(self, identity: bytes, msg: p.ClientHello) -> None:
        """A DIPS client; ``first`` gives an id and deadline to its next MDPC01 request."""
        firsts = self._firsts
        if msg.batch and identity not in self._batchers:
            if len(self._batchers) >= _MAX_BATCHERS:
                self._batchers.pop(next(iter(self._batchers)))
            self._batchers[identity] = None
        if msg.first is not None:
            if len(firsts) >= _MAX_FIRSTS:  # clients that never sent their request
                firsts.pop(next(iter(firsts)))
            firsts[identity] = msg.first
        self._send(p.client_welcome(identity, self._welcome_meta))

    def _on_request(self, identity: bytes, msg: p.ClientRequest, now: float) -> None:
        rid, ttl_ms, priority = msg.rid, msg.ttl_ms, msg.priority
        if rid is None and self._firsts:
            first = self._firsts.pop(identity, None)
            if first is not None:
                rid, ttl_ms, priority = first.rid, first.ttl_ms, first.priority
        deadline = None if ttl_ms is None else now + ttl_ms / 1000
        request = Request(identity, msg.service, msg.body, now, rid, deadline, priority,
                          user=self._user)
        if msg.service.startswith(p.MMI_PREFIX):
            self._on_mmi(request, now)
            return
        if msg.service not in self.dispatcher.services and not p.valid_service(msg.service):
            self.dispatcher.counters.requests += 1
            self._answer_error(request, BadRequest(
                "service names are 1-100 letters, digits, '.', '_' or '-'", "service"))
            return
        if request.expired(now):
            self.dispatcher.counters.requests += 1
            self.dispatcher.counters.expired += 1
            return
        error = self.dispatcher.enqueue(request, now)
        if error is not None:
            self._answer_error(request, error)
            return
        service = self.dispatcher.services.get(msg.service)
        if service is not None:  # None only for a resend naming another service
            self._dispatch(service, now)

    def _on_batch(self, identity: bytes, msg: p.ClientBatch, now: float) -> None:
        """Several requests in one SUBMIT: each is queued as if it came alone."""
        deadline = now + msg.ttl_ms / 1000
        name = msg.service
        if name.startswith(p.MMI_PREFIX) or not (name in self.dispatcher.services
                                                 or p.valid_service(name)):
            for rid in msg.rids:
                self.dispatcher.counters.requests += 1
                self._answer_error(Request(identity, name[:100], [], now, rid), BadRequest(
                    "a batch names a service of 1-100 letters, digits, '.', '_' or '-' "
                    "(not mmi.*)", "service"))
            return
        user = self._user
        dispatcher = self.dispatcher
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

    def _on_mmi(self, request: Request, now: float) -> None:
        if request.service == p.MMI_SERVICE:
            name = request.body[0] if request.body else b""
            service = self.dispatcher.services.get(name)
            body = b"200" if service is not None and service.workers else b"404"
        elif request.service == p.MMI_STATUS:
            body = p.pack(self.status(now))
        else:
            body = b"501"
        self._send_client(request, [body])

    def _on_ready(self, identity: bytes, msg: p.WorkerReady, now: float) -> None:
        dispatcher = self.dispatcher
        known = dispatcher.workers.get(identity)
        if known is not None:  # READY twice is a protocol error: start over
            self._warn.warning("worker %s sent READY twice; disconnecting", identity.hex()[:20])
            dispatcher.remove_worker(known, now)
            self._send(p.worker_command(identity, p.DISCONNECT))
            self._dispatch(known.service, now)
            return
        if not p.valid_service(msg.service) or msg.service.startswith(p.MMI_PREFIX):
            self._warn.warning("worker %s offers an invalid service %r; disconnecting",
                               identity.hex()[:20], msg.service[:110])
            self._send(p.worker_command(identity, p.DISCONNECT))
            return
        if len(dispatcher.workers) >= self.config.max_workers:
            self._warn.warning("refused worker %s: %d workers attached (--max-workers)",
                               identity.hex()[:20], len(dispatcher.workers))
            self._send(p.worker_command(identity, p.DISCONNECT))
            return
        meta = _clean_meta(msg.meta)
        prefetch = meta.pop("prefetch", 0)
        worker = dispatcher.add_worker(identity, msg.service, msg.meta is not None, meta, now,
                                       prefetch, meta.pop("batch", False))
        worker.user = self._user
        log.info("worker %s ready for %r (host %s pid %s version %s)", identity.hex()[:20],
                 msg.service.decode(), meta.get("host"), meta.get("pid"), meta.get("version"))
        if worker.dips and not self._send(p.worker_welcome(
                identity, {**self._welcome_meta, "batch": True})):
            return
        self._dispatch(worker.service, now)

    def _on_reply(self, identity: bytes, msg: p.WorkerReply, now: float) -> None:
        worker = self._replying_worker(identity, now)
        if worker is not None:
            self._take_reply(worker, msg.key, msg.body, now)
            self._dispatch(worker.service, now)

    def _on_replies(self, identity: bytes, msg: p.WorkerReplies, now: float) -> None:
        """Several replies in one REPLIES: each is taken as if it came alone."""
        worker = self._replying_worker(identity, now)
        if worker is not None:
            for key, body in zip(msg.keys, msg.bodies, strict=True):
                self._take_reply(worker, key, [body], now)
            self._dispatch(worker.service, now)

    def _replying_worker(self, identity: bytes, now: float) -> Worker | None:
        worker = self.dispatcher.workers.get(identity)
        if worker is None:
            self._unknown_worker(identity)
            return None
        worker.expires_at = now + self.dispatcher.worker_expiry_s
        return worker

    def _take_reply(self, worker: Worker, key: bytes, body: list[bytes], now: float) -> None:
        dispatcher = self.dispatcher
        error = p.error_code(body) if p.is_error_body(body) else None
        request = dispatcher.complete(worker, key, now, error)
        if request is None:
            dispatcher.counters.dropped += 1
            self._warn.warning("worker %s replied to a task it does not hold",
                               worker.identity.hex()[:20])
        else:
            dispatcher.counters.replies += 1
            self._send_client(request, body)

    def _on_signal(self, identity: bytes, msg: p.WorkerSignal, now: float) -> None:
        dispatcher = self.dispatcher
        worker = dispatcher.workers.get(identity)
        command = msg.command
        if worker is None:
            if command != p.DISCONNECT:
                self._unknown_worker(identity)
            return
        dispatcher.heard_from(worker, now)
        if command == p.HEARTBEAT:
            return
        if not worker.dips and command != p.DISCONNECT:
            self._warn.warning("standard worker %s sent a DIPS command %r; ignored",
                               identity.hex()[:20], command)
            return
        if command == p.DISCONNECT:
            log.info("worker %s left", identity.hex()[:20])
            dispatcher.remove_worker(worker, now)
        elif command == p.BUSY:
            if msg.draining:
                dispatcher.set_draining(worker)
            else:
                dispatcher.set_away(worker, True)
        elif command == p.FREE:
            dispatcher.set_away(worker, False)
        elif command == p.BOUNCE:
            if not dispatcher.bounce(worker, msg.key):
                self._warn.warning("worker %s bounced a task it does not hold",
                                   identity.hex()[:20])
        self._dispatch(worker.service, now)

    def _unknown_worker(self, identity: bytes) -> None:
        """A worker we do not know (we restarted, or forgot it): tell it to reconnect."""
        self._send(p.worker_command(identity, p.DISCONNECT))

    # --- output ----------------------------------------------------------------------

    def _dispatch(self, service: Service, now: float) -> None:
        dispatcher = self.dispatcher
        if not service.queue:
            if service.held and service.idle:
                self._recall(service)
            return
        # tasks for a worker that takes TASKS are gathered, and sent as one message when
        # this pass over the socket ends (_flush_tasks) or before anything else to it
        outbox = self._tasks_out
        for worker, request, hold in dispatcher.assignments(service, now):
            if worker.batch and len(request.body) == 1:
                pending = outbox.get(worker.identity)
                if pending is None:
                    outbox[worker.identity] = (worker, [(request, hold)])
                else:
                    pending[1].append((request, hold))
                continue
            if worker.dips:
                frames = p.to_worker(worker.identity, request.key, request.body, True,
                                     request.ttl_ms(now), hold)
            else:
                frames = p.to_worker(worker.identity, request.key, request.body, False)
            if not self._send(frames):
                self._worker_gone(worker, now)
        if service.held and service.idle:
            self._recall(service)

    def _flush_tasks(self) -> None:
        """Send the gathered tasks: one TASKS per worker (more if over MAX_BATCH)."""
        now = time.monotonic()
        while self._tasks_out or self._again:
            outbox, self._tasks_out = self._tasks_out, {}
            for identity, (worker, tasks) in outbox.items():
                if self.dispatcher.workers.get(identity) is not worker:
                    continue  # gone meanwhile: its tasks are queued again
                if not self._send_tasks(worker, tasks, now):
                    self._worker_gone(worker, now)
            again, self._again = self._again, {}
            for service in again.values():  # their tasks are queued again: give them out
                self._dispatch(service, now)

    def _send_tasks(self, worker: Worker, tasks: list[tuple[Request, bool]],
                    now: float) -> bool:
        for start in range(0, len(tasks), p.MAX_BATCH):
            part = tasks[start:start + p.MAX_BATCH]
            if len(part) == 1:
                request, hold = part[0]
                frames = p.to_worker(worker.identity, request.key, request.body, True,
                                     request.ttl_ms(now), hold)
            else:
                frames = p.to_worker_batch(
                    worker.identity, [r.key for r, _ in part], [r.body[0] for r, _ in part],
                    [r.ttl_ms(now) for r, _ in part], [hold for _, hold in part])
            if not self._send(frames):
                return False
        return True

    def _worker_gone(self, worker: Worker, now: float) -> None:
        """A send to the worker failed: forget it; its tasks are given out again soon."""
        log.warning("worker %s is gone; requeueing its tasks", worker.identity.hex()[:20])
        self._tasks_out.pop(worker.identity, None)
        self.dispatcher.remove_worker(worker, now)
        self._again[worker.service.name] = worker.service

    def _recall(self, service: Service) -> None:
        for worker, request in self.dispatcher.recalls(service):
            self._send(p.recall(worker.identity, request.key))

    def _send(self, frames: list[bytes]) -> bool:
        """Send to a peer; False when it is no longer connected."""
        if self._tasks_out and frames[0] in self._tasks_out:
            # wire order: the tasks gathered for this worker go before a RECALL, say
            worker, tasks = self._tasks_out.pop(frames[0])
            if (self.dispatcher.workers.get(frames[0]) is worker
                    and not self._send_tasks(worker, tasks, time.monotonic())):
                self._worker_gone(worker, time.monotonic())
                return False
        try:
            sockio.send(self.socket, frames)
            return True
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                return False
            raise

    def _send_client(self, request: Request, body: list[bytes]) -> None:
        if request.user and self.auth is not None and self.auth.role_of(request.user) == "":
            self.dispatcher.counters.refused += 1  # revoked while its request ran
            return
        if request.rid is not None and len(body) == 1 and request.client in self._batchers:
            pending = self._results.get((request.client, request.service))
            if pending is None:
                self._results[(request.client, request.service)] = ([request.rid], list(body))
            else:
                pending[0].append(request.rid)
                pending[1].append(body[0])
            return
        if not self._send(p.to_client(request.client, request.service, body, request.rid)):
            self.dispatcher.counters.undeliverable += 1

    def _flush_results(self) -> None:
        """Send the gathered replies: one RESULT per client and service."""
        results, self._results = self._results, {}
        for (client, service), (rids, bodies) in results.items():
            if len(rids) == 1:
                frames = p.to_client(client, service, bodies, rids[0])
            else:
                frames = p.to_client_batch(client, service, rids, bodies)
            if not self._send(frames):
                self.dispatcher.counters.undeliverable += len(rids)

    def _answer_error(self, request: Request, error: RequestError) -> None:
        self.dispatcher.counters.errors += 1
        service = self.dispatcher.services.get(request.service)
        if service is not None:
            service.counters.error(error.code)
        self._send_client(request, [p.error_body(error)])

    def _probe_busy_workers(self, now: float) -> None:
        """A heartbeat to each long-busy worker finds one whose connection dropped at once.

        A worker that answers quickly proves itself alive by its reply, so only those that
        have held a task for a whole probe interval are probed. A frozen DIPS worker stops
        answering ZMTP heartbeats and libzmq drops its connection within its TTL, so the
        probe after that fails.
        """
        for worker in self.dispatcher.busy_longer_than(self.config.probe_interval_s, now):
            if not self._send(p.worker_command(worker.identity, p.HEARTBEAT)):
                log.warning("busy worker %s is gone; requeueing its tasks",
                            worker.identity.hex()[:20])
                self._forget(worker, now)

    def _heartbeat(self, now: float) -> None:
        dispatcher = self.dispatcher
        for worker in dispatcher.expired_workers(now):
            log.warning("worker %s silent for %.1fs; forgetting it", worker.identity.hex()[:20],
                        dispatcher.worker_expiry_s)
            self._send(p.worker_command(worker.identity, p.DISCONNECT))
            self._forget(worker, now)
        for worker in list(dispatcher.workers.values()):
            if not self._send(p.worker_command(worker.identity, p.HEARTBEAT)):
                self._forget(worker, now)
        dispatcher.drop_expired(now)

    def _forget(self, worker: Worker, now: float) -> None:
        self.dispatcher.remove_worker(worker, now)
        self._dispatch(worker.service, now)

    def _say_goodbye(self) -> None:
        for identity in list(self.dispatcher.workers):
            self._send(p.worker_command(identity, p.DISCONNECT))

    # --- status ----------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        return {
            "broker": {
                "endpoint": " ".join(self.endpoints),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "version": code_version(),
                "instance": self.instance,
                "uptime_s": round(now - self.started, 3),
            },
            "services": self.dispatcher.status(now),
            "counters": self.dispatcher.counters.to_wire(),
        }


def _clean_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Keep only well-typed, short metadata fields from a worker's READY."""
    clean: dict[str, Any] = {}
    for key in ("host", "version"):
        value = (meta or {}).get(key)
        if isinstance(value, str):
            clean[key] = value[:100]
    pid = (meta or {}).get("pid")
    if isinstance(pid, int) and 0 < pid < 2**31:
        clean["pid"] = pid
    prefetch = (meta or {}).get("prefetch")
    if isinstance(prefetch, int) and not isinstance(prefetch, bool) and prefetch > 0:
        clean["prefetch"] = min(prefetch, 16)
    if (meta or {}).get("batch") is True:
        clean["batch"] = True
    info = _clean_info((meta or {}).get("info"))
    if info is not None:
        clean["info"] = info
    return clean


_MAX_INFO_BYTES = 8192


def _clean_info(info: Any) -> dict[str, Any] | None:
    """A worker's description of its service (``mdp.handlers.service_info``), if it is
    well-formed and small; anything else is dropped (the worker still serves)."""
    if not isinstance(info, dict):
        return None
    content_type, fields, doc = info.get("content_type", ""), info.get("fields", []), \
        info.get("doc", "")
    if not (isinstance(content_type, str) and isinstance(doc, str) and isinstance(fields, list)):
        return None
    if not all(isinstance(f, list) and len(f) == 4 and isinstance(f[0], str)
               and isinstance(f[1], str) and isinstance(f[2], bool) and isinstance(f[3], str)
               for f in fields):
        return None
    clean = {"content_type": content_type, "fields": fields, "doc": doc}
    return clean if len(p.pack(clean)) <= _MAX_INFO_BYTES else None


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    config, level = parse_broker_args(argv)
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    try:
        broker = Broker(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except zmq.ZMQError as exc:
        log.error("cannot bind %s: %s", " ".join(config.bind), exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: broker.stop())
    signal.signal(signal.SIGHUP, lambda *_: broker.reload_keys())
    broker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
