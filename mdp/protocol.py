"""The wire: Majordomo 0.1 (ZeroMQ RFC 7/MDP), 8/MMI, and the DIPS extensions.

Standard frames, as a ROUTER sees them after the peer identity:

    client request    "", MDPC01, service, body...
    reply to client   "", MDPC01, service, body...
    worker commands   "", MDPW01, command, ...

DIPS extensions travel only between peers that have proved to be DIPS peers, so a
standard client, worker or broker never sees them:

* A DIPS worker's READY carries one extra frame, a msgpack map of metadata (host, pid,
  code version). Standard brokers ignore frames after the service name. A DIPS broker
  answers such a READY with WELCOME; from then on the worker may send BUSY, FREE and
  BOUNCE, and the broker sends XREQUEST (a REQUEST with a metadata frame) instead of
  REQUEST.
* A DIPS client opens every new connection with a PING under its own header
  ``DIPC01``. A DIPS broker answers PONG; a standard broker drops a message with an
  unknown header. Only after a PONG does the client send XREQUESTs, which carry a
  request id and the time the client is still willing to wait; the broker answers them
  with XREPLYs that carry the id back, and answers later PINGs with the ids it does not
  hold (so a client learns at once that a restarted broker lost its request).

Bodies are msgpack. A request is a map; a reply is ``{"result": value}`` or
``{"error": {"code", "message", "field"?}}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from mdp.errors import BadRequest, ProtocolError, RequestError, from_wire

CLIENT = b"MDPC01"
WORKER = b"MDPW01"
DIPS_CLIENT = b"DIPC01"

# 7/MDP worker commands.
READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
# DIPS worker extensions (only between a DIPS worker and a DIPS broker).
BUSY = b"\x06"  # worker -> broker: working for another broker; do not dispatch to me
FREE = b"\x07"  # worker -> broker: available again
BOUNCE = b"\x08"  # worker -> broker: I am busy; here is your request back, unworked
WELCOME = b"\x09"  # broker -> worker: I speak the DIPS extensions
XREQUEST = b"\x0a"  # broker -> worker: REQUEST plus a metadata frame
# DIPS client extensions (header DIPC01).
PING = b"\x01"  # client -> broker: ids I am waiting for
PONG = b"\x02"  # broker -> client: those of them I do not hold
XREQUEST_C = b"\x03"  # client -> broker: service, meta [id, ttl_ms], body...
XREPLY = b"\x04"  # broker -> client: service, id, body...

DRAINING = b"draining"  # optional reason frame of BUSY

MMI_PREFIX = b"mmi."
MMI_SERVICE = b"mmi.service"
MMI_STATUS = b"mmi.status"

_SERVICE_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_REPLY_PREFIX = b"\x81\xa6result"  # msgpack: a map of one entry whose key is "result"


def valid_service(name: bytes) -> bool:
    """Service names are 1-100 characters of letters, digits, '.', '_' and '-'."""
    return _SERVICE_NAME.fullmatch(name) is not None


# --- bodies -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BodyLimits:
    """What a decoded request may hold: nesting depth and entries per array or map."""

    max_depth: int = 32
    max_items: int = 100_000


DEFAULT_LIMITS = BodyLimits()


def pack(obj: Any) -> bytes:
    """Encode a value as msgpack."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, max_items: int = -1) -> Any:
    """Decode msgpack; raise ProtocolError for anything that is not one valid object."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_array_len=max_items, max_map_len=max_items)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"body is not valid msgpack: {type(exc).__name__}: {exc}") from exc


def decode_request(body: list[bytes], limits: BodyLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The request map of a body; BadRequest naming what is wrong with anything else."""
    if len(body) != 1:
        raise BadRequest(f"a request body is one msgpack frame, got {len(body)} frames")
    try:
        request = unpack(body[0], limits.max_items)
    except ProtocolError as exc:
        raise BadRequest(f"{exc} (at most {limits.max_items} entries per array or map)") from exc
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a msgpack map, got {type(request).__name__}")
    if _too_deep(request, limits.max_depth):
        raise BadRequest(f"the request is nested deeper than {limits.max_depth} levels")
    return request


