"""The wire: Majordomo 0.1 (ZeroMQ RFC 7/MDP), 8/MMI, and the DIPS extensions (version 2).

``docs/PROTOCOL.md`` is the specification, frame by frame; this module is its one
implementation: one parse function per direction, one build function per message.

Standard frames, as a ROUTER sees them after the peer identity::

    client request    "", MDPC01, service, body...
    reply to client   "", MDPC01, service, body...
    worker commands   "", MDPW01, command, ...

The DIPS extensions travel only between peers that have shown they speak them, so a
standard client, worker or broker never sees them. Their metadata has one encoding: a
single msgpack map frame (``meta``) at a fixed place in the command. The handshakes carry
the extension version (``"dips": 2``):

* worker: READY carries a meta frame after the service name (a standard broker ignores
  it); a DIPS broker answers WELCOME with its own meta. Then the broker sends TASK (a
  request with meta) instead of REQUEST, may RECALL a task it gave, and the worker may send
  BUSY, FREE and BOUNCE.
* client (header ``DIPC02``): HELLO with meta; a DIPS broker answers WELCOME, a standard
  one drops it. HELLO may carry the id and deadline of the standard MDPC01 request that
  follows it on the same connection, so the first request never waits for the handshake.
  Then SUBMIT / RESULT (requests and replies with ids) and PING / PONG (which ids the
  broker still holds).

Bodies are msgpack. A request is a map; a reply is ``{"result": value}`` or
``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgpack

from mdp.body import (  # noqa: F401  (re-exported: the body codec was part of this module)
    DEFAULT_LIMITS,
    BodyLimits,
    as_bytes,
    decode_reply,
    decode_request,
    error_body,
    error_code,
    is_error_body,
    pack,
    raw_result_body,
    result_body,
    unpack,
)
from mdp.errors import ProtocolError

DIPS_VERSION = 2  # the extension version both handshakes carry as "dips"

# A message on a connection waits behind the bytes sent before it: a ping, probe or
# heartbeat behind a big body is not late until those bytes may have gone over the slowest
# link a body is allowed (else a busy link looks like a dead or frozen peer); see
# docs/PROTOCOL.md, "Big messages on slow links".
SEND_FLOOR_BPS = 10_000_000  # 80 Mbit/s
BIG_BODY = 1 << 20  # a body this long is announced to its receiver and never batched
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the default largest message of brokers and workers
MAX_ANNOUNCED = 1 << 40  # the most a PONG or HEARTBEAT may announce (a sanity bound)

CLIENT = b"MDPC01"
WORKER = b"MDPW01"
DIPS_CLIENT = b"DIPC02"

# 7/MDP worker commands.
READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
# DIPS worker extensions (only between a DIPS worker and a DIPS broker).
BUSY = b"\x06"  # worker -> broker, meta: busy elsewhere (or draining); send no new task
FREE = b"\x07"  # worker -> broker: available again
BOUNCE = b"\x08"  # worker -> broker, key: this task back, unworked
WELCOME = b"\x09"  # broker -> worker, meta: I speak the DIPS extensions
TASK = b"\x0a"  # broker -> worker: key, "", meta, body...
RECALL = b"\x0b"  # broker -> worker, key: give this task back if it has not started
TASKS = b"\x0c"  # broker -> worker: meta {keys, ttl_ms, hold}, one body frame per task
REPLIES = b"\x0d"  # worker -> broker: meta {keys}, one body frame per reply
PROGRESS = b"\x0e"  # worker -> broker: key, meta {kind, num?, den?}, [data]
MAX_BATCH = 64  # tasks in one TASKS, replies in one REPLIES
# DIPS client extensions (header DIPC02).
HELLO = b"\x01"  # client -> broker, meta
CWELCOME = b"\x02"  # broker -> client, meta
SUBMIT = b"\x03"  # client -> broker: service, meta, body...
RESULT = b"\x04"  # broker -> client: service, meta, body...
PING = b"\x05"  # client -> broker, meta {"ids"}
PONG = b"\x06"  # broker -> client, meta {"lost", "instance", "sending"?}
CPROGRESS = b"\x07"  # broker -> client: service, meta {id, kind, num?, den?}, [data]

PROGRESS_KINDS = ("status", "data", "warning")  # Gearman's WORK_STATUS, WORK_DATA, WORK_WARNING
MAX_CK_BYTES = 64  # a coalescing key

MMI_PREFIX = b"mmi."
MMI_SERVICE = b"mmi.service"
MMI_STATUS = b"mmi.status"

PRIORITIES = (-1, 0, 1)  # low, normal, high

_SERVICE_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def sent_until(until: float, size: int, at: float) -> float:
    """When ``size`` bytes sent at ``at``, behind what was due to have gone by ``until``,
    may have gone at SEND_FLOOR_BPS."""
    return (until if until > at else at) + size / SEND_FLOOR_BPS


def valid_service(name: bytes) -> bool:
    """Service names are 1-100 characters of letters, digits, '.', '_' and '-'."""
    return _SERVICE_NAME.fullmatch(name) is not None


# --- metadata -------------------------------------------------------------------------------


def pack_meta(meta: dict[str, Any]) -> bytes:
    """A meta frame: one msgpack map."""
    return pack(meta)


def unpack_meta(frame: bytes, what: str) -> dict[str, Any]:
    """Decode a meta frame; ProtocolError naming the command for anything but a map."""
    try:
        meta = msgpack.unpackb(frame, raw=False, strict_map_key=True,
                               max_array_len=100_000, max_map_len=64)
    except Exception as exc:
        raise ProtocolError(f"{what} meta is not valid msgpack: {type(exc).__name__}") from exc
    if not isinstance(meta, dict):
        raise ProtocolError(f"{what} meta is a {type(meta).__name__}, not a map")
    return meta


def _int_field(meta: dict[str, Any], key: str, what: str, default: int | None = None,
               low: int = 0, high: int = 2**63 - 1) -> int | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{what} meta field {key!r} is not an integer in [{low}, {high}]")
    return value


def _priority(meta: dict[str, Any], what: str) -> int:
    """A request priority, clamped to low (-1) .. high (1)."""
    pri = _int_field(meta, "pri", what, 0, -(2**31), 2**31)
    return 0 if pri is None else max(-1, min(1, pri))


def _ids(meta: dict[str, Any], key: str, what: str) -> list[int]:
    ids = meta.get(key, [])
    if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ProtocolError(f"{what} meta field {key!r} is not a list of request ids")
    return ids


def _keys(meta: dict[str, Any], what: str) -> list[bytes]:
    """The ``keys`` of a TASKS or REPLIES: 1 to MAX_BATCH task keys (bytes)."""
    keys = meta.get("keys")
    if (not isinstance(keys, list) or not 0 < len(keys) <= MAX_BATCH
            or not all(isinstance(k, bytes) and 0 < len(k) <= 255 for k in keys)):
        raise ProtocolError(f"{what} meta field 'keys' must list 1-{MAX_BATCH} task keys")
    return keys


def _version(meta: dict[str, Any]) -> int | None:
    """The DIPS version a handshake meta claims; None when it claims none we speak."""
    version = meta.get("dips")
    if isinstance(version, int) and not isinstance(version, bool) and version >= DIPS_VERSION:
        return DIPS_VERSION
    return None


# --- broker side: what arrives on the ROUTER --------------------------------------------


class ClientRequest(NamedTuple):
    """A request from a client; ``rid`` and ``ttl_ms`` are set for DIPS clients only."""

    service: bytes
    body: list[bytes]
    rid: int | None = None
    ttl_ms: int | None = None
    priority: int = 0
    ck: bytes | None = None  # coalescing key: identical requests are worked once


class ClientBatch(NamedTuple):
    """Several DIPS requests of one SUBMIT: one body frame each, in the order of ``rids``."""

    service: bytes
    rids: list[int]
    bodies: list[bytes]
    ttl_ms: int
    priority: int = 0


class First(NamedTuple):
    """What HELLO says of the MDPC01 request that follows it on the same connection."""

    rid: int
    ttl_ms: int
    priority: int = 0
    ck: bytes | None = None


class ClientHello(NamedTuple):
    """A DIPS client opening a connection; ``first`` applies to the next MDPC01 request.

    ``batch``: the client accepts RESULTs that carry several replies; ``progress``: it
    accepts PROGRESS.
    """

    first: First | None
    batch: bool = False
    progress: bool = False


class ClientPing(NamedTuple):
    """A DIPS client asking which of its requests the broker holds."""

    rids: list[int]


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
    """HEARTBEAT, DISCONNECT, BUSY, FREE or BOUNCE from a worker.

    ``key`` is the task of a BOUNCE; ``draining`` is set by a BUSY that means "leaving";
    ``sending``, by a HEARTBEAT that announces a reply of that many bytes.
    """

    command: bytes
    key: bytes = b""
    draining: bool = False
    sending: int = 0


BrokerInbound = (ClientRequest | ClientBatch | ClientHello | ClientPing | WorkerReady
                 | WorkerReply | WorkerReplies | WorkerProgress | WorkerSignal)


def parse_broker_inbound(frames: list[bytes]) -> BrokerInbound:
    """Decode one message received on the broker's ROUTER, identity already removed."""
    if len(frames) < 3 or frames[0] != b"":
        raise ProtocolError("message does not start with an empty delimiter and a header")
    header = frames[1]
    if header == CLIENT:
        return ClientRequest(frames[2], frames[3:])
    if header == WORKER:
        return _parse_worker_command(frames[2], frames[3:])
    if header == DIPS_CLIENT:
        return _parse_dips_client(frames[2], frames[3:])
    raise ProtocolError(f"unknown protocol header {header[:16]!r}")


