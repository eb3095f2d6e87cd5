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
  ``BATCH_MAX``), and a full window refills in steps (:meth:`ClientCore._may_refill`), so
  that a pipelining client wakes a broker once per step rather than once per answer. A
  request with a coalescing
  key goes alone to the key's *home* broker: the first usable one in the order of
  ``sha1(key + endpoint)``, highest first, so that every client with the same broker list
  sends identical requests to the same broker, and fails over to the same next one.
* **Handshake without a wait.** A new connection starts with HELLO; the first request on it
  goes right behind as a standard MDPC01 request, its id and deadline carried in HELLO's
  ``first``. Until WELCOME the connection carries that one request only (Lazy Pirate: one
  at a time, ``attempt_timeout``); WELCOME makes it a DIPS connection (SUBMIT, PING); a
  standard reply before any WELCOME makes it a standard one.
* **Liveness.** A DIPS broker quiet for ``ping_interval`` while it holds requests is pinged;
  one that does not answer within ``broker_timeout`` is closed and its requests go to the
  other brokers. Ids it says it lost are sent again; a new ``instance`` (it restarted)
  sends everything outstanding on it again. A long request on a live broker is never resent.
* **Matching.** A RESULT is matched by id (ids are unique for the client's life), a standard
  reply to the one plain request of its connection; anything else is dropped.
* **Deadlines, retries.** A call's clock starts when it is first started (within the
  window); it fails with :class:`~mdp.errors.Timeout` when the clock runs out or when it
  would be sent more than ``1 + retries`` times. ``unknown_service`` is tried on every
  other broker at once (whichever has the service answers); it reaches the caller when
  every broker has refused it or cannot be reached. ``worker_lost`` (a poisoned request)
  is never sent again.
* **Waiting.** With no broker reachable, the next deadline is the next reconnection or the
  call's own deadline, never "now": a shell waits in the kernel. A broker's connection
  failures are logged at WARNING at most once per ``COMPLAIN_EVERY_S``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from mdp import protocol as p
from mdp.actions import Action, Close, Event, Lost, Open, Opened, Received, Send, Tick
from mdp.errors import (
    BadRequest,
    ClientClosed,
    ProtocolError,
    RequestError,
    Timeout,
    UnknownService,
)
from mdp.options import ClientOptions, check_endpoints, resolve

log = logging.getLogger(__name__)

BATCH_MAX = 128  # requests per SUBMIT (a broker's --max-frames is 300 by default)
# A full window refills in steps of window // REFILL_PART calls (8 for send_many's 64 in
# flight): the places freed are taken together, in one SUBMIT to one broker, rather than one
# message (and one wake-up of a broker) per answer that freed one. Measured on the real job
# (cards through two brokers, scripts/bench --only realjob): 0.55-0.57 of in-process before
# this and the per-SUBMIT round-robin, 0.61-0.65 after.
REFILL_PART = 8
REFILL_WAIT_S = 0.01  # places freed below a step start anyway once the first is this old
COMPLAIN_EVERY_S = 5.0  # a broker's connection failures: one WARNING per this long at most

_PENDING: Any = object()
CANCELLED: Any = object()  # the outcome of a call its caller gave up on

OnProgress = Callable[[str, "int | None", "int | None", "bytes | None"], None]
"""``on_progress(kind, num, den, data)``: kind ``"status"`` (num of den), ``"data"`` or
``"warning"`` (data)."""

__all__ = ["CANCELLED", "Call", "ClientClosed", "ClientCore", "OnProgress", "State",
           "home_order"]


class State(Enum):
    """Where one broker connection stands."""

    DOWN = "down"  # no socket; may be opened again at ``down_until``
    CONNECTING = "connecting"  # socket opened, transport not up yet
    PROBING = "probing"  # up, HELLO sent, no WELCOME yet: one plain request at a time
    DIPS = "dips"  # WELCOME came: SUBMIT, PING
    STANDARD = "standard"  # a standard 7/MDP broker: Lazy Pirate, one request at a time


