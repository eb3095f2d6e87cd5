"""The client's decisions, without sockets (``docs/PROTOCOL.md`` section 3).

:class:`ClientCore` is fed the time and what happened (calls submitted, and the events of
:mod:`mdp.actions`: a connection up or lost, frames from broker *i*, a timer) and answers
with actions for its shell (:class:`~mdp.actions.Open`, :class:`~mdp.actions.Close`,
:class:`~mdp.actions.Send`), finished calls, progress reports and its next deadline. It
never touches a socket, so the sync :class:`mdp.client.MDPClient`, the asyncio
:class:`mdp.aio.AsyncMDPClient` and the unit tests are three drivers of the same decisions.

What it decides, in one place:

* **Which broker.** New requests go to the next usable broker in turn, so one client's
  requests, and many clients', spread over all live brokers; plain (unkeyed) requests
  started in one pass go to one broker, in one SUBMIT per service and priority (up to
  :data:`mdp.clientplacement.BATCH_MAX`), and a full window refills in steps
  (:meth:`Placement._may_refill`), so that a pipelining client wakes a broker once per step
  rather than once per answer. A request with a coalescing key goes alone to the key's
  *home* broker: the first usable one in the order of ``sha1(key + endpoint)``, highest
  first, so that every client with the same broker list sends identical requests to the
  same broker, and fails over to the same next one.
* **Handshake without a wait.** A new connection starts with HELLO; the first request on it
  goes right behind as a standard MDPC01 request, its id and deadline carried in HELLO's
  ``first`` (a connection that came up idle sends a bare HELLO, and a HELLO with
  ``first`` again for the request it carries). Until WELCOME the connection carries that
  one request only (Lazy Pirate: one at a time, ``attempt_timeout``); WELCOME makes it a
  DIPS connection (SUBMIT, PING); a standard reply before any WELCOME makes it a standard
  one.
* **Liveness.** A DIPS broker quiet for ``ping_interval`` while it holds requests is pinged;
  one that does not answer within ``broker_timeout`` is closed and its requests go to the
  other brokers; if its WELCOME offered CANCEL, it is first told their ids, so that,
  should it wake (it was frozen, say), it runs none of them. Ids it says it lost are
  sent again; a new ``instance`` (it restarted) sends everything outstanding on it again.
  A long request on a live broker is never resent.
* **Matching.** A RESULT is matched by id (ids are unique for the client's life), a standard
  reply to the one plain request of its connection; anything else is dropped.
* **Deadlines, retries.** A call's clock starts when it is first started (within the
  window); it fails with :class:`~mdp.errors.Timeout` when the clock runs out or when it
  would be sent more than ``1 + retries`` times. ``unknown_service`` is tried on every
  other broker at once (whichever has the service answers); it reaches the caller when
  every broker has refused it or cannot be reached. ``worker_lost`` (a poisoned request)
  is never sent again; a request a broker told LOSSES of (it cost workers there) carries
  the highest count told when it is sent again, so that the next broker counts on.
* **Waiting.** With no broker reachable, the next deadline is the next reconnection or the
  call's own deadline, never "now": a shell waits in the kernel. A broker's connection
  failures are logged at WARNING at most once per ``COMPLAIN_EVERY_S``.

ClientCore reads the events and the timers. Its state, and the bookkeeping of where each
call is (the window, the queues, placing and batching, endings and failover), are in its
base class :class:`mdp.clientplacement.Placement`; the records of a call and of a broker
link in :mod:`mdp.clientrecords`; what the shells check and encode before they submit, in
:mod:`mdp.clientcodec`.
"""

from __future__ import annotations

import heapq
import logging
import math
from typing import Any

from mdp import protocol as p
from mdp.actions import Action, Event, Lost, Opened, Received, Send, Tick
from mdp.clientplacement import REFILL_WAIT_S, Placement
from mdp.clientrecords import CANCELLED, Call, Endpoint, OnProgress, State, body_size, note_sent
from mdp.errors import (
    BadRequest,
    ClientClosed,
    ProtocolError,
    RequestError,
    UnknownService,
)

log = logging.getLogger(__name__)

COMPLAIN_EVERY_S = 5.0  # a broker's connection failures: one WARNING per this long at most

__all__ = ["ClientClosed", "ClientCore"]


