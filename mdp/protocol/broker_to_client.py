"""What a broker sends a client: MDPC01 replies and the DIPS results, progress and PONGs."""

from __future__ import annotations

from typing import Any, NamedTuple

from mdp.errors import ProtocolError
from mdp.protocol.constants import (
    CLIENT,
    CPROGRESS,
    CWELCOME,
    DIPS_CLIENT,
    DIPS_VERSION,
    LOSSES,
    PONG,
    RESULT,
)
from mdp.protocol.meta import (
    ids_field,
    int_field,
    losses_field,
    pack_meta,
    progress_fields,
    sending_field,
    unpack_meta,
    version_field,
)


class Result(NamedTuple):
    """A reply a client received: a DIPS RESULT, or a standard 7/MDP reply (``rid`` None).
    (What a worker sends, :func:`mdp.protocol.reply`, reaches the broker as a
    :class:`mdp.protocol.WorkerReply`.)"""

    service: bytes
    body: list[bytes]
    rid: int | None


class Results(NamedTuple):
    """A RESULT carrying several replies: ``bodies[i]`` (one frame) answers ``rids[i]``."""

    service: bytes
    rids: list[int]
    bodies: list[bytes]


class Pong(NamedTuple):
    """The ids a DIPS broker says it does not hold, and which broker process it is;
    ``sending``: the bytes of a reply that follows (0: none announced)."""

    lost: list[int]
    instance: str
    sending: int = 0


class Welcome(NamedTuple):
    """A DIPS broker's answer to HELLO."""

    meta: dict[str, Any]


class RequestProgress(NamedTuple):
    """Progress of request ``rid`` (see :class:`mdp.protocol.WorkerProgress`)."""

    service: bytes
    rid: int
    kind: str
    num: int | None = None
    den: int | None = None
    data: bytes | None = None


class RequestLosses(NamedTuple):
    """Request ``rid`` has cost ``losses`` workers at the broker that says so (LOSSES): a
    client that sends it to another broker carries the count (``docs/PROTOCOL.md``,
    "Poisoned requests")."""

    service: bytes
    rid: int
    losses: int


ClientInbound = Result | Results | Pong | Welcome | RequestProgress | RequestLosses


def to_client(identity: bytes, service: bytes, body: list[bytes], rid: int | None) -> list[bytes]:
    """A reply to a client: MDPC01 for standard requests, RESULT for DIPS ones."""
    if rid is None:
        return [identity, b"", CLIENT, service, *body]
    return [identity, b"", DIPS_CLIENT, RESULT, service, pack_meta({"id": rid}), *body]


def to_client_batch(identity: bytes, service: bytes, rids: list[int],
                    bodies: list[bytes]) -> list[bytes]:
    """One RESULT carrying several one-frame replies (to clients that asked in HELLO)."""
    return [identity, b"", DIPS_CLIENT, RESULT, service, pack_meta({"ids": rids}), *bodies]


def to_client_progress(identity: bytes, service: bytes, rid: int, kind: str,
                       num: int | None = None, den: int | None = None,
                       data: bytes | None = None) -> list[bytes]:
    """PROGRESS of request ``rid`` for a client that asked for it in HELLO."""
    meta: dict[str, Any] = {"id": rid, "kind": kind}
    if num is not None:
        meta["num"], meta["den"] = num, den
    frames = [identity, b"", DIPS_CLIENT, CPROGRESS, service, pack_meta(meta)]
    if data is not None:
        frames.append(data)
    return frames


def to_client_losses(identity: bytes, service: bytes, rid: int, losses: int) -> list[bytes]:
    """LOSSES of request ``rid`` for a client that asked for them in HELLO: sent when a
    worker is lost with it and it is not given up (never for an ordinary request)."""
    return [identity, b"", DIPS_CLIENT, LOSSES, service, pack_meta({"id": rid, "losses": losses})]


