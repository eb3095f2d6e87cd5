"""The broker's dealings with its workers as workers: READY, the signals of a worker
(HEARTBEAT, DISCONNECT, BUSY, FREE, BOUNCE, and CHECK, answered GO), the ASK before a
suspect task, and its faults: one whose send failed, that sent nothing for too long, or
that holds a task and answers no probe is forgotten or has its tasks given to others
(``docs/PROTOCOL.md`` sections 2, 4 and 6).

A :class:`WorkerKeeper` is the part of :class:`mdp.brokercore.BrokerCore` that none of the
per-request paths go through: the core keeps requests, replies, dispatch and output, and
hands a worker's READY and signals, and its heartbeat and probe timers, to its keeper. The
keeper sends through the core's own ``send``, ``dispatch`` and ``answer_error``, given to
it, so that wire order and gathering stay the core's; of the core's outbox it only asks
whether a task went out and drops what was gathered for a worker that has gone. No sockets,
no clock: each method takes ``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mdp import protocol as p
from mdp.brokerstatus import clean_meta
from mdp.config import BrokerConfig
from mdp.dispatch import Dispatcher
from mdp.errors import RequestError, WorkerLost
from mdp.keys import WORKER_ROLE, fingerprint
from mdp.logs import BurstLog, RateLimitedLog
from mdp.outbox import Outbox
from mdp.records import Request, Service, Worker
from mdp.standing import (
    answered,
    expired_workers,
    gave_up,
    heard_from,
    most_are_quiet,
    quiet_holders,
    quiet_workers,
    set_away,
    set_draining,
)

log = logging.getLogger("mdp.broker")  # (the shell's logger too: one name for the broker)

MAX_ASKED = 8  # suspect tasks a worker's record keeps before the answered ones are pruned


class WorkerKeeper:
    """Workers coming, signalling, going and failing; see the module docstring."""

    def __init__(self, config: BrokerConfig, dispatcher: Dispatcher, out: Outbox,
                 warnings: RateLimitedLog, welcome: dict[str, Any], *,
                 send: Callable[[list[bytes]], None],
                 dispatch: Callable[[Service, float], None],
                 answer_error: Callable[[Request, RequestError], None],
                 tell_losses: Callable[[Request], None]) -> None:
        """``welcome``: what the broker's WELCOME says to anyone (a DIPS worker's says more);
        ``send``, ``dispatch``, ``answer_error``, ``tell_losses``: the core's."""
        self.config = config
        self.dispatcher = dispatcher
        self._out = out
        self._warnings = warnings
        self._comings = BurstLog(log)  # workers joining, leaving, speaking again
        self._worker_welcome = {**welcome, "batch": True, "progress": True, "announce": True}
        self._send = send
        self._dispatch = dispatch
        self._answer_error = answer_error
        self._tell_losses = tell_losses

    def on_ready(self, identity: bytes, msg: p.WorkerReady, user: str, now: float) -> None:
        dispatcher = self.dispatcher
        known = dispatcher.workers.get(identity)
        if known is not None:  # READY twice is a protocol error: start over
            self._warnings(now, "worker %s sent READY twice; disconnecting",
                           identity.hex()[:20])
            self._send(p.worker_command(identity, p.DISCONNECT))
            self.forget(known, now)
            return
        if not p.valid_service(msg.service) or msg.service.startswith(p.MMI_PREFIX):
            self._refuse(identity, msg, now, "it offers an invalid service",
                         "the service name is not valid (1-100 of A-Z a-z 0-9 . _ -, not mmi.*)")
            return
        if (msg.service not in dispatcher.services
                and len(dispatcher.services) >= dispatcher.max_services):
            self._refuse(identity, msg, now, f"{len(dispatcher.services)} services known "
                         "(--max-services)", f"the broker knows {len(dispatcher.services)} "
                         "services, its limit (--max-services), and this is not one of them")
            return
        if len(dispatcher.workers) >= self.config.max_workers:
            self._refuse(identity, msg, now, f"{len(dispatcher.workers)} workers attached "
                         "(--max-workers)", f"the broker has {len(dispatcher.workers)} "
                         "workers, its limit (--max-workers)")
            return
        meta = clean_meta(msg.meta)
        prefetch = meta.pop("prefetch", 0)
        worker = dispatcher.add_worker(identity, msg.service, msg.meta is not None, meta, now,
                                       prefetch, meta.pop("batch", False))
        worker.announce = worker.dips and meta.pop("announce", False)
        worker.checks = worker.dips and msg.meta is not None and msg.meta.get("checks") is True
        worker.user = user
        self._comings(now, "ready", "worker %s ready for %r (host %s pid %s version %s)",
                      identity.hex()[:20], msg.service.decode(), meta.get("host"),
                      meta.get("pid"), meta.get("version"))
        if worker.dips:
            self._send(p.worker_welcome(identity, self._worker_welcome))
        self._dispatch(worker.service, now)

    def _refuse(self, identity: bytes, msg: p.WorkerReady, now: float, why: str,
                text: str) -> None:
        """Refuse a READY: logged, and DISCONNECT. A worker whose READY says it reads one
        (``"refusals": true``) hears why first, in a WELCOME whose meta says ``refused``
        (docs/PROTOCOL.md): a worker that proxies others (a Gearman door's) can tell them,
        where a bare DISCONNECT only made it try again in silence. Any other worker gets
        the bare DISCONNECT: an older DIPS worker would take the WELCOME for a handshake
        and reset its reconnect backoff, and so try again ten times a second."""
        self._warnings(now, "refused worker %s for %r: %s", identity.hex()[:20],
                       msg.service[:110], why)
        if isinstance(msg.meta, dict) and msg.meta.get("refusals") is True:
            service = msg.service[:110].decode("ascii", "replace")
            self._send(p.worker_welcome(identity, {
                **self._worker_welcome, "refused": f"service {service!r}: {text}"}))
        self._send(p.worker_command(identity, p.DISCONNECT))

    def back_from_silence(self, worker: Worker, now: float, dispatch: bool = True) -> None:
        """A silent worker spoke; ``dispatch``: its service's tasks go out now (else the
        caller dispatches once it has handled what the worker said)."""
        self._comings(now, "speaking again", "worker %s speaks again; it gets tasks again",
                      worker.identity.hex()[:20])
        if dispatch:
            self._dispatch(worker.service, now)

    def on_signal(self, identity: bytes, msg: p.WorkerSignal, now: float) -> None:
        dispatcher = self.dispatcher
        worker = dispatcher.workers.get(identity)
        command = msg.command
        if worker is None:
            if command != p.DISCONNECT:
                self._send(p.worker_command(identity, p.DISCONNECT))
            return
        if heard_from(worker, dispatcher.worker_expiry_s, now):
            self.back_from_silence(worker, now)
        if command == p.HEARTBEAT:
            if msg.sending:  # a big reply follows: no probe, no silence, until it may be here
                size = min(msg.sending, self.config.max_message_bytes)  # (none can be larger)
                worker.reply_until = p.sent_until(worker.reply_until, size, now,
                                                  self.config.link_floor)
            return
        if not worker.dips and command != p.DISCONNECT:
            self._warnings(now, "standard worker %s sent a DIPS command %r; ignored",
                           identity.hex()[:20], command)
            return
        if command == p.DISCONNECT:
            self._comings(now, "left", "worker %s left", identity.hex()[:20])
            self.forget(worker, now)
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
        elif command == p.CHECK:
            self._on_check(worker, msg.key)
            return
        self._dispatch(worker.service, now)

    def ask(self, worker: Worker, request: Request) -> None:
        """A suspect task (its request has cost a worker) is about to go to ``worker``,
        which takes ASK: ASK first, so that it CHECKs before it starts it (the core calls
        this just before it sends the task; docs/PROTOCOL.md, "Checked starts")."""
        asked = worker.asked
        if len(asked) >= MAX_ASKED:  # (what it answered or handed back: rare, kept small)
            for key in [k for k in asked if k not in worker.tasks and k not in worker.given_up]:
                del asked[key]
        asked[request.key] = False
        self._send(p.ask(worker.identity, request.key))

    def _on_check(self, worker: Worker, key: bytes) -> None:
        """CHECK: the worker starts task ``key`` now, if it still holds it unanswered
        (a lost worker then costs it a loss), or has answered it; GO either way."""
        asked = worker.asked
        if key in asked:
            if key in worker.tasks or key in worker.given_up:
                asked[key] = True
            else:
                del asked[key]  # (its CHECK after its reply)
        self._send(p.go(worker.identity, key))

    def forget(self, worker: Worker, now: float, lost: bool = False) -> None:
        """Forget a worker and give its tasks to others. ``lost``: it died or froze, which
        costs each request it held a loss (not one whose task never reached it; the callers
        of one that goes out again are told its count, LOSSES), unless
        most of its service's workers have said nothing for two heartbeats, which a live
        one never does (all frozen, or stalled together): no request is to blame for that."""
        if lost and most_are_quiet(
                quiet_workers(worker.service.workers.values(), self.dispatcher.worker_expiry_s,
                              2 * self.config.heartbeat_interval_s, now),
                len(worker.service.workers)):
            self._warnings(now, "worker %s lost while most workers of %r were quiet: taken "
                           "for a stall, its tasks cost their requests no loss",
                           worker.identity.hex()[:20], worker.service.name.decode())
            lost = False
        self._out.forget_worker(worker.identity)  # gathered, never sent: queued again
        if lost and worker.asked:
            unstarted = sum(1 for key, started in worker.asked.items() if not started
                            and (key in worker.tasks or key in worker.given_up))
            if unstarted:
                log.info("worker %s lost holding %d suspect task(s) it had not started "
                         "(no CHECK): they cost nothing", worker.identity.hex()[:20], unstarted)
        charged: list[Request] = []  # a loss each, and not given up: their callers are told
        for request in self.dispatcher.remove_worker(
                worker, now, self._out.delivered if lost else None, charged):
            self._poisoned(request)
        for request in charged:
            self._tell_losses(request)
        self._dispatch(worker.service, now)

    def forget_revoked(self, role_of: Callable[[str], str], now: float) -> None:
        """After the allow-lists changed: forget, with a DISCONNECT, each worker whose key
        is no longer a worker key (``role_of``: the CURVE role of a key now)."""
        for worker in list(self.dispatcher.workers.values()):
            if role_of(worker.user) != WORKER_ROLE:
                log.warning("worker %s: its key %s was revoked; forgetting it",
                            worker.identity.hex()[:20], fingerprint(worker.user.encode()))
                self._send(p.worker_command(worker.identity, p.DISCONNECT))
                self.forget(worker, now)

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

    def probe(self, now: float, send: bool = True) -> float:
        """A heartbeat to each worker that holds a task and has said nothing for a probe
        interval (``send``; the heartbeat burst reaches them otherwise): a send to one whose
        connection dropped (dead, or frozen past its ZMTP heartbeats) fails, and the shell
        says :meth:`~mdp.brokercore.BrokerCore.lost`; a DIPS worker answers it while its
        handler runs. Workers that answer their tasks quickly are never probed. A DIPS
        worker that answers nothing for ``--frozen-after`` has its tasks given to others,
        unless half or more of its service's workers are as quiet: a freeze strikes a
        process, and a whole fleet gone quiet together is overloaded (or this broker was
        stalled itself), not frozen. Returns when the next verdict of silence is due
        (``math.inf``: none), for the core's probe timer."""
        dispatcher, config = self.dispatcher, self.config
        quiet, silent, silent_due = quiet_holders(
            dispatcher.busy.values(), dispatcher.worker_expiry_s, config.probe_interval_s,
            config.frozen_after_s, now)
        by_service: dict[bytes, list[Worker]] = {}
        for worker in silent:
            by_service.setdefault(worker.service.name, []).append(worker)
        for workers in by_service.values():
            service = workers[0].service
            if most_are_quiet(len(workers), len(service.workers)):
                self._warnings(now, "%d of %d workers of %r quiet for %.1fs while they run a "
                               "task: taken for an overload, not for frozen workers",
                               len(workers), len(service.workers), service.name.decode(),
                               config.frozen_after_s)
                continue
            for worker in workers:
                self._warnings(now, "worker %s silent for %.1fs while it runs a task; its "
                               "tasks go to other workers", worker.identity.hex()[:20],
                               config.frozen_after_s)
                for key in dispatcher.take_back_from_silent(worker):
                    # a frozen worker that wakes with it not yet started hands it back
                    # unrun (it reads what waited all at once), rather than run it again
                    self._send(p.recall(worker.identity, key))
            self._dispatch(service, now)
        if send:
            for worker in quiet:
                self._send(p.worker_command(worker.identity, p.HEARTBEAT))
        return silent_due

    def heartbeat(self, now: float) -> None:
        """The heartbeat timer's part for workers: forget those silent too long, and a
        HEARTBEAT to every other one not sent a task just now."""
        dispatcher = self.dispatcher
        self._comings.flush(now)  # (what a flood of comings and goings left unsaid)
        for worker in expired_workers(dispatcher.workers.values(), now):
            self._warnings(now, "worker %s silent for %.1fs; forgetting it",
                           worker.identity.hex()[:20], dispatcher.worker_expiry_s)
            self._send(p.worker_command(worker.identity, p.DISCONNECT))
            self.forget(worker, now, lost=True)
        recent = now - self.config.heartbeat_interval_s / 2
        for identity, worker in dispatcher.workers.items():
            if worker.tasked_at < recent:  # a worker sent a task just now has heard from us
                self._send(p.worker_command(identity, p.HEARTBEAT))