class Call:
    """One request, from submission to outcome."""

    __slots__ = ("rid", "service", "body", "raw", "priority", "timeout", "deadline",
                 "sends", "refused_by", "refusal", "sent_at", "at", "outcome", "done", "tag",
                 "key", "on_progress", "mark", "mark_at")

    def __init__(self, rid: int, service: bytes, body: list[bytes], timeout: float,
                 priority: int = 0, raw: bool = False, tag: Any = None,
                 key: bytes | None = None, on_progress: OnProgress | None = None) -> None:
        self.rid = rid
        self.service = service
        self.body = body
        self.raw = raw  # hand back the reply frames undecoded (MMI)
        self.priority = priority
        self.timeout = timeout
        self.deadline = math.inf  # set when the call is started
        self.sends = 0
        self.refused_by: set[int] = set()  # brokers that answered unknown_service
        self.refusal: UnknownService | None = None  # the first such answer
        self.sent_at = 0.0
        self.at: list[Endpoint] = []  # the brokers it is outstanding on (one, but for
        # an unknown_service tried on every other broker at once)
        self.outcome: Any = _PENDING
        self.done = False  # the outcome is set (ClientCore._end, the one place)
        self.tag = tag  # the shell's own (an index, a future)
        self.key = key  # coalescing key: identical requests are worked once
        self.on_progress = on_progress
        # the bytes sent on broker ``mark_at``'s connection up to its SUBMIT, the last time
        # it was sent: its reply from there proves that they have all arrived
        self.mark = 0
        self.mark_at = -1

    @property
    def endpoint(self) -> Endpoint | None:
        """The broker it is outstanding on (the first, when several)."""
        return self.at[0] if self.at else None

    def __repr__(self) -> str:
        return f"Call(rid={self.rid}, service={self.service!r}, sends={self.sends})"


