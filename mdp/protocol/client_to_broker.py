"""What a client sends a broker: MDPC01 requests and the DIPS client commands (DIPC02).

The broker reaches this parser through ``parse_broker_inbound``
(``mdp.protocol.broker_inbound``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mdp.errors import ProtocolError
from mdp.protocol.constants import (
    CANCEL,
    CLIENT,
    DIPS_CLIENT,
    DIPS_VERSION,
    HELLO,
    PING,
    SUBMIT,
)
from mdp.protocol.meta import (
    ck_field,
    ids_field,
    int_field,
    losses_field,
    pack_meta,
    priority_field,
    unpack_meta,
    version_field,
)


class ClientRequest(NamedTuple):
    """A request from a client; ``rid`` and ``ttl_ms`` are set for DIPS clients only."""

    service: bytes
    body: list[bytes]
    rid: int | None = None
    ttl_ms: int | None = None
    priority: int = 0
    ck: bytes | None = None  # coalescing key: identical requests are worked once
    # workers it cost at a broker it was sent to before, as that broker told its client
    # (LOSSES): the broker it is resent to counts on from there
    losses: int = 0


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
    losses: int = 0  # as ClientRequest.losses


class ClientHello(NamedTuple):
    """A DIPS client opening a connection; ``first`` applies to the next MDPC01 request.

    ``batch``: the client accepts RESULTs that carry several replies; ``progress``: it
    accepts PROGRESS; ``losses``: it accepts LOSSES.
    """

    first: First | None
    batch: bool = False
    progress: bool = False
    losses: bool = False


class ClientPing(NamedTuple):
    """A DIPS client asking which of its requests the broker holds."""

    rids: list[int]


class ClientCancel(NamedTuple):
    """A DIPS client giving up requests it sent on this connection (it sent them to
    another broker): the broker runs none of them that it has not given out yet."""

    rids: list[int]


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
                  priority: int = 0, ck: bytes | None = None,
                  losses: int = 0) -> list[bytes]:
    """SUBMIT of one request; ``losses``: the workers it has cost (a resend of a request
    that a broker told LOSSES of; 0 for every other request, and then not on the wire)."""
    meta: dict[str, Any] = {"id": rid, "ttl_ms": ttl_ms}
    if priority:
        meta["pri"] = priority
    if ck is not None:
        meta["ck"] = ck
    if losses:
        meta["losses"] = losses
    return [b"", DIPS_CLIENT, SUBMIT, service, pack_meta(meta), *body]


def client_hello(first: First | None = None, batch: bool = False,
                 progress: bool = False, losses: bool = False) -> list[bytes]:
    """HELLO; ``first`` describes the MDPC01 request sent right after; ``batch``: RESULTs
    may carry several replies; ``progress``: send PROGRESS; ``losses``: send LOSSES."""
    meta: dict[str, Any] = {"dips": DIPS_VERSION}
    if batch:
        meta["batch"] = True
    if progress:
        meta["progress"] = True
    if losses:
        meta["losses"] = True
    if first is not None:
        meta["first"] = {"id": first.rid, "ttl_ms": first.ttl_ms, "pri": first.priority}
        if first.ck is not None:
            meta["first"]["ck"] = first.ck
        if first.losses:
            meta["first"]["losses"] = first.losses
    return [b"", DIPS_CLIENT, HELLO, pack_meta(meta)]


def client_ping(rids: list[int]) -> list[bytes]:
    return [b"", DIPS_CLIENT, PING, pack_meta({"ids": rids})]


def client_cancel(rids: list[int]) -> list[bytes]:
    """CANCEL: only to a broker whose WELCOME said ``"cancel": true``."""
    return [b"", DIPS_CLIENT, CANCEL, pack_meta({"ids": rids})]


def submit_ids(rest: list[bytes], limit: int) -> list[int]:
    """The request ids of a SUBMIT that did not parse (``rest``: what follows the command),
    where its meta can still tell them (``id``, or ``ids`` of at most ``limit``), each once:
    the broker answers each with the error (so its client need not time out); [] where
    it cannot."""
    if len(rest) < 2:
        return []
    try:
        meta = unpack_meta(rest[1], "SUBMIT")
        if "ids" in meta:
            rids = ids_field(meta, "ids", "SUBMIT")
            return list(dict.fromkeys(rids)) if len(rids) <= limit else []
        rid = int_field(meta, "id", "SUBMIT")
    except ProtocolError:
        return []
    return [] if rid is None else [rid]


def parse_dips_client(
    command: bytes, rest: list[bytes]
) -> ClientRequest | ClientBatch | ClientHello | ClientPing | ClientCancel:
    if command == SUBMIT:
        if len(rest) < 2:
            raise ProtocolError("SUBMIT needs a service and a meta frame")
        meta = unpack_meta(rest[1], "SUBMIT")
        ttl = int_field(meta, "ttl_ms", "SUBMIT")
        if ttl is None:
            raise ProtocolError("SUBMIT meta needs 'ttl_ms'")
        ck = ck_field(meta, "SUBMIT")
        if "ids" in meta:
            rids = ids_field(meta, "ids", "SUBMIT")
            if not rids or len(rids) != len(rest) - 2:
                raise ProtocolError(f"SUBMIT has {len(rids)} ids for {len(rest) - 2} bodies")
            if ck is not None or "losses" in meta:
                raise ProtocolError("a SUBMIT of several requests cannot carry one 'ck' "
                                    "or 'losses'")
            return ClientBatch(rest[0], rids, rest[2:], ttl, priority_field(meta, "SUBMIT"))
        rid = int_field(meta, "id", "SUBMIT")
        if rid is None:
            raise ProtocolError("SUBMIT meta needs 'id' (or 'ids')")
        return ClientRequest(rest[0], rest[2:], rid, ttl, priority_field(meta, "SUBMIT"), ck,
                             losses_field(meta, "SUBMIT"))
    if len(rest) != 1:
        raise ProtocolError("a DIPS client command takes one meta frame")
    if command == PING:
        return ClientPing(ids_field(unpack_meta(rest[0], "PING"), "ids", "PING"))
    if command == CANCEL:
        return ClientCancel(ids_field(unpack_meta(rest[0], "CANCEL"), "ids", "CANCEL"))
    if command == HELLO:
        meta = unpack_meta(rest[0], "HELLO")
        if version_field(meta) is None:
            raise ProtocolError(f"HELLO asks for DIPS version {meta.get('dips')!r}; "
                                f"this broker speaks {DIPS_VERSION}")
        first = meta.get("first")
        batch = meta.get("batch") is True
        progress = meta.get("progress") is True
        losses = meta.get("losses") is True
        if first is None:
            return ClientHello(None, batch, progress, losses)
        if not isinstance(first, dict):
            raise ProtocolError("HELLO meta field 'first' is not a map")
        rid = int_field(first, "id", "HELLO")
        ttl = int_field(first, "ttl_ms", "HELLO")
        if rid is None or ttl is None:
            raise ProtocolError("HELLO 'first' needs 'id' and 'ttl_ms'")
        head = First(rid, ttl, priority_field(first, "HELLO"), ck_field(first, "HELLO"),
                     losses_field(first, "HELLO"))
        return ClientHello(head, batch, progress, losses)
    raise ProtocolError(f"unknown DIPS client command {command[:8]!r}")
