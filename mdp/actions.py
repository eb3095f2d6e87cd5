"""The one vocabulary of the three cores: what a shell feeds a core, what a core asks back.

The broker's, the worker's and the client's decisions live in socket-free cores
(``mdp.brokercore``, ``mdp.workercore``, ``mdp.clientcore``), driven by thin I/O shells, the
way h11's ``Connection`` is driven by whoever owns the socket. A core is fed *events* with
the time they happened and answers with *actions*, carried out by its shell in order.

A *link* is one socket of the shell: a client's or a worker's connection to broker number
``link`` (its index in the configured list); the broker has one, its ROUTER (link 0), and
its frames start with the peer's routing identity.

Shells dispatch on actions with ``match``::

    for action in core.take_actions():
        match action:
            case Send(link, frames): ...
            case Open(link): ...
            case Close(link, linger_ms): ...
"""

from __future__ import annotations

from dataclasses import dataclass

# --- actions: a core asks its shell -------------------------------------------------------


@dataclass(slots=True)
class Send:
    """Send ``frames`` as one message on ``link``. (Not frozen, unlike the others: the
    most made, and a frozen dataclass costs twice as much to make.)"""

    link: int
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Open:
    """Open a new socket for ``link`` and connect it; the shell answers :class:`Opened`
    when the connection is up (or at once, where it cannot tell)."""

    link: int


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``link``'s socket, letting queued messages go out for ``linger_ms``."""

    link: int
    linger_ms: int = 0


Action = Send | Open | Close

# --- events: a shell tells its core ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """A message arrived on ``link``; ``user`` is the sender's CURVE key (z85), if any."""

    link: int
    frames: list[bytes]
    user: str = ""


@dataclass(frozen=True, slots=True)
class Opened:
    """The connection of ``link`` is up."""

    link: int


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection of ``link`` dropped, or a send on it failed; for the broker,
    ``peer`` names the identity a send could not reach."""

    link: int
    peer: bytes = b""


@dataclass(frozen=True, slots=True)
class Tick:
    """A core's deadline came (or the shell woke for another reason): run its timers."""


Event = Received | Opened | Lost | Tick
