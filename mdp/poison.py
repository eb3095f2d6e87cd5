"""What a broker remembers of poisoned requests, so that a resend is refused at once.

A request whose workers died (or froze) while running it ``--max-worker-losses`` times is
answered ``worker_lost`` (``docs/PROTOCOL.md``, "Poisoned requests"). For
``--poison-memory`` seconds afterwards the broker refuses the same request again: the same
service and body (from any client), or the same client and request id; a request whose
count began with losses its client said it cost elsewhere only by its ids (``by_body``
False: a client's word must not get another client's request refused). No sockets, no
clock: every method takes ``now``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

MAX_REMEMBERED = 10_000  # entries; the oldest are forgotten first


def body_digest(service: bytes, body: Sequence[Any]) -> bytes:
    """A digest of a request's service and body frames (``bytes`` or ``zmq.Frame``)."""
    digest = hashlib.blake2b(service, digest_size=16)
    for frame in body:
        digest.update(len(frame).to_bytes(8, "big"))
        digest.update(frame)
    return digest.digest()


class PoisonMemory:
    """Poisoned requests by body digest and by (client, id), each for ``memory_s``."""

    __slots__ = ("memory_s", "entries")

    def __init__(self, memory_s: float) -> None:
        self.memory_s = memory_s
        # key -> (forget at, workers lost); insertion order is expiry order (empty: nothing
        # remembered, which the dispatcher asks of every request, so read it, not len())
        self.entries: OrderedDict[tuple[bytes, ...], tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def remember(self, service: bytes, body: Sequence[Any],
                 callers: Iterable[tuple[bytes, int | None]], losses: int, now: float,
                 by_body: bool = True) -> None:
        if self.memory_s <= 0:
            return
        entry = (now + self.memory_s, losses)
        keys: list[tuple[bytes, ...]] = [(b"body", body_digest(service, body))] if by_body else []
        keys += [(b"id", client, rid.to_bytes(8, "big"))
                 for client, rid in callers if rid is not None]
        for key in keys:
            self.entries.pop(key, None)
            self.entries[key] = entry
        while len(self.entries) > MAX_REMEMBERED:
            self.entries.popitem(last=False)

    def recall(self, service: bytes, body: Sequence[Any], client: bytes, rid: int | None,
               now: float) -> int | None:
        """How many workers the same request cost before, if it is remembered."""
        if not self.entries:
            return None
        self.forget_expired(now)
        found = None
        if rid is not None:
            found = self.entries.get((b"id", client, rid.to_bytes(8, "big")))
        if found is None:
            found = self.entries.get((b"body", body_digest(service, body)))
        return None if found is None else found[1]

    def forget_expired(self, now: float) -> None:
        entries = self.entries
        while entries:
            key, (until, _) = next(iter(entries.items()))
            if until > now:
                return
            del entries[key]
