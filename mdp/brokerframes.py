"""The broker's shortcuts over the frames it reads, before and after the general parser.

The two messages of every sync request (a worker's REPLY of one body, a DIPS client's lone
SUBMIT) and an idle worker's HEARTBEAT are recognised without
:func:`mdp.protocol.parse_broker_inbound`; a big frame kept as ``zmq.Frame`` is made bytes
where the parser needs bytes; a reply body is told for a DIPS error without decoding it.

Apart from :mod:`mdp.brokercore` because they are about frames, not decisions; they stay
apart from :mod:`mdp.protocol` because they are the broker's hot path (each one shaped by
what the broker receives most), not the wire's one parser.
"""

from __future__ import annotations

from typing import Any

from mdp import protocol as p
from mdp.errors import Expired

HEARTBEAT_SIGNAL = p.WorkerSignal(p.HEARTBEAT)  # an idle worker's, as the parser would give it


def quick_parse(frames: list[bytes]) -> p.BrokerInbound | None:
    """The two messages of every sync request, parsed without the general parser: a
    worker's REPLY of one body frame, and a SUBMIT of one request with only an id and a
    deadline (what a DIPS client sends for a lone call). None for anything else, which
    ``parse_broker_inbound`` then parses (and names what is wrong with it)."""
    if frames[1]:
        return None
    command = frames[3]
    if command == p.REPLY and frames[2] == p.WORKER and not frames[5]:
        return p.WorkerReply(frames[4], frames[6:])
    if command == p.SUBMIT and frames[2] == p.DIPS_CLIENT:
        meta = p.unpack_meta(frames[5], "SUBMIT")
        if len(meta) == 2:
            rid, ttl = meta.get("id"), meta.get("ttl_ms")
            if type(rid) is int and type(ttl) is int and 0 <= rid < 2**63 \
                    and 0 <= ttl < 2**63:
                return p.ClientRequest(frames[4], frames[6:], rid, ttl)
    return None


def heads_as_bytes(frames: list[Any]) -> list[bytes]:
    """A big frame is passed as the ``zmq.Frame`` it came as (``sockio.recv``'s
    ``keep_big``), so that a body is never copied; one where the wire puts a service name,
    a key or a meta map (in a malformed message) is made bytes, for the parser."""
    header, command = frames[2], frames[3]
    if header == p.CLIENT:
        first_body = 4
    elif header == p.WORKER and command in (p.REPLY, p.REPLIES):
        first_body = 5
    else:
        first_body = 6
    return [f if i >= first_body or type(f) is bytes else bytes(f)
            for i, f in enumerate(frames)]


_ERROR_HEAD = p.error_body(Expired(""))[:7]  # how every DIPS error body begins


def is_error(body: list[Any]) -> bool:
    """Whether a reply body is a DIPS error (a body frame kept as ``zmq.Frame`` is big,
    and never one)."""
    return len(body) == 1 and type(first := body[0]) is bytes \
        and first.startswith(_ERROR_HEAD) and p.is_error_body(body)
