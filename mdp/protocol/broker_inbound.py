"""The broker's one parser: a message on its ROUTER, from a client or a worker.

Clients and workers share the ROUTER, so the header decides which direction's parser reads
the rest (``mdp.protocol.client_to_broker`` or ``mdp.protocol.worker_to_broker``); this
module only tells them apart, and names the union of what they return.
"""

from __future__ import annotations

from mdp.errors import ProtocolError
from mdp.protocol.client_to_broker import (
    ClientBatch,
    ClientCancel,
    ClientHello,
    ClientPing,
    ClientRequest,
    parse_dips_client,
)
from mdp.protocol.constants import CLIENT, DIPS_CLIENT, WORKER
from mdp.protocol.worker_to_broker import (
    WorkerProgress,
    WorkerReady,
    WorkerReplies,
    WorkerReply,
    WorkerSignal,
    parse_worker_command,
)

BrokerInbound = (ClientRequest | ClientBatch | ClientHello | ClientPing | ClientCancel
                 | WorkerReady
                 | WorkerReply | WorkerReplies | WorkerProgress | WorkerSignal)


def parse_broker_inbound(frames: list[bytes]) -> BrokerInbound:
    """Decode one message received on the broker's ROUTER, identity already removed."""
    if len(frames) < 3 or frames[0] != b"":
        raise ProtocolError("message does not start with an empty delimiter and a header")
    header = frames[1]
    if header == CLIENT:
        return ClientRequest(frames[2], frames[3:])
    if header == WORKER:
        return parse_worker_command(frames[2], frames[3:])
    if header == DIPS_CLIENT:
        return parse_dips_client(frames[2], frames[3:])
    raise ProtocolError(f"unknown protocol header {header[:16]!r}")
