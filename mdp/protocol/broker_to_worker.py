"""What a broker sends a worker: REQUEST and the DIPS tasks, recalls and handshake."""

from __future__ import annotations

from typing import Any, NamedTuple

from mdp.errors import ProtocolError
from mdp.protocol.checks import ASK, GO, BrokerAsk, BrokerGo, parse_ask_or_go
from mdp.protocol.constants import (
    DIPS_VERSION,
    DISCONNECT,
    HEARTBEAT,
    MAX_CK_BYTES,
    RECALL,
    REQUEST,
    TASK,
    TASKS,
    WELCOME,
    WORKER,
)
from mdp.protocol.meta import (
    ck_field,
    int_field,
    keys_field,
    pack_meta,
    sending_field,
    unpack_meta,
    version_field,
)


class BrokerTask(NamedTuple):
    """A task a broker gave this worker; ``dips`` for TASK, False for a standard REQUEST;
    ``ck``: the request's coalescing key, if its client gave one (a Gearman job's unique id
    through the Gearman door)."""

    key: bytes
    body: list[bytes]
    ttl_ms: int | None = None
    hold: bool = False
    dips: bool = False
    ck: bytes | None = None


class BrokerWelcome(NamedTuple):
    """A DIPS broker's answer to READY."""

    meta: dict[str, Any]


class BrokerRecall(NamedTuple):
    key: bytes


class BrokerSignal(NamedTuple):
    """HEARTBEAT or DISCONNECT from a broker; ``sending``, set by a HEARTBEAT that
    announces a task of that many bytes."""

    command: bytes
    sending: int = 0


class BrokerTasks(NamedTuple):
    """The tasks of one TASKS, in the order the broker gave them."""

    tasks: list[BrokerTask]


WorkerInbound = (BrokerTask | BrokerTasks | BrokerWelcome | BrokerRecall | BrokerSignal
                 | BrokerAsk | BrokerGo)


def to_worker(identity: bytes, key: bytes, body: list[bytes], dips: bool,
              ttl_ms: int | None = None, hold: bool = False,
              ck: bytes | None = None) -> list[bytes]:
    """A task for a worker: REQUEST, or for DIPS workers TASK with its meta."""
    if not dips:
        return [identity, b"", WORKER, REQUEST, key, b"", *body]
    meta: dict[str, Any] = {} if ttl_ms is None else {"ttl_ms": ttl_ms}
    if hold:
        meta["hold"] = True
    if ck is not None:
        meta["ck"] = ck
    return [identity, b"", WORKER, TASK, key, b"", pack_meta(meta), *body]


def to_worker_batch(identity: bytes, keys: list[bytes], bodies: list[bytes],
                    ttls_ms: list[int | None], holds: list[bool],
                    cks: list[bytes | None] | None = None) -> list[bytes]:
    """Several one-frame tasks in one TASKS, for a DIPS worker that asked for them; ``cks``
    (the tasks' coalescing keys, nil for none) only where one of them has one."""
    meta: dict[str, Any] = {"keys": keys, "ttl_ms": ttls_ms, "hold": holds}
    if cks is not None:
        meta["ck"] = cks
    return [identity, b"", WORKER, TASKS, pack_meta(meta), *bodies]


def worker_welcome(identity: bytes, meta: dict[str, Any]) -> list[bytes]:
    """WELCOME to a DIPS worker; ``meta`` holds "broker" and "instance"."""
    return [identity, b"", WORKER, WELCOME, pack_meta({"dips": DIPS_VERSION, **meta})]


def recall(identity: bytes, key: bytes) -> list[bytes]:
    return [identity, b"", WORKER, RECALL, key]


def worker_command(identity: bytes, command: bytes) -> list[bytes]:
    """HEARTBEAT or DISCONNECT for a worker."""
    return [identity, b"", WORKER, command]


