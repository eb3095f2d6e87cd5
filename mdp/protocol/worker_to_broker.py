"""What a worker sends a broker: the 7/MDP worker commands and the DIPS worker extensions.

The broker reaches this parser through ``parse_broker_inbound``
(``mdp.protocol.broker_inbound``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mdp.errors import ProtocolError
from mdp.protocol.checks import CHECK, check_key
from mdp.protocol.constants import (
    BOUNCE,
    BUSY,
    DIPS_VERSION,
    DISCONNECT,
    FREE,
    HEARTBEAT,
    PROGRESS,
    READY,
    REPLIES,
    REPLY,
    WORKER,
)
from mdp.protocol.meta import (
    keys_field,
    pack_meta,
    progress_fields,
    sending_field,
    unpack_meta,
    version_field,
)


class WorkerReady(NamedTuple):
    """A worker announcing its service; ``meta`` is set for DIPS workers only."""

    service: bytes
    meta: dict[str, Any] | None


class WorkerReply(NamedTuple):
    """A worker's reply to the task whose key it echoes."""

    key: bytes
    body: list[bytes]


class WorkerReplies(NamedTuple):
    """Several one-frame replies in one REPLIES, in the order the worker finished them."""

    keys: list[bytes]
    bodies: list[bytes]


class WorkerProgress(NamedTuple):
    """Progress of the task ``key``: a status (``num`` of ``den``), or data or a warning
    (``data``) for the caller while the task runs."""

    key: bytes
    kind: str
    num: int | None = None
    den: int | None = None
    data: bytes | None = None


class WorkerSignal(NamedTuple):
    """HEARTBEAT, DISCONNECT, BUSY, FREE, BOUNCE or CHECK from a worker.

    ``key`` is the task of a BOUNCE or CHECK; ``draining`` is set by a BUSY that means "leaving";
    ``sending``, by a HEARTBEAT that announces a reply of that many bytes.
    """

    command: bytes
    key: bytes = b""
    draining: bool = False
    sending: int = 0


def ready(service: bytes, meta: dict[str, Any] | None) -> list[bytes]:
    """READY; with ``meta`` (a DIPS worker) it carries the meta frame and the version."""
    frames = [b"", WORKER, READY, service]
    if meta is not None:
        frames.append(pack_meta({"dips": DIPS_VERSION, **meta}))
    return frames


def reply(key: bytes, body: list[bytes]) -> list[bytes]:
    return [b"", WORKER, REPLY, key, b"", *body]


def replies(keys: list[bytes], bodies: list[bytes]) -> list[bytes]:
    """Several one-frame replies in one REPLIES, to a broker whose WELCOME offered them."""
    return [b"", WORKER, REPLIES, pack_meta({"keys": keys}), *bodies]


def progress(key: bytes, kind: str, num: int | None = None, den: int | None = None,
             data: bytes | None = None) -> list[bytes]:
    """PROGRESS of task ``key``, to a broker whose WELCOME offered it."""
    meta: dict[str, Any] = {"kind": kind}
    if num is not None:
        meta["num"], meta["den"] = num, den
    frames = [b"", WORKER, PROGRESS, key, pack_meta(meta)]
    if data is not None:
        frames.append(data)
    return frames


def bounce(key: bytes) -> list[bytes]:
    return [b"", WORKER, BOUNCE, key]


def busy(draining: bool = False) -> list[bytes]:
    return [b"", WORKER, BUSY, pack_meta({"draining": True} if draining else {})]


def signal(command: bytes) -> list[bytes]:
    """HEARTBEAT, DISCONNECT or FREE from a worker."""
    return [b"", WORKER, command]


def sending(size: int) -> list[bytes]:
    """A worker's HEARTBEAT that announces a reply of ``size`` bytes, sent just before it
    to a broker whose WELCOME says "announce": the answer to the broker's next probe would
    wait behind it."""
    return [b"", WORKER, HEARTBEAT, pack_meta({"sending": size})]


def parse_worker_command(
    command: bytes, rest: list[bytes]
) -> WorkerReady | WorkerReply | WorkerReplies | WorkerProgress | WorkerSignal:
    if command == REPLY:
        # 7/MDP: key, "", body. The ZeroMQ guide's PHP worker leaves the empty frame out;
        # a non-empty second frame can only be such a body, so that form is accepted too.
        if len(rest) < 2:
            raise ProtocolError("REPLY needs a client address and a body")
        body = rest[2:] if rest[1] == b"" else rest[1:]
        return WorkerReply(rest[0], body)
    if command == REPLIES:
        if not rest:
            raise ProtocolError("REPLIES needs a meta frame")
        keys = keys_field(unpack_meta(rest[0], "REPLIES"), "REPLIES")
        if len(keys) != len(rest) - 1:
            raise ProtocolError(f"REPLIES has {len(keys)} keys for {len(rest) - 1} bodies")
        return WorkerReplies(keys, rest[1:])
    if command == HEARTBEAT and len(rest) == 1:
        return WorkerSignal(HEARTBEAT, sending=sending_field(unpack_meta(rest[0], "HEARTBEAT"),
                                                        "HEARTBEAT"))
    if command == HEARTBEAT or command == FREE:
        if rest:
            raise ProtocolError(f"worker command {command!r} takes no frames")
        return WorkerSignal(command)
    if command == READY:
        if not rest:
            raise ProtocolError("READY has no service name")
        return WorkerReady(rest[0], _dips_ready_meta(rest[1:]))
    if command == DISCONNECT:
        return WorkerSignal(DISCONNECT)  # extra frames are ignored: leaving is leaving
    if command == BOUNCE:
        if len(rest) != 1:
            raise ProtocolError("BOUNCE takes one frame, the task key")
        return WorkerSignal(BOUNCE, rest[0])
    if command == PROGRESS:
        return _parse_progress(rest)
    if command == BUSY:
        if len(rest) != 1:
            raise ProtocolError("BUSY takes one meta frame")
        meta = unpack_meta(rest[0], "BUSY")
        return WorkerSignal(BUSY, draining=meta.get("draining") is True)
    if command == CHECK:  # (mdp.protocol.checks)
        return WorkerSignal(CHECK, check_key(rest))
    raise ProtocolError(f"unknown worker command {command[:8]!r}")


def _parse_progress(rest: list[bytes]) -> WorkerProgress:
    if len(rest) not in (2, 3):
        raise ProtocolError("PROGRESS takes a task key, a meta frame and at most one data frame")
    kind, num, den = progress_fields(unpack_meta(rest[1], "PROGRESS"), "PROGRESS")
    data = rest[2] if len(rest) == 3 else None
    if (kind == "status") != (data is None):
        raise ProtocolError(f"PROGRESS of kind {kind!r} "
                            + ("takes no data frame" if data is not None else "needs a data frame"))
    return WorkerProgress(rest[0], kind, num, den, data)


def _dips_ready_meta(extra: list[bytes]) -> dict[str, Any] | None:
    """A DIPS worker's READY metadata; None (a standard worker) for anything else.

    Frames after the service name mean nothing in 7/MDP; another implementation may send
    some, and its worker is served as a standard one.
    """
    if len(extra) != 1:
        return None
    try:
        meta = unpack_meta(extra[0], "READY")
    except ProtocolError:
        return None
    return meta if version_field(meta) is not None else None
