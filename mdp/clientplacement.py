"""Where a client core's calls are, and how they get there (``docs/PROTOCOL.md`` section 3).

:class:`Placement` holds the state of :class:`mdp.clientcore.ClientCore` and keeps its
bookkeeping: the window and its refill steps, the queues of started calls waiting for a
broker, which broker each goes to (round-robin, its key's home, every broker that has not
refused it), the SUBMITs gathered in one pass, and the one way a call ends or goes again and
a connection opens, closes or fails. What brokers say and what the timers find is read by
ClientCore, which builds on it; apart, each reads on its own. It is a base class rather than
an attribute of the core because its methods run per request and use the core's attributes
directly.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from typing import Any

from mdp import protocol as p
from mdp.actions import Action, Close, Open, Send
from mdp.clientrecords import Call, Endpoint, State, body_size, home_order, note_sent
from mdp.errors import Timeout
from mdp.options import ClientOptions, check_endpoints, resolve

BATCH_MAX = 128  # requests per SUBMIT (a broker's --max-frames is 300 by default)
# A full window refills in steps of window // REFILL_PART calls (8 for send_many's 64 in
# flight): the places freed are taken together, in one SUBMIT to one broker, rather than one
# message (and one wake-up of a broker) per answer that freed one. Measured on the real job
# (cards through two brokers, scripts/bench --only realjob): 0.55-0.57 of in-process before
# this and the per-SUBMIT round-robin, 0.61-0.65 after.
REFILL_PART = 8
REFILL_WAIT_S = 0.01  # places freed below a step start anyway once the first is this old


class Placement:
    """The state of a client core and where its calls are; see the module docstring. It
    never calls a method of :class:`~mdp.clientcore.ClientCore`: calls go one way, down."""

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
        self.endpoints = [Endpoint(i, address, options.link_floor)
                          for i, address in enumerate(self.brokers)]
        self.actions: list[Action] = []
        self.finished: list[Call] = []
        self.progress: list[tuple[Call, p.RequestProgress]] = []  # for calls that take it
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
        # the workers a call has cost, by id, as a broker told (LOSSES: only calls that cost
        # one are here); a call sent again carries its count (docs/PROTOCOL.md, "Poisoned
        # requests"). Entries of calls that ended are pruned as new ones come.
        self.losses: dict[int, int] = {}

    # --- sending ---------------------------------------------------------------------------

    def _fill(self, now: float) -> None:
        """Start calls the window allows and send each to its broker(s)."""
        backlog = self._backlog
        if backlog and (not self._full or self._may_refill(now)):
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
        broker that has not refused them), and ones sent again that carry the workers they
        cost (the next usable broker, each alone in its SUBMIT)."""
        routed, self._routed = self._routed, deque()
        for call in routed:
            if call.done:
                continue
            if call.refused_by:
                targets = self._fan_out(call, now)
            elif call.key is not None:
                targets = self._home(call, now)
            else:  # sent again, carrying the workers it cost (see _again)
                ep = self._next_usable()
                targets = None if ep is None else [ep]
            if targets is None:
                self._routed.append(call)
            elif targets:
                call.sends += 1
                losses = self.losses.get(call.rid, 0) if self.losses else 0
                for ep in targets:
                    self._place(call, ep, now, losses=losses)

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
            if ep.state is State.DIPS or self._usable(ep):
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

    def _place(self, call: Call, ep: Endpoint, now: float, alone: bool = True,
               losses: int = 0) -> None:
        """Send (or gather) the call to ``ep``; ``alone``: no other call goes in this pass
        of _fill, so it is sent as it is (batching is for backlogs); ``losses``: the
        workers it cost, which it carries (only a call sent again that a broker told
        LOSSES of, always alone)."""
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
                                         call.priority, call.key, losses)
        else:
            if ep.state is State.PROBING:
                # HELLO gives the request its id, even when a bare HELLO went first (the
                # connection came up before this call): a DIPS broker then holds it by id,
                # and a ping does not find it "lost" and send it a second time
                self._hello(ep, p.First(call.rid, ttl_ms, call.priority, call.key, losses),
                            now)
            frames = p.client_request(call.service, call.body)
            ep.plain = call
        if not ep.calls:
            ep.heard_at = now  # the quiet time before a ping runs from here
        ep.calls[call.rid] = call
        call.at.append(ep)
        call.sent_at = now
        if frames is not None:
            self._act(Send(ep.index, frames))
            note_sent(ep, (call,), body_size(call.body), now)

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
                note_sent(endpoints[index], calls_sent, sum(body_size(c.body) for c in calls_sent),
                      part[0][0].sent_at)

    def _hello(self, ep: Endpoint, first: p.First | None, now: float) -> None:
        self._act(Send(ep.index, p.client_hello(first, batch=True, progress=True,
                                                losses=True)))
        if not ep.hello_sent:  # the broker owes its WELCOME from the first HELLO on
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
        elif self.losses and call.rid in self.losses:
            self._routed.appendleft(call)  # alone, with the workers it cost (_fill_routed)
        else:
            self._queue(call, first=True)

    def _fail(self, ep: Endpoint, now: float, give_up: bool = False) -> None:
        """Drop a broker's connection for ``down_for``; its requests go to the others.

        ``give_up``: the connection is still there (the broker stopped answering), so a
        broker that takes CANCEL is told, before the connection closes, which requests it
        must not run should it wake (it reads the CANCEL, which waits in its socket behind
        them, before it gives any of them to a worker)."""
        calls = sorted(ep.calls.values(), key=lambda c: c.rid, reverse=True)
        if give_up and calls and ep.takes_cancel and ep.state is State.DIPS:
            self._act(Send(ep.index, p.client_cancel([call.rid for call in reversed(calls)])))
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
                ep.takes_cancel = False
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