def sending_to_worker(identity: bytes, size: int) -> list[bytes]:
    """The broker's HEARTBEAT that announces a task of ``size`` bytes, sent just before it
    to a worker whose READY says "announce": the broker's heartbeats wait behind it."""
    return [identity, b"", WORKER, HEARTBEAT, pack_meta({"sending": size})]


def parse_worker_inbound(frames: list[bytes]) -> WorkerInbound:
    """Decode one message a worker's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
        raise ProtocolError("message is not an MDP worker command")
    command = frames[2]
    if command == TASK:
        if len(frames) < 6 or frames[4] != b"":
            raise ProtocolError("TASK needs a key, an empty frame and a meta frame")
        meta = unpack_meta(frames[5], "TASK")
        ttl = int_field(meta, "ttl_ms", "TASK")
        return BrokerTask(frames[3], frames[6:], ttl, meta.get("hold") is True, True,
                          ck_field(meta, "TASK"))
    if command == TASKS:
        return _parse_tasks(frames)
    if command == REQUEST:
        if len(frames) < 5 or frames[4] != b"":
            raise ProtocolError("REQUEST needs a client address and an empty frame")
        return BrokerTask(frames[3], frames[5:])
    if command == HEARTBEAT and len(frames) == 4:
        return BrokerSignal(HEARTBEAT, sending_field(unpack_meta(frames[3], "HEARTBEAT"),
                                                "HEARTBEAT"))
    if command == HEARTBEAT or command == DISCONNECT:
        if len(frames) != 3:
            raise ProtocolError(f"command {command!r} has extra frames")
        return BrokerSignal(command)
    if command == RECALL:
        if len(frames) != 4:
            raise ProtocolError("RECALL takes one frame, the task key")
        return BrokerRecall(frames[3])
    if command == WELCOME:
        if len(frames) != 4:
            raise ProtocolError("WELCOME takes one meta frame")
        meta = unpack_meta(frames[3], "WELCOME")
        if version_field(meta) is None:
            raise ProtocolError(f"WELCOME speaks DIPS version {meta.get('dips')!r}")
        return BrokerWelcome(meta)
    if command == ASK or command == GO:  # (mdp.protocol.checks)
        return parse_ask_or_go(frames)
    raise ProtocolError(f"unknown broker command {command[:8]!r}")


def _parse_tasks(frames: list[bytes]) -> BrokerTasks:
    if len(frames) < 5:
        raise ProtocolError("TASKS needs a meta frame and a body")
    meta = unpack_meta(frames[3], "TASKS")
    keys = keys_field(meta, "TASKS")
    bodies = frames[4:]
    ttls, holds = meta.get("ttl_ms"), meta.get("hold")
    if len(bodies) != len(keys):
        raise ProtocolError(f"TASKS has {len(keys)} keys for {len(bodies)} bodies")
    if not isinstance(ttls, list) or len(ttls) != len(keys) or not all(
            t is None or (type(t) is int and 0 <= t < 2**63) for t in ttls):
        raise ProtocolError("TASKS meta field 'ttl_ms' must give each task an int or nil")
    if not isinstance(holds, list) or len(holds) != len(keys) or not all(
            type(h) is bool for h in holds):
        raise ProtocolError("TASKS meta field 'hold' must give each task a boolean")
    cks = meta.get("ck")
    if cks is None:
        return BrokerTasks([BrokerTask(key, [body], ttl, hold, True) for key, body, ttl, hold
                            in zip(keys, bodies, ttls, holds, strict=True)])
    if not isinstance(cks, list) or len(cks) != len(keys) or not all(
            ck is None or (type(ck) is bytes and 0 < len(ck) <= MAX_CK_BYTES) for ck in cks):
        raise ProtocolError(f"TASKS meta field 'ck' must give each task 1-{MAX_CK_BYTES} "
                            "bytes (bin) or nil")
    return BrokerTasks([BrokerTask(key, [body], ttl, hold, True, ck) for key, body, ttl, hold, ck
                        in zip(keys, bodies, ttls, holds, cks, strict=True)])