def _parse_worker_command(command: bytes, rest: list[bytes]) -> BrokerInbound:
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
        keys = _keys(unpack_meta(rest[0], "REPLIES"), "REPLIES")
        if len(keys) != len(rest) - 1:
            raise ProtocolError(f"REPLIES has {len(keys)} keys for {len(rest) - 1} bodies")
        return WorkerReplies(keys, rest[1:])
    if command == HEARTBEAT and len(rest) == 1:
        return WorkerSignal(HEARTBEAT, sending=_sending(unpack_meta(rest[0], "HEARTBEAT"),
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
    raise ProtocolError(f"unknown worker command {command[:8]!r}")


def _progress_fields(meta: dict[str, Any], what: str) -> tuple[str, int | None, int | None]:
    kind = meta.get("kind")
    if kind not in PROGRESS_KINDS:
        raise ProtocolError(f"{what} meta field 'kind' must be one of {', '.join(PROGRESS_KINDS)}")
    num = _int_field(meta, "num", what)
    den = _int_field(meta, "den", what)
    if kind == "status" and (num is None or den is None):
        raise ProtocolError(f"{what} of kind 'status' needs 'num' and 'den'")
    return kind, num, den


def _parse_progress(rest: list[bytes]) -> WorkerProgress:
    if len(rest) not in (2, 3):
        raise ProtocolError("PROGRESS takes a task key, a meta frame and at most one data frame")
    kind, num, den = _progress_fields(unpack_meta(rest[1], "PROGRESS"), "PROGRESS")
    data = rest[2] if len(rest) == 3 else None
    if (kind == "status") != (data is None):
        raise ProtocolError(f"PROGRESS of kind {kind!r} "
                            + ("takes no data frame" if data is not None else "needs a data frame"))
    return WorkerProgress(rest[0], kind, num, den, data)


def _ck(meta: dict[str, Any], what: str) -> bytes | None:
    """A coalescing key: 1 to MAX_CK_BYTES bytes, or absent."""
    ck = meta.get("ck")
    if ck is None:
        return None
    if not isinstance(ck, bytes) or not 0 < len(ck) <= MAX_CK_BYTES:
        raise ProtocolError(f"{what} meta field 'ck' must be 1-{MAX_CK_BYTES} bytes (bin)")
    return ck


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
    return meta if _version(meta) is not None else None


def _parse_dips_client(command: bytes, rest: list[bytes]) -> BrokerInbound:
    if command == SUBMIT:
        if len(rest) < 2:
            raise ProtocolError("SUBMIT needs a service and a meta frame")
        meta = unpack_meta(rest[1], "SUBMIT")
        ttl = _int_field(meta, "ttl_ms", "SUBMIT")
        if ttl is None:
            raise ProtocolError("SUBMIT meta needs 'ttl_ms'")
        ck = _ck(meta, "SUBMIT")
        if "ids" in meta:
            rids = _ids(meta, "ids", "SUBMIT")
            if not rids or len(rids) != len(rest) - 2:
                raise ProtocolError(f"SUBMIT has {len(rids)} ids for {len(rest) - 2} bodies")
            if ck is not None:
                raise ProtocolError("a SUBMIT of several requests cannot carry one 'ck'")
            return ClientBatch(rest[0], rids, rest[2:], ttl, _priority(meta, "SUBMIT"))
        rid = _int_field(meta, "id", "SUBMIT")
        if rid is None:
            raise ProtocolError("SUBMIT meta needs 'id' (or 'ids')")
        return ClientRequest(rest[0], rest[2:], rid, ttl, _priority(meta, "SUBMIT"), ck)
    if len(rest) != 1:
        raise ProtocolError("a DIPS client command takes one meta frame")
    if command == PING:
        return ClientPing(_ids(unpack_meta(rest[0], "PING"), "ids", "PING"))
    if command == HELLO:
        meta = unpack_meta(rest[0], "HELLO")
        if _version(meta) is None:
            raise ProtocolError(f"HELLO asks for DIPS version {meta.get('dips')!r}; "
                                f"this broker speaks {DIPS_VERSION}")
        first = meta.get("first")
        batch = meta.get("batch") is True
        progress = meta.get("progress") is True
        if first is None:
            return ClientHello(None, batch, progress)
        if not isinstance(first, dict):
            raise ProtocolError("HELLO meta field 'first' is not a map")
        rid = _int_field(first, "id", "HELLO")
        ttl = _int_field(first, "ttl_ms", "HELLO")
        if rid is None or ttl is None:
            raise ProtocolError("HELLO 'first' needs 'id' and 'ttl_ms'")
        return ClientHello(First(rid, ttl, _priority(first, "HELLO"), _ck(first, "HELLO")),
                           batch, progress)
    raise ProtocolError(f"unknown DIPS client command {command[:8]!r}")


# --- broker side: what it sends -----------------------------------------------------------


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


def to_worker(identity: bytes, key: bytes, body: list[bytes], dips: bool,
              ttl_ms: int | None = None, hold: bool = False) -> list[bytes]:
    """A task for a worker: REQUEST, or for DIPS workers TASK with its meta."""
    if not dips:
        return [identity, b"", WORKER, REQUEST, key, b"", *body]
    meta: dict[str, Any] = {} if ttl_ms is None else {"ttl_ms": ttl_ms}
    if hold:
        meta["hold"] = True
    return [identity, b"", WORKER, TASK, key, b"", pack_meta(meta), *body]


def to_worker_batch(identity: bytes, keys: list[bytes], bodies: list[bytes],
                    ttls_ms: list[int | None], holds: list[bool]) -> list[bytes]:
    """Several one-frame tasks in one TASKS, for a DIPS worker that asked for them."""
    meta = {"keys": keys, "ttl_ms": ttls_ms, "hold": holds}
    return [identity, b"", WORKER, TASKS, pack_meta(meta), *bodies]


def worker_welcome(identity: bytes, meta: dict[str, Any]) -> list[bytes]:
    """WELCOME to a DIPS worker; ``meta`` holds "broker" and "instance"."""
    return [identity, b"", WORKER, WELCOME, pack_meta({"dips": DIPS_VERSION, **meta})]


def recall(identity: bytes, key: bytes) -> list[bytes]:
    return [identity, b"", WORKER, RECALL, key]


def worker_command(identity: bytes, command: bytes) -> list[bytes]:
    """HEARTBEAT or DISCONNECT for a worker."""
    return [identity, b"", WORKER, command]


# --- worker side --------------------------------------------------------------------------


class BrokerTask(NamedTuple):
    """A task a broker gave this worker; ``dips`` for TASK, False for a standard REQUEST."""

    key: bytes
    body: list[bytes]
    ttl_ms: int | None = None
    hold: bool = False
    dips: bool = False


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


WorkerInbound = BrokerTask | BrokerTasks | BrokerWelcome | BrokerRecall | BrokerSignal


def parse_worker_inbound(frames: list[bytes]) -> WorkerInbound:
    """Decode one message a worker's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
        raise ProtocolError("message is not an MDP worker command")
    command = frames[2]
    if command == TASK:
        if len(frames) < 6 or frames[4] != b"":
            raise ProtocolError("TASK needs a key, an empty frame and a meta frame")
        meta = unpack_meta(frames[5], "TASK")
        ttl = _int_field(meta, "ttl_ms", "TASK")
        return BrokerTask(frames[3], frames[6:], ttl, meta.get("hold") is True, True)
    if command == TASKS:
        return _parse_tasks(frames)
    if command == REQUEST:
        if len(frames) < 5 or frames[4] != b"":
            raise ProtocolError("REQUEST needs a client address and an empty frame")
        return BrokerTask(frames[3], frames[5:])
    if command == HEARTBEAT and len(frames) == 4:
        return BrokerSignal(HEARTBEAT, _sending(unpack_meta(frames[3], "HEARTBEAT"),
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
        if _version(meta) is None:
            raise ProtocolError(f"WELCOME speaks DIPS version {meta.get('dips')!r}")
        return BrokerWelcome(meta)
    raise ProtocolError(f"unknown broker command {command[:8]!r}")


def _parse_tasks(frames: list[bytes]) -> BrokerTasks:
    if len(frames) < 5:
        raise ProtocolError("TASKS needs a meta frame and a body")
    meta = unpack_meta(frames[3], "TASKS")
    keys = _keys(meta, "TASKS")
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
    return BrokerTasks([BrokerTask(key, [body], ttl, hold, True)
                        for key, body, ttl, hold in zip(keys, bodies, ttls, holds, strict=True)])


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


def sending_to_worker(identity: bytes, size: int) -> list[bytes]:
    """The broker's HEARTBEAT that announces a task of ``size`` bytes, sent just before it
    to a worker whose READY says "announce": the broker's heartbeats wait behind it."""
    return [identity, b"", WORKER, HEARTBEAT, pack_meta({"sending": size})]


def _sending(meta: dict[str, Any], what: str) -> int:
    """The byte count a HEARTBEAT or PONG announces (0: none)."""
    size = meta.get("sending", 0)
    if type(size) is not int or not 0 <= size <= MAX_ANNOUNCED:
        raise ProtocolError(f"{what} 'sending' must be a byte count, not {size!r:.40}")
    return size


# --- client side --------------------------------------------------------------------------


class Reply(NamedTuple):
    """A reply a client received; ``rid`` is None for a standard reply."""

    service: bytes
    body: list[bytes]
    rid: int | None


class Replies(NamedTuple):
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


class Progress(NamedTuple):
    """Progress of request ``rid`` (see :class:`WorkerProgress`)."""

    service: bytes
    rid: int
    kind: str
    num: int | None = None
    den: int | None = None
    data: bytes | None = None


ClientInbound = Reply | Replies | Pong | Welcome | Progress


def client_request(service: bytes, body: list[bytes]) -> list[bytes]:
    return [b"", CLIENT, service, *body]


def client_submit_batch(service: bytes, rids: list[int], ttl_ms: int, bodies: list[bytes],
                        priority: int = 0) -> list[bytes]:
    """One SUBMIT carrying several requests, one body frame each."""
    meta: dict[str, Any] = {"ids": rids, "ttl_ms": ttl_ms}
    if priority:
        meta["pri"] = priority
    return [b"", DIPS_CLIENT, SUBMIT, service, pack_meta(meta), *bodies]


def client_submit(service: bytes, rid: int, ttl_ms: int, body: list[bytes],
                  priority: int = 0, ck: bytes | None = None) -> list[bytes]:
    meta: dict[str, Any] = {"id": rid, "ttl_ms": ttl_ms}
    if priority:
        meta["pri"] = priority
    if ck is not None:
        meta["ck"] = ck
    return [b"", DIPS_CLIENT, SUBMIT, service, pack_meta(meta), *body]


def client_hello(first: First | None = None, batch: bool = False,
                 progress: bool = False) -> list[bytes]:
    """HELLO; ``first`` describes the MDPC01 request sent right after; ``batch``: RESULTs
    may carry several replies; ``progress``: send PROGRESS."""
    meta: dict[str, Any] = {"dips": DIPS_VERSION}
    if batch:
        meta["batch"] = True
    if progress:
        meta["progress"] = True
    if first is not None:
        meta["first"] = {"id": first.rid, "ttl_ms": first.ttl_ms, "pri": first.priority}
        if first.ck is not None:
            meta["first"]["ck"] = first.ck
    return [b"", DIPS_CLIENT, HELLO, pack_meta(meta)]


def client_ping(rids: list[int]) -> list[bytes]:
    return [b"", DIPS_CLIENT, PING, pack_meta({"ids": rids})]


def parse_client_inbound(frames: list[bytes]) -> ClientInbound:
    """Decode one message a client's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"":
        raise ProtocolError("reply does not start with an empty delimiter and a header")
    header = frames[1]
    if header == CLIENT:
        return Reply(frames[2], frames[3:], None)
    if header != DIPS_CLIENT or len(frames) < 4:
        raise ProtocolError(f"malformed reply from broker (header {header[:16]!r})")
    command = frames[2]
    if command == RESULT:
        if len(frames) < 5:
            raise ProtocolError("RESULT needs a service and a meta frame")
        meta = unpack_meta(frames[4], "RESULT")
        if "ids" in meta:
            rids = _ids(meta, "ids", "RESULT")
            if not rids or len(rids) != len(frames) - 5:
                raise ProtocolError(f"RESULT has {len(rids)} ids for {len(frames) - 5} bodies")
            return Replies(frames[3], rids, frames[5:])
        rid = _int_field(meta, "id", "RESULT")
        if rid is None:
            raise ProtocolError("RESULT meta has no 'id'")
        return Reply(frames[3], frames[5:], rid)
    if command == CPROGRESS:
        return _parse_client_progress(frames)
    if len(frames) != 4:
        raise ProtocolError(f"DIPS broker command {command[:8]!r} takes one meta frame")
    meta = unpack_meta(frames[3], "broker")
    if command == PONG:
        instance = meta.get("instance", "")
        return Pong(_ids(meta, "lost", "PONG"), instance if isinstance(instance, str) else "",
                    _sending(meta, "PONG"))
    if command == CWELCOME:
        if _version(meta) is None:
            raise ProtocolError(f"WELCOME speaks DIPS version {meta.get('dips')!r}")
        return Welcome(meta)
    raise ProtocolError(f"unknown DIPS broker command {command[:8]!r}")


def _parse_client_progress(frames: list[bytes]) -> Progress:
    if len(frames) not in (5, 6):
        raise ProtocolError("PROGRESS needs a service, a meta frame and at most one data frame")
    meta = unpack_meta(frames[4], "PROGRESS")
    rid = _int_field(meta, "id", "PROGRESS")
    if rid is None:
        raise ProtocolError("PROGRESS meta has no 'id'")
    kind, num, den = _progress_fields(meta, "PROGRESS")
    data = frames[5] if len(frames) == 6 else None
    if (kind == "status") != (data is None):
        raise ProtocolError(f"PROGRESS of kind {kind!r} "
                            + ("takes no data frame" if data is not None else "needs a data frame"))
    return Progress(frames[3], rid, kind, num, den, data)