class Endpoint:
    """One broker and the state of our connection to it."""

    __slots__ = ("index", "address", "state", "calls", "plain", "heard_at", "ping_at",
                 "sent_bytes", "sending_until", "receiving_until", "hello_sent", "hello_at",
                 "connect_deadline", "down_until", "known_dips", "instance", "complained_at",
                 "quiet_failures")

    def __init__(self, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.state = State.DOWN
        self.calls: dict[int, Call] = {}  # outstanding on this connection, by id
        self.plain: Call | None = None  # the one standard (MDPC01) request in flight
        self.heard_at = 0.0
        self.ping_at: float | None = None
        # a ping queues behind the requests sent before it, and its PONG behind the big
        # reply the broker announced: none goes before they may have gone at the slowest
        # link allowed (p.sent_until; else a busy link looks like a dead broker). A reply
        # shortens the requests' time to what was sent after its own request (see
        # Call.mark); an announced reply's time ends when it comes (it follows its notice).
        self.sent_bytes = 0  # request bytes sent on this connection
        self.sending_until = 0.0
        self.receiving_until = 0.0
        self.hello_sent = False
        self.hello_at = 0.0
        self.connect_deadline = 0.0
        self.down_until = 0.0
        self.known_dips = False  # it sent WELCOME on an earlier connection
        self.instance: str | None = None
        self.complained_at = -math.inf  # the last WARNING about its connection
        self.quiet_failures = 0  # failures since then, logged at DEBUG only

    def ping_due(self, interval: float) -> float:
        """When a ping may go: ``interval`` after it was last heard from, and not before
        what is on its way either way may have arrived."""
        due = self.heard_at + interval
        for until in (self.sending_until, self.receiving_until):
            if until > due:
                due = until
        return due


def home_order(key: bytes, addresses: Sequence[str]) -> list[int]:
    """Rendezvous hashing: the broker indexes in the order a keyed request tries them,
    highest ``sha1(key + endpoint)`` first (the same order in every client that has the
    same brokers, whatever order it lists them in)."""
    digests = [(hashlib.sha1(key + address.encode()).digest(), index)  # noqa: S324 (not security)
               for index, address in enumerate(addresses)]
    return [index for _, index in sorted(digests, reverse=True)]


class ClientCore:
    """Every decision of a DIPS client; see the module docstring."""

    def __init__(self, brokers: Sequence[str], options: ClientOptions | None = None, *,
                 start: int = 0, **overrides: Any) -> None:
        """``options`` (:class:`mdp.options.ClientOptions`), with keyword ``overrides``;
        ``start``: the broker the round-robin begins at."""
        self.brokers = check_endpoints(brokers)
        self.options = options = resolve(options, overrides)
        self.retries = options.retries
        self.attempt_timeout = options.attempt_timeout
        self.ping_interval = options.ping_interval
        self.broker_timeout = options.broker_timeout
        self.connect_timeout = options.connect_timeout
        self.down_for = options.down_for
        self.window: float = math.inf  # calls started (clock running) at most at once
        self.endpoints = [Endpoint(i, address) for i, address in enumerate(self.brokers)]
        self.actions: list[Action] = []
        self.finished: list[Call] = []
        self.progress: list[tuple[Call, p.Progress]] = []  # for calls that take it
        self.pending: dict[int, Call] = {}  # every unfinished call, by id
        self._next = start % len(self.endpoints)  # round-robin pointer
        self._rids = itertools.count(1)
        self._backlog: deque[Call] = deque()  # submitted, not started (window full)
        self._ready: deque[Call] = deque()  # started, waiting for the next broker
        self._routed: deque[Call] = deque()  # started, waiting for a broker of their own
        # requests placed in this pass of _fill, by (broker, service, priority)
        self._batches: dict[tuple[int, bytes, int], list[tuple[Call, int]]] = {}
        self._active = 0  # started and unfinished
        self._full = False  # the window filled up with calls left in the backlog
        self._freed_at = math.inf  # since then, when a place first went free (below a step)
        self._deadlines: list[tuple[float, int, Call]] = []  # heap of started calls
        self._homes: dict[bytes, list[int]] = {}  # home_order by key, a few remembered

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
            case p.Reply(_, body, rid):
                ep.receiving_until = 0.0  # an announced reply is the next RESULT: this one
                self._on_reply(ep, rid, body, now)
            case p.Replies(_, rids, bodies):
                ep.receiving_until = 0.0
                on_reply = self._on_reply
                for rid, one in zip(rids, bodies, strict=True):
                    on_reply(ep, rid, [one], now)
            case p.Pong():
                self._on_pong(ep, message, now)
            case p.Welcome():
                self._on_welcome(ep, message, now)
            case p.Progress():
                self._on_progress(ep, message)

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
        _sent(ep, (call,), _size(body), started)
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

    def take_progress(self) -> list[tuple[Call, p.Progress]]:
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
            left = now + (ep.sent_bytes - call.mark) / p.SEND_FLOOR_BPS
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
            ep.receiving_until = p.sent_until(ep.receiving_until, size, now)
        if pong.instance and ep.instance and pong.instance != ep.instance:
            log.info("broker %s restarted; sending its %d requests again",
                     ep.address, len(ep.calls))
            ep.instance = pong.instance
            lost = sorted(ep.calls)
        else:
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

    def _on_progress(self, ep: Endpoint, progress: p.Progress) -> None:
        call = self.pending.get(progress.rid)
        if call is not None and call.on_progress is not None and ep in call.at:
            self.progress.append((call, progress))

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
                self._fail(ep, now)
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

    # --- sending ---------------------------------------------------------------------------

    def _fill(self, now: float) -> None:
        """Start calls the window allows and send each to its broker(s)."""
        backlog = self._backlog
        if backlog and self._may_refill(now):
            window = self.window
            while backlog and self._active < window:
                call = backlog.popleft()
                if not call.done:
                    call.deadline = now + call.timeout
                    heapq.heappush(self._deadlines, (call.deadline, call.rid, call))
                    self._active += 1
                    self._queue(call)
            self._full = bool(backlog) and self._active >= window
            self._freed_at = math.inf
        ready = self._ready
        ep: Endpoint | None = None
        placed = 0  # on ep in this pass
        while ready:
            call = ready[0]
            if call.done:
                ready.popleft()
                continue
            if ep is None or ep.state is not State.DIPS or placed == BATCH_MAX:
                # the calls placed in one pass go to one DIPS broker together, a SUBMIT's
                # worth at a time (the round-robin moves on per SUBMIT, not per call): one
                # message and one wake-up of one broker rather than one of each broker
                ep = self._next_usable()
                placed = 0
            if ep is None:
                break  # no broker can take a plain call now, so none of those behind
            placed += 1
            ready.popleft()
            call.sends += 1
            # alone: nothing else goes now, nor waits for the shell to send it
            self._place(call, ep, now,
                        alone=not ready and not self._batches and not self.actions)
        if self._routed:
            self._fill_routed(now)
        if self.pending:
            for ep in self.endpoints:
                if ep.state is State.DOWN and ep.down_until <= now:
                    self._open(ep, now)

    def _may_refill(self, now: float) -> bool:
        """Whether calls of the backlog may start now. A window that filled up refills in
        steps: once a step's worth of places is free, once there are places for every call
        left, or once the first place freed is REFILL_WAIT_S old (a window held by long
        calls is not left short for as long as they run); the first time a place is seen
        free, that time is noted (``next_deadline`` wakes the shell for it)."""
        window = self.window
        if not self._full or window == math.inf:
            return True
        free = window - self._active
        if free >= window // REFILL_PART or free >= len(self._backlog):
            return True
        if free <= 0:
            return False
        if self._freed_at == math.inf:
            self._freed_at = now
        return now >= self._freed_at + REFILL_WAIT_S

    def _fill_routed(self, now: float) -> None:
        """Calls with a broker of their own: keyed ones (their home), refused ones (every
        broker that has not refused them)."""
        routed, self._routed = self._routed, deque()
        for call in routed:
            if call.done:
                continue
            targets = self._fan_out(call, now) if call.refused_by else self._home(call, now)
            if targets is None:
                self._routed.append(call)
            elif targets:
                call.sends += 1
                for ep in targets:
                    self._place(call, ep, now)

    def _queue(self, call: Call, first: bool = False) -> None:
        """A started call waits for a broker (``first``: ahead of the others)."""
        queue = self._routed if call.key is not None or call.refused_by else self._ready
        if first:
            queue.appendleft(call)
        else:
            queue.append(call)

    @staticmethod
    def _usable(ep: Endpoint) -> bool:
        state = ep.state
        return state is State.DIPS or (
            (state is State.PROBING or state is State.STANDARD) and not ep.calls)

    def _next_usable(self) -> Endpoint | None:
        endpoints = self.endpoints
        count = len(endpoints)
        start = self._next
        for step in range(count):
            ep = endpoints[(start + step) % count]
            if self._usable(ep):
                self._next = (ep.index + 1) % count
                return ep
        return None

    def _home(self, call: Call, now: float) -> list[Endpoint] | None:
        """The key's home broker: the first in its order that is usable, passing over
        those that failed lately; None while the first such one is still connecting."""
        key = call.key
        assert key is not None  # noqa: S101 (our own call; not peer input)
        order = self._homes.get(key)
        if order is None:
            if len(self._homes) >= 1024:
                self._homes.clear()
            order = self._homes[key] = home_order(key, self.brokers)
        for index in order:
            ep = self.endpoints[index]
            if self._usable(ep):
                return [ep]
            if not (ep.state is State.DOWN and ep.down_until > now):
                return None  # on its way up (or busy with its one plain request): wait
        return None

    def _fan_out(self, call: Call, now: float) -> list[Endpoint] | None:
        """A call that some broker refused (unknown_service) goes to every other usable
        broker at once; with none left that could answer, the refusal is the outcome."""
        targets = [ep for ep in self.endpoints
                   if ep.index not in call.refused_by and self._usable(ep)]
        if targets:
            return targets
        unreachable = all(ep.state is State.DOWN and ep.down_until > now
                          for ep in self.endpoints if ep.index not in call.refused_by)
        if unreachable:
            self._end(call, call.refusal, now)
            return []
        return None

    def _place(self, call: Call, ep: Endpoint, now: float, alone: bool = True) -> None:
        """Send (or gather) the call to ``ep``; ``alone``: no other call goes in this pass
        of _fill, so it is sent as it is (batching is for backlogs)."""
        ttl_ms = max(1, int((call.deadline - now) * 1000))
        frames: list[bytes] | None = None
        if ep.state is State.DIPS:
            if len(call.body) == 1 and call.key is None and not alone:
                # gathered, and sent as one SUBMIT per broker, service and priority when
                # this pass of _fill ends (several requests per message when several go)
                self._batches.setdefault((ep.index, call.service, call.priority),
                                         []).append((call, ttl_ms))
            else:
                frames = p.client_submit(call.service, call.rid, ttl_ms, call.body,
                                         call.priority, call.key)
        else:
            if not ep.hello_sent:
                self._hello(ep, p.First(call.rid, ttl_ms, call.priority, call.key), now)
            frames = p.client_request(call.service, call.body)
            ep.plain = call
        if not ep.calls:
            ep.heard_at = now  # the quiet time before a ping runs from here
        ep.calls[call.rid] = call
        call.at.append(ep)
        call.sent_at = now
        if frames is not None:
            self._act(Send(ep.index, frames))
            _sent(ep, (call,), _size(call.body), now)

    def _act(self, action: Action) -> None:
        """Queue an action; requests gathered for a batch go out before it (wire order)."""
        if self._batches:
            self._send_batches()
        self.actions.append(action)

    def _send_batches(self) -> None:
        """One SUBMIT per gathered group, at most ``BATCH_MAX`` requests each."""
        batches, self._batches = self._batches, {}
        endpoints = self.endpoints
        for (index, service, priority), gathered in batches.items():
            calls = endpoints[index].calls
            group = [(call, ttl) for call, ttl in gathered  # not since failed elsewhere
                     if calls.get(call.rid) is call]
            for start in range(0, len(group), BATCH_MAX):
                part = group[start:start + BATCH_MAX]
                if len(part) == 1:
                    call, ttl_ms = part[0]
                    frames = p.client_submit(service, call.rid, ttl_ms, call.body, priority)
                else:  # one deadline for the batch: the earliest of its requests
                    frames = p.client_submit_batch(
                        service, [call.rid for call, _ in part], min(t for _, t in part),
                        [call.body[0] for call, _ in part], priority)
                self.actions.append(Send(index, frames))
                calls_sent = [call for call, _ in part]
                _sent(endpoints[index], calls_sent, sum(_size(c.body) for c in calls_sent),
                      part[0][0].sent_at)

    def _hello(self, ep: Endpoint, first: p.First | None, now: float) -> None:
        self._act(Send(ep.index, p.client_hello(first, batch=True, progress=True)))
        ep.hello_sent = True
        ep.hello_at = now

    # --- endings ---------------------------------------------------------------------------

    def _end(self, call: Call, outcome: Any, now: float, by: Endpoint | None = None) -> None:
        """The call is over; ``by``: the broker whose answer ended it (a plain request
        left unanswered elsewhere closes that connection)."""
        for ep in list(call.at):
            self._drop(call, ep, now, answered=ep is by)
        call.outcome = outcome
        call.done = True
        del self.pending[call.rid]
        if call.deadline != math.inf:
            self._active -= 1
        self.finished.append(call)

    def _drop(self, call: Call, ep: Endpoint, now: float, answered: bool) -> None:
        """Take a call off one connection; an unanswered plain request closes it."""
        call.at.remove(ep)
        del ep.calls[call.rid]
        if ep.plain is call:
            ep.plain = None
            if not answered and ep.state is not State.DIPS:
                # Lazy Pirate: a late reply on this connection must not meet a new request
                self._close(ep, now)

    def _retry(self, call: Call, ep: Endpoint, now: float) -> None:
        """``ep`` no longer holds the call: send it again elsewhere (or there), within the
        retries budget, unless another broker still has it."""
        call.at.remove(ep)
        del ep.calls[call.rid]
        if ep.plain is call:
            ep.plain = None
        self._again(call, now)

    def _again(self, call: Call, now: float) -> None:
        if call.at:
            return  # still outstanding on another broker
        if call.sends > self.retries:
            self._end(call, self._timeout(call, spent=True), now)
        else:
            self._queue(call, first=True)

    def _fail(self, ep: Endpoint, now: float) -> None:
        """Drop a broker's connection for ``down_for``; its requests go to the others."""
        calls = sorted(ep.calls.values(), key=lambda c: c.rid, reverse=True)
        for call in calls:
            call.at.remove(ep)
        ep.calls = {}
        ep.plain = None
        self._close(ep, now + self.down_for)
        if self._next == ep.index:
            self._next = (ep.index + 1) % len(self.endpoints)
        for call in calls:
            self._again(call, now)

    def _open(self, ep: Endpoint, now: float) -> None:
        self._set_state(ep, State.CONNECTING, now)
        self._act(Open(ep.index))

    def _close(self, ep: Endpoint, down_until: float) -> None:
        """Close a connection that holds no call (callers move its calls first)."""
        self._set_state(ep, State.DOWN, down_until)
        self._act(Close(ep.index))

    def _set_state(self, ep: Endpoint, state: State, at: float) -> None:
        """The one place a connection changes state, with what each state starts from
        (``at`` is the time, or for DOWN when it may be opened again)."""
        ep.state = state
        match state:
            case State.DOWN:
                ep.down_until = at
                ep.ping_at = None
                # what was on its way on that connection went with it
                ep.sending_until = ep.receiving_until = 0.0
                ep.sent_bytes = 0
                ep.hello_sent = False
                ep.instance = None
            case State.CONNECTING:
                ep.connect_deadline = at + self.connect_timeout
            case State.PROBING:
                ep.heard_at = at
                ep.hello_sent = False
            case State.DIPS:
                ep.known_dips = True
            case State.STANDARD:
                pass

    def _timeout(self, call: Call, spent: bool = False) -> Timeout:
        """The call's Timeout: its deadline passed, or (``spent``) it was sent as many times
        as ``retries`` allows and each time its broker failed or lost it."""
        service = call.service.decode("ascii", "replace")
        brokers = ", ".join(self.brokers)
        if call.sends == 0:
            return Timeout(f"no broker could be reached within {call.timeout:g}s for "
                           f"{service!r}; brokers tried: {brokers}", self.brokers)
        if spent:
            return Timeout(f"no reply for {service!r}: it was sent {call.sends} time(s) "
                           f"(retries={self.retries}), and each time its broker failed or "
                           f"lost it; brokers tried: {brokers}", self.brokers)
        return Timeout(f"no reply for {service!r} within {call.timeout:g}s after "
                       f"{call.sends} send(s); brokers tried: {brokers}", self.brokers)


# --- shared by both shells: the caller's input, checked before anything is sent ---------

_SERVICES: dict[str, bytes] = {}  # names already checked (a caller uses a few, often)


def service_name(service: str) -> bytes:
    name = _SERVICES.get(service)
    if name is None:
        name = service.encode()
        if not p.valid_service(name):
            raise BadRequest(f"invalid service name {service!r}", "service")
        if len(_SERVICES) < 1024:
            _SERVICES[service] = name
    return name


def encode_request(request: dict[str, Any], max_bytes: int) -> bytes:
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a map, got {type(request).__name__}")
    try:
        body = p.pack(request)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"request cannot be encoded as msgpack: {exc}") from exc
    if len(body) > max_bytes:
        raise BadRequest(f"request is {len(body)} bytes; the limit is {max_bytes}")
    return body


