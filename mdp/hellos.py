"""What a broker keeps of its DIPS clients' HELLOs (``docs/PROTOCOL.md`` section 3): the
flags of a client that takes RESULTs of several replies (``BATCH``), PROGRESS
(``PROGRESS``) or LOSSES (``LOSSES``), and the ``first`` that gives the next MDPC01
request of its connection an id, a deadline, a priority, a key and a count of losses.
Both maps are bounded, the oldest entry forgotten first: clients that never send their
first request, or a flood of connections, cost no more than that.

Apart from :mod:`mdp.brokercore` because it is the handshake's bookkeeping, not a decision
about a request: the core owns the two maps (it reads them per request and per reply, and
forgets a client whose connection is gone) and notes each HELLO with :func:`note_hello`.
"""

from __future__ import annotations

from mdp import protocol as p

MAX_FIRSTS = 10_000  # HELLOs whose first request has not arrived yet
MAX_HELLOS = 100_000  # clients remembered as taking batched RESULTs, PROGRESS or LOSSES
BATCH = 1  # HELLO flags: the client takes RESULTs of several replies
PROGRESS = 2  # ... and PROGRESS
LOSSES = 4  # ... and LOSSES (the workers a request of its cost, "Poisoned requests")


def note_hello(hellos: dict[bytes, int], firsts: dict[bytes, p.First], identity: bytes,
               msg: p.ClientHello) -> None:
    """A DIPS client's HELLO: its flags into ``hellos`` (a client with none is forgotten
    there), and its ``first``, for its next MDPC01 request, into ``firsts``."""
    flags = (BATCH if msg.batch else 0) | (PROGRESS if msg.progress else 0) | (
        LOSSES if msg.losses else 0)
    if flags:
        if identity not in hellos and len(hellos) >= MAX_HELLOS:
            hellos.pop(next(iter(hellos)))
        hellos[identity] = flags
    else:
        hellos.pop(identity, None)
    if msg.first is not None:
        if len(firsts) >= MAX_FIRSTS:  # clients that never sent their request
            firsts.pop(next(iter(firsts)))
        firsts[identity] = msg.first