def _too_deep(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def result_body(result: Any) -> bytes:
    """A success reply."""
    return pack({"result": result})


def raw_result_body(packed: bytes) -> bytes:
    """A success reply whose result is already msgpack-encoded (no re-encoding)."""
    return _REPLY_PREFIX + packed


def error_body(error: RequestError) -> bytes:
    """An error reply."""
    return pack({"error": error.to_wire()})


def decode_reply(body: list[bytes]) -> Any:
    """The result of a reply body; raise the RequestError it carries, or ProtocolError."""
    if len(body) != 1:
        raise ProtocolError(f"a reply body is one msgpack frame, got {len(body)} frames")
    reply = unpack(body[0])
    if isinstance(reply, dict):
        if "result" in reply and len(reply) == 1:
            return reply["result"]
        if "error" in reply:
            raise from_wire(reply["error"])
    raise ProtocolError("reply is neither {'result': ...} nor {'error': ...}")


# --- broker side: what arrives on the ROUTER --------------------------------------------


class ClientRequest(NamedTuple):
    """A request from a client; ``rid`` and ``ttl_ms`` are set for DIPS clients only."""

    service: bytes
    body: list[bytes]
    rid: int | None = None
    ttl_ms: int | None = None


class ClientPing(NamedTuple):
    """A DIPS client asking which of its requests the broker holds."""

    rids: list[int]


class WorkerReady(NamedTuple):
    """A worker announcing its service; ``meta`` is set for DIPS workers only."""

    service: bytes
    meta: dict[str, Any] | None


class WorkerReply(NamedTuple):
    """A worker's reply to the request it holds."""

    client: bytes
    body: list[bytes]


class WorkerSignal(NamedTuple):
    """HEARTBEAT, DISCONNECT, BUSY, FREE or BOUNCE from a worker."""

    command: bytes
    arg: bytes = b""


BrokerInbound = ClientRequest | ClientPing | WorkerReady | WorkerReply | WorkerSignal

_SIGNALS = {HEARTBEAT: 0, DISCONNECT: 0, FREE: 0, BUSY: 1, BOUNCE: 1}


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
    if command == READY:
        if not rest:
            raise ProtocolError("READY has no service name")
        return WorkerReady(rest[0], _dips_metadata(rest[1:]))
    if command == REPLY:
        if len(rest) < 2 or rest[1] != b"":
            raise ProtocolError("REPLY needs a client address and an empty frame")
        return WorkerReply(rest[0], rest[2:])
    arity = _SIGNALS.get(command)
    if arity is None:
        raise ProtocolError(f"unknown worker command {command[:8]!r}")
    if len(rest) > arity:
        raise ProtocolError(f"worker command {command!r} has {len(rest)} extra frames")
    return WorkerSignal(command, rest[0] if rest else b"")


def _dips_metadata(extra: list[bytes]) -> dict[str, Any] | None:
    """A DIPS worker's READY metadata; None (a standard worker) for anything else.

    Frames after the service name mean nothing in 7/MDP; another implementation may send
    some, and its worker is served as a standard one.
    """
    if len(extra) != 1:
        return None
    try:
        meta = unpack(extra[0])
    except ProtocolError:
        return None
    return meta if isinstance(meta, dict) else None


def _parse_dips_client(command: bytes, rest: list[bytes]) -> BrokerInbound:
    if command == PING:
        if len(rest) != 1:
            raise ProtocolError("PING takes one frame")
        rids = unpack(rest[0])
        if not isinstance(rids, list) or not all(isinstance(r, int) for r in rids):
            raise ProtocolError("PING frame is not a list of request ids")
        return ClientPing(rids)
    if command == XREQUEST_C:
        if len(rest) < 2:
            raise ProtocolError("XREQUEST needs a service and a metadata frame")
        meta = unpack(rest[1])
        if (
            not isinstance(meta, list)
            or len(meta) != 2
            or not all(isinstance(m, int) and m >= 0 for m in meta)
        ):
            raise ProtocolError("XREQUEST metadata is not [request id, ttl ms]")
        return ClientRequest(rest[0], rest[2:], meta[0], meta[1])
    raise ProtocolError(f"unknown DIPS client command {command[:8]!r}")


# --- broker side: what it sends -----------------------------------------------------------


def to_client(identity: bytes, service: bytes, body: list[bytes], rid: int | None) -> list[bytes]:
    """A reply to a client, standard or DIPS form."""
    if rid is None:
        return [identity, b"", CLIENT, service, *body]
    return [identity, b"", DIPS_CLIENT, XREPLY, service, pack(rid), *body]


def pong(identity: bytes, unknown: list[int]) -> list[bytes]:
    return [identity, b"", DIPS_CLIENT, PONG, pack(unknown)]


def to_worker(
    identity: bytes, client: bytes, body: list[bytes], dips: bool, ttl_ms: int | None = None
) -> list[bytes]:
    """A request for a worker: REQUEST, or for DIPS workers XREQUEST with its metadata."""
    if not dips:
        return [identity, b"", WORKER, REQUEST, client, b"", *body]
    meta = _EMPTY_META if ttl_ms is None else _TTL_META + pack(ttl_ms)
    return [identity, b"", WORKER, XREQUEST, client, b"", meta, *body]


_EMPTY_META = pack({})
_TTL_META = b"\x81\xa6ttl_ms"  # msgpack: a map of one entry, "ttl_ms": <the packed int>


def worker_command(identity: bytes, command: bytes) -> list[bytes]:
    """HEARTBEAT, DISCONNECT or WELCOME for a worker."""
    return [identity, b"", WORKER, command]


# --- worker side --------------------------------------------------------------------------


class BrokerRequest(NamedTuple):
    """A request a broker gave this worker; ``meta`` only from DIPS brokers."""

    client: bytes
    body: list[bytes]
    meta: dict[str, Any] | None


class BrokerSignal(NamedTuple):
    """HEARTBEAT, DISCONNECT or WELCOME from a broker."""

    command: bytes


def parse_worker_inbound(frames: list[bytes]) -> BrokerRequest | BrokerSignal:
    """Decode one message a worker's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
        raise ProtocolError("message is not an MDP worker command")
    command = frames[2]
    if command in (REQUEST, XREQUEST):
        if len(frames) < 5 or frames[4] != b"":
            raise ProtocolError("REQUEST needs a client address and an empty frame")
        if command == REQUEST:
            return BrokerRequest(frames[3], frames[5:], None)
        if len(frames) < 6:
            raise ProtocolError("XREQUEST has no metadata frame")
        meta = unpack(frames[5])
        if not isinstance(meta, dict):
            raise ProtocolError("XREQUEST metadata is not a map")
        return BrokerRequest(frames[3], frames[6:], meta)
    if command in (HEARTBEAT, DISCONNECT, WELCOME):
        if len(frames) != 3:
            raise ProtocolError(f"command {command!r} has extra frames")
        return BrokerSignal(command)
    raise ProtocolError(f"unknown broker command {command[:8]!r}")


def ready(service: bytes, meta: dict[str, Any] | None) -> list[bytes]:
    frames = [b"", WORKER, READY, service]
    if meta is not None:
        frames.append(pack(meta))
    return frames


def reply(client: bytes, body: list[bytes]) -> list[bytes]:
    return [b"", WORKER, REPLY, client, b"", *body]


def signal(command: bytes, arg: bytes | None = None) -> list[bytes]:
    """HEARTBEAT, DISCONNECT, BUSY, FREE or BOUNCE from a worker."""
    frames = [b"", WORKER, command]
    if arg is not None:
        frames.append(arg)
    return frames


# --- client side --------------------------------------------------------------------------


class Reply(NamedTuple):
    """A reply a client received; ``rid`` is None for a standard reply."""

    service: bytes
    body: list[bytes]
    rid: int | None


class Pong(NamedTuple):
    """The ids a DIPS broker says it does not hold."""

    unknown: list[int]


def client_request(service: bytes, body: list[bytes]) -> list[bytes]:
    return [b"", CLIENT, service, *body]


def client_xrequest(service: bytes, rid: int, ttl_ms: int, body: list[bytes]) -> list[bytes]:
    return [b"", DIPS_CLIENT, XREQUEST_C, service, pack([rid, ttl_ms]), *body]


def client_ping(rids: list[int]) -> list[bytes]:
    return [b"", DIPS_CLIENT, PING, pack(rids)]


def parse_client_inbound(frames: list[bytes]) -> Reply | Pong:
    """Decode one message a client's DEALER received from a broker."""
    if len(frames) < 3 or frames[0] != b"":
        raise ProtocolError("reply does not start with an empty delimiter and a header")
    header = frames[1]
    if header == CLIENT:
        return Reply(frames[2], frames[3:], None)
    if header == DIPS_CLIENT and len(frames) >= 4:
        command = frames[2]
        if command == PONG and len(frames) == 4:
            unknown = unpack(frames[3])
            if isinstance(unknown, list) and all(isinstance(r, int) for r in unknown):
                return Pong(unknown)
        elif command == XREPLY and len(frames) >= 5:
            rid = unpack(frames[4])
            if isinstance(rid, int):
                return Reply(frames[3], frames[5:], rid)
    raise ProtocolError(f"malformed reply from broker (header {header[:16]!r})")