def _size(body: list[bytes]) -> int:
    return len(body[0]) if len(body) == 1 else sum(map(len, body))


def _sent(ep: Endpoint, calls: Sequence[Call], size: int, at: float) -> None:
    """A SUBMIT of ``calls`` (``size`` bytes of bodies) went to ``ep`` at ``at``: the next
    ping waits behind it (:func:`mdp.protocol.sent_until`), and each call's reply will
    tell that it has arrived (:attr:`Call.mark`)."""
    ep.sent_bytes = mark = ep.sent_bytes + size
    ep.sending_until = p.sent_until(ep.sending_until, size, at)
    index = ep.index
    for call in calls:
        call.mark, call.mark_at = mark, index


def check_frame(frame: bytes, max_bytes: int) -> bytes:
    """An already-encoded request frame (``send_frame``), checked as far as a client can
    without decoding it: bytes, within the size limit (the worker checks the map)."""
    if not isinstance(frame, bytes):
        raise BadRequest(f"a request frame is bytes, got {type(frame).__name__}")
    if len(frame) > max_bytes:
        raise BadRequest(f"request is {len(frame)} bytes; the limit is {max_bytes}")
    return frame


def decode_status(reply: list[bytes]) -> dict[str, Any]:
    """The map of an ``mmi.status`` reply."""
    status = p.unpack(reply[0]) if len(reply) == 1 else None
    if not isinstance(status, dict):
        raise ProtocolError("mmi.status reply is not a map (not a DIPS broker?)")
    return status
