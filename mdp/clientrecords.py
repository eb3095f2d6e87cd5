"""The client core's records: a call, from submission to outcome, and a link to a broker.

Plain mutable records, changed by :class:`mdp.clientcore.ClientCore`; no sockets, no clock.
A :class:`Call` also goes to the shells (each finished call, with its outcome and the shell's
``tag``), so they live apart from the core. With them, the rules that read nothing but a
record: when a link may be pinged (:meth:`Endpoint.ping_due`), what a SUBMIT sent on it
tells (:func:`note_sent`), and the order a keyed request tries the brokers in
(:func:`home_order`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from mdp import protocol as p
from mdp.errors import UnknownService

_PENDING: Any = object()
CANCELLED: Any = object()  # the outcome of a call its caller gave up on

OnProgress = Callable[[str, "int | None", "int | None", "bytes | None"], None]
"""``on_progress(kind, num, den, data)``: kind ``"status"`` (num of den), ``"data"`` or
``"warning"`` (data)."""

__all__ = ["CANCELLED", "Call", "Endpoint", "OnProgress", "State", "body_size", "home_order",
           "note_sent"]


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

    __slots__ = ("index", "address", "link_floor", "state", "calls", "plain", "heard_at",
                 "ping_at", "sent_bytes", "sending_until", "receiving_until", "hello_sent",
                 "hello_at", "connect_deadline", "down_until", "known_dips", "instance",
                 "complained_at", "quiet_failures", "takes_cancel")

    def __init__(self, index: int, address: str, link_floor: int) -> None:
        self.index = index
        self.address = address
        self.link_floor = link_floor  # bytes per second: the slowest this link may be
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
        self.takes_cancel = False  # its WELCOME on this connection said "cancel": true
        self.complained_at = -math.inf  # the last WARNING about its connection
        self.quiet_failures = 0  # failures since then, logged at DEBUG only

    def ping_due(self, interval: float) -> float:
        """When a ping may go: ``interval`` after it was last heard from, and not before
        what is on its way either way may have arrived."""
        due = self.heard_at + interval
        if self.sending_until > due:
            due = self.sending_until
        if self.receiving_until > due:
            due = self.receiving_until
        return due


def home_order(key: bytes, addresses: Sequence[str]) -> list[int]:
    """Rendezvous hashing: the broker indexes in the order a keyed request tries them,
    highest ``sha1(key + endpoint)`` first (the same order in every client that has the
    same brokers, whatever order it lists them in)."""
    digests = [(hashlib.sha1(key + address.encode()).digest(), index)  # noqa: S324 (not security)
               for index, address in enumerate(addresses)]
    return [index for _, index in sorted(digests, reverse=True)]


def body_size(body: list[bytes]) -> int:
    return len(body[0]) if len(body) == 1 else sum(map(len, body))


def note_sent(ep: Endpoint, calls: Sequence[Call], size: int, at: float) -> None:
    """A SUBMIT of ``calls`` (``size`` bytes of bodies) went to ``ep`` at ``at``: the next
    ping waits behind it (:func:`mdp.protocol.sent_until`), and each call's reply will
    tell that it has arrived (:attr:`Call.mark`)."""
    ep.sent_bytes = mark = ep.sent_bytes + size
    ep.sending_until = p.sent_until(ep.sending_until, size, at, ep.link_floor)
    index = ep.index
    for call in calls:
        call.mark, call.mark_at = mark, index