class ClientCore(Placement):
    """Every decision of a DIPS client; see the module docstring (its state and bookkeeping
    are in :class:`~mdp.clientplacement.Placement`)."""

    # --- calls -----------------------------------------------------------------------------

    def submit(self, service: bytes, body: list[bytes], now: float, *, timeout: float,
               priority: int = 0, raw: bool = False, tag: Any = None,
               key: bytes | None = None, on_progress: OnProgress | None = None) -> Call:
        """A new call; it is started (and sent, if a broker is usable) within the window.

        ``key``: a coalescing key (1-64 bytes); ``on_progress``: what to call with the
        call's progress reports (the shell calls it, see :meth:`take_progress`)."""
        if key is not None and not 0 < len(key) <= p.MAX_CK_BYTES:
            raise BadRequest(f"a coalescing key is 1-{p.MAX_CK_BYTES} bytes, "
                             f"got {len(key)}", "key")
        call = Call(next(self._rids), service, body, timeout, priority, raw, tag, key,
                    on_progress)
        self.pending[call.rid] = call
        self._backlog.append(call)
        self._fill(now)
        return call

    def cancel(self, call: Call, now: float) -> None:
        """The caller gave up: forget the call (a late reply to it will be dropped)."""
        if call.done:
            return
        self._end(call, CANCELLED, now)
        self.finished.pop()  # nobody waits for a cancelled call

    def close(self, now: float) -> None:
        """End every outstanding call with ClientClosed and close every connection."""
        for call in list(self.pending.values()):
            self._end(call, ClientClosed("the client was closed"), now)
        self._backlog.clear()
        self._ready.clear()
        self._routed.clear()
        for ep in self.endpoints:
            if ep.state is not State.DOWN:
                self._close(ep, 0.0)

    # --- events ----------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> None:
        """Feed one event (:mod:`mdp.actions`) that happened at ``now``."""
        match event:
            case Received(link, frames):
                self.received(link, frames, now)
            case Opened(link):
                self.opened(link, now)
            case Lost(link):
                self.lost(link, now)
            case Tick():
                self.tick(now)

    def opened(self, index: int, now: float) -> None:
        """The connection to broker ``index`` is up."""
        ep = self.endpoints[index]
        if ep.state is not State.CONNECTING:
            return
        if ep.quiet_failures or ep.complained_at > -math.inf:
            log.info("broker %s is reachable again", ep.address)
            ep.complained_at, ep.quiet_failures = -math.inf, 0
        self._set_state(ep, State.PROBING, now)
        self._fill(now)
        if not ep.hello_sent:  # no request went with it: a bare HELLO
            self._hello(ep, None, now)

    def lost(self, index: int, now: float) -> None:
        """The connection to broker ``index`` failed (a send failed, or it could not be
        opened at all)."""
        ep = self.endpoints[index]
        if ep.state is State.DOWN:
            return
        if ep.state is State.CONNECTING:
            self._complain(ep, now, "cannot connect to broker %s", ep.address)
        else:
            self._complain(ep, now, "broker %s: connection lost; failing over", ep.address)
        self._fail(ep, now)
        self._fill(now)  # its requests go to the other brokers now, not at the next tick

    def received(self, index: int, frames: list[bytes], now: float) -> None:
        """One message from broker ``index``. Call :meth:`tick` after a batch of them."""
        ep = self.endpoints[index]
        if ep.state is State.DOWN or ep.state is State.CONNECTING:
            return
        ep.heard_at = now
        ep.ping_at = None
        try:
            message = p.parse_client_inbound(frames)
        except ProtocolError as exc:
            log.warning("dropped a message from broker %s: %s", ep.address, exc)
            return
        match message:
            case p.Result(_, body, rid):
                ep.receiving_until = 0.0  # an announced reply is the next RESULT: this one
                self._on_reply(ep, rid, body, now)
            case p.Results(_, rids, bodies):
                ep.receiving_until = 0.0
                on_reply = self._on_reply
                for rid, one in zip(rids, bodies, strict=True):
                    on_reply(ep, rid, [one], now)
            case p.Pong():
                self._on_pong(ep, message, now)
            case p.Welcome():
                self._on_welcome(ep, message, now)
            case p.RequestProgress():
                self._on_progress(ep, message)
            case p.RequestLosses(_, rid, losses):
                self._on_losses(ep, rid, losses)

    def tick(self, now: float) -> None:
        """Timers (deadlines, pings, dead brokers), then start and send what may go."""
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            call = heapq.heappop(heap)[2]
            if not call.done:
                self._end(call, self._timeout(call), now)
        for ep in self.endpoints:
            if ep.state is not State.DOWN:
                self._check(ep, now)
        self._fill(now)

    #: Start and send what may go now, after what arrived (calls ended, refused, lost, a
    #: broker speaking DIPS): :meth:`tick` without its look at the clock, for a shell that
    #: reads a socket on its readiness and runs :meth:`tick` at :meth:`next_deadline`.
    fill = Placement._fill

    # --- the lone call: a shell's fast path ----------------------------------------------

    def lone_start(self) -> tuple[int, Endpoint] | None:
        """A lone call may skip the core: nothing else is outstanding, queued or waiting
        to be sent, and the broker whose turn it is speaks DIPS. Then the call's id and its
        broker (the round-robin moves on, as for any call); None otherwise (the shell
        submits it as usual). The shell sends the SUBMIT itself and waits for the RESULT; it
        tells the core :meth:`lone_heard` when it came, or :meth:`adopt` for anything else,
        which makes the call an ordinary one, sent once to that broker at its start."""
        if self.pending or self.actions:
            return None
        endpoints = self.endpoints
        ep = endpoints[self._next]
        if ep.state is not State.DIPS:
            return None
        self._next = (ep.index + 1) % len(endpoints)
        return next(self._rids), ep

    @staticmethod
    def lone_heard(ep: Endpoint, now: float) -> None:
        """The lone call's RESULT came from ``ep`` (a sign of life; nothing outstanding)."""
        ep.heard_at = now
        ep.ping_at = None

    def adopt(self, rid: int, service: bytes, body: list[bytes], started: float, *,
              timeout: float, priority: int, ep: Endpoint, raw: bool = False) -> Call:
        """The lone call ``rid`` (from :meth:`lone_start`), sent to ``ep`` at ``started``,
        becomes an ordinary call: as if submitted then and placed on ``ep``."""
        call = Call(rid, service, body, timeout, priority, raw)
        call.deadline = started + timeout
        heapq.heappush(self._deadlines, (call.deadline, rid, call))
        self._active += 1
        self.pending[rid] = call
        call.sends = 1
        if not ep.calls:
            ep.heard_at = started
        note_sent(ep, (call,), body_size(body), started)
        ep.calls[rid] = call
        call.at.append(ep)
        call.sent_at = started
        return call

    # --- what the shell reads ----------------------------------------------------------

    @property
    def has_actions(self) -> bool:
        return bool(self.actions or self._batches)

    def take_actions(self) -> list[Action]:
        if self._batches:
            self._send_batches()
        actions, self.actions = self.actions, []
        return actions

    def take_finished(self) -> list[Call]:
        finished, self.finished = self.finished, []
        return finished

    def take_progress(self) -> list[tuple[Call, p.RequestProgress]]:
        """Progress reports that arrived for calls with ``on_progress``, in order; the
        shell calls each call's ``on_progress`` with them."""
        progress, self.progress = self.progress, []
        return progress

    def next_deadline(self) -> float:
        """When :meth:`tick` must run next (``math.inf``: only when something arrives)."""
        deadline = self._freed_at + REFILL_WAIT_S if self._backlog else math.inf
        heap = self._deadlines
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if heap and heap[0][0] < deadline:
            deadline = heap[0][0]
        for ep in self.endpoints:
            state = ep.state
            if state is State.DIPS:
                if ep.calls:
                    at = (ep.ping_due(self.ping_interval)
                          if ep.ping_at is None else ep.ping_at + self.broker_timeout)
                    deadline = min(deadline, at)
            elif state is State.CONNECTING:
                deadline = min(deadline, ep.connect_deadline)
            elif state is State.DOWN:
                if self.pending and ep.down_until < deadline:
                    deadline = ep.down_until
            else:
                if ep.plain is not None:
                    deadline = min(deadline, ep.plain.sent_at + self.attempt_timeout)
                if state is State.PROBING and ep.known_dips:
                    deadline = min(deadline, ep.hello_at + self.broker_timeout)
        return deadline

    # --- inbound -------------------------------------------------------------------------

    def _on_reply(self, ep: Endpoint, rid: int | None, body: list[bytes], now: float) -> None:
        if rid is not None:
            call = self.pending.get(rid)
        else:
            call = ep.plain
            if ep.state is State.PROBING:  # a reply before any WELCOME: a standard broker
                log.info("broker %s does not speak DIPS; using plain 7/MDP", ep.address)
                self._set_state(ep, State.STANDARD, now)
        if call is None:
            log.debug("dropped a stale reply from %s", ep.address)
            return
        if call.mark_at == ep.index and ep.sending_until > now:
            # every byte sent before its request has arrived: what may still be on its way
            # is what was sent after it
            left = now + (ep.sent_bytes - call.mark) / ep.link_floor
            if left < ep.sending_until:
                ep.sending_until = left
        if call.raw:
            self._end(call, body, now, by=ep)
            return
        try:
            outcome = p.decode_reply(body)
        except UnknownService as exc:
            self._refused(call, ep, exc, now)
            return
        except (RequestError, ProtocolError) as exc:
            outcome = exc  # worker_lost among them: a poisoned request is not sent again
        self._end(call, outcome, now, by=ep)

    def _refused(self, call: Call, ep: Endpoint, exc: UnknownService, now: float) -> None:
        """``ep`` has no worker for the call's service: every broker that has not said so
        is asked at once (see :meth:`_fan_out`); the caller hears it once all have."""
        if ep not in call.at:
            return  # a refusal from a broker it has since left
        call.refused_by.add(ep.index)
        if call.refusal is None:
            call.refusal = exc
        self._drop(call, ep, now, answered=True)
        if call.at:
            return  # still asked elsewhere: wait for that answer
        if len(call.refused_by) >= len(self.endpoints):
            self._end(call, exc, now, by=ep)
        else:
            self._queue(call, first=True)

    def _on_pong(self, ep: Endpoint, pong: p.Pong, now: float) -> None:
        if ep.state is not State.DIPS:
            return
        if pong.sending:  # a big reply follows: no ping until it may have arrived
            size = min(pong.sending, self.options.max_reply_bytes)  # (none can be larger)
            ep.receiving_until = p.sent_until(ep.receiving_until, size, now, ep.link_floor)
        if pong.instance and ep.instance and pong.instance != ep.instance:
            # a new process behind the same connection (libzmq reconnected it): what it
            # holds, it got from us since, and runs; ``lost`` names the rest exactly
            log.info("broker %s restarted", ep.address)
            ep.instance = pong.instance
            self._hello(ep, None, now)  # (it knows nothing of what this client takes)
        lost = [rid for rid in pong.lost if rid in ep.calls]
        if lost:
            log.info("broker %s lost %d request(s); sending them again", ep.address,
                     len(lost))
        for rid in reversed(lost):  # oldest ends up first
            self._retry(ep.calls[rid], ep, now)

    def _on_welcome(self, ep: Endpoint, welcome: p.Welcome, now: float) -> None:
        if ep.state is State.PROBING:
            self._set_state(ep, State.DIPS, now)
            instance = welcome.meta.get("instance")
            ep.instance = instance if isinstance(instance, str) else None
        if ep.state is State.DIPS:  # (also the answer to a HELLO sent to a restarted one)
            ep.takes_cancel = welcome.meta.get("cancel") is True

    def _on_progress(self, ep: Endpoint, progress: p.RequestProgress) -> None:
        call = self.pending.get(progress.rid)
        if call is not None and call.on_progress is not None and ep in call.at:
            self.progress.append((call, progress))

    def _on_losses(self, ep: Endpoint, rid: int, losses: int) -> None:
        """A broker lost a worker with call ``rid`` (LOSSES): the highest count told is
        kept, and carried wherever the call is sent again (a broker counts on from it).
        Kept from any broker: a loss is a loss wherever it was counted."""
        if rid not in self.pending or losses <= self.losses.get(rid, 0):
            return
        known = self.losses
        if len(known) >= 64:  # (calls that ended meanwhile: rids are never reused)
            self.losses = known = {r: n for r, n in known.items() if r in self.pending}
        known[rid] = losses
        log.info("broker %s lost a worker running request %d (%d worker(s) lost with it); "
                 "sent again, it carries the count", ep.address, rid, losses)

    # --- timers ----------------------------------------------------------------------------

    def _check(self, ep: Endpoint, now: float) -> None:
        state = ep.state
        if state is State.DIPS:
            if not ep.calls:
                return
            if ep.ping_at is None:
                if now >= ep.ping_due(self.ping_interval):
                    self._act(Send(ep.index, p.client_ping(list(ep.calls))))
                    ep.ping_at = now
            elif now >= ep.ping_at + self.broker_timeout:
                self._complain(ep, now, "broker %s did not answer a ping in %.2fs; failing "
                               "over", ep.address, self.broker_timeout)
                self._fail(ep, now, give_up=True)
        elif state is State.CONNECTING:
            if now >= ep.connect_deadline:
                self._complain(ep, now, "cannot connect to broker %s", ep.address)
                self._fail(ep, now)
        else:
            if ep.plain is not None and now >= ep.plain.sent_at + self.attempt_timeout:
                self._complain(ep, now, "no reply from %s in %.1fs", ep.address,
                               self.attempt_timeout)
                self._fail(ep, now)
            elif state is State.PROBING and ep.known_dips and \
                    now >= ep.hello_at + self.broker_timeout:
                self._complain(ep, now, "broker %s did not answer HELLO in %.2fs; failing "
                               "over", ep.address, self.broker_timeout)
                ep.known_dips = False  # next time, wait for it as for a standard broker
                self._fail(ep, now)

    def _complain(self, ep: Endpoint, now: float, message: str, *args: object) -> None:
        """A failure of ``ep``'s connection: a WARNING at most once per COMPLAIN_EVERY_S
        for each broker (an outage must not flood the caller's log), DEBUG otherwise."""
        if now - ep.complained_at >= COMPLAIN_EVERY_S:
            if ep.quiet_failures:
                message += " (%d more failure(s) since the last warning)"
                args = (*args, ep.quiet_failures)
            log.warning(message, *args)
            ep.complained_at, ep.quiet_failures = now, 0
        else:
            ep.quiet_failures += 1
            log.debug(message, *args)