def client_welcome(identity: bytes, meta: dict[str, Any]) -> list[bytes]:
    """WELCOME to a DIPS client; ``meta`` holds "broker" and "instance"."""
    return [identity, b"", DIPS_CLIENT, CWELCOME, pack_meta({"dips": DIPS_VERSION, **meta})]


def pong(identity: bytes, lost: list[int], instance: str, sending: int = 0) -> list[bytes]:
    """PONG to a DIPS client: the ids asked about that this broker does not hold. Sent
    unasked, with ``sending``, just before a reply of that many bytes (BIG_BODY or more):
    the client's next PONG would wait behind it."""
    meta: dict[str, Any] = {"lost": lost, "instance": instance}
    if sending:
        meta["sending"] = sending
    return [identity, b"", DIPS_CLIENT, PONG, pack_meta(meta)]


def parse_client_inbound(frames: list[bytes]) -> ClientInbound:
    """Decode one message a client's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"":
        raise ProtocolError("reply does not start with an empty delimiter and a header")
    header = frames[1]
    if header == CLIENT:
        return Result(frames[2], frames[3:], None)
    if header != DIPS_CLIENT or len(frames) < 4:
        raise ProtocolError(f"malformed reply from broker (header {header[:16]!r})")
    command = frames[2]
    if command == RESULT:
        if len(frames) < 5:
            raise ProtocolError("RESULT needs a service and a meta frame")
        meta = unpack_meta(frames[4], "RESULT")
        if "ids" in meta:
            rids = ids_field(meta, "ids", "RESULT")
            if not rids or len(rids) != len(frames) - 5:
                raise ProtocolError(f"RESULT has {len(rids)} ids for {len(frames) - 5} bodies")
            return Results(frames[3], rids, frames[5:])
        rid = int_field(meta, "id", "RESULT")
        if rid is None:
            raise ProtocolError("RESULT meta has no 'id'")
        return Result(frames[3], frames[5:], rid)
    if command == CPROGRESS:
        return _parse_client_progress(frames)
    if command == LOSSES:
        return _parse_client_losses(frames)
    if len(frames) != 4:
        raise ProtocolError(f"DIPS broker command {command[:8]!r} takes one meta frame")
    meta = unpack_meta(frames[3], "broker")
    if command == PONG:
        instance = meta.get("instance", "")
        return Pong(ids_field(meta, "lost", "PONG"), instance if isinstance(instance, str) else "",
                    sending_field(meta, "PONG"))
    if command == CWELCOME:
        if version_field(meta) is None:
            raise ProtocolError(f"WELCOME speaks DIPS version {meta.get('dips')!r}")
        return Welcome(meta)
    raise ProtocolError(f"unknown DIPS broker command {command[:8]!r}")


def _parse_client_progress(frames: list[bytes]) -> RequestProgress:
    if len(frames) not in (5, 6):
        raise ProtocolError("PROGRESS needs a service, a meta frame and at most one data frame")
    meta = unpack_meta(frames[4], "PROGRESS")
    rid = int_field(meta, "id", "PROGRESS")
    if rid is None:
        raise ProtocolError("PROGRESS meta has no 'id'")
    kind, num, den = progress_fields(meta, "PROGRESS")
    data = frames[5] if len(frames) == 6 else None
    if (kind == "status") != (data is None):
        raise ProtocolError(f"PROGRESS of kind {kind!r} "
                            + ("takes no data frame" if data is not None else "needs a data frame"))
    return RequestProgress(frames[3], rid, kind, num, den, data)


def _parse_client_losses(frames: list[bytes]) -> RequestLosses:
    if len(frames) != 5:
        raise ProtocolError("LOSSES takes a service and a meta frame")
    meta = unpack_meta(frames[4], "LOSSES")
    rid = int_field(meta, "id", "LOSSES")
    if rid is None or "losses" not in meta:
        raise ProtocolError("LOSSES meta needs 'id' and 'losses'")
    return RequestLosses(frames[3], rid, losses_field(meta, "LOSSES", low=1))
