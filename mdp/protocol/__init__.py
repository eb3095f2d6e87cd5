"""The wire: Majordomo 0.1 (ZeroMQ RFC 7/MDP), 8/MMI, and the DIPS extensions (version 2).

``docs/PROTOCOL.md`` is the specification, frame by frame; this package is its one
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
  Then SUBMIT / RESULT (requests and replies with ids), PING / PONG (which ids the
  broker still holds) and, to a broker whose WELCOME offers it, CANCEL (ids the client
  gave up there when it failed over).

Bodies are msgpack. A request is a map; a reply is ``{"result": value}`` or
``{"error": {"code", "message", "field"?}}``.

The code lives in one module per direction, each with its messages' types, builders and
parser side by side: ``client_to_broker``, ``worker_to_broker``, ``broker_to_worker`` and
``broker_to_client``; ``broker_inbound`` holds the broker's one parser, which hands a
message to the client's or the worker's by its header. ``constants`` holds the headers,
command codes and limits, ``meta`` the meta frame and its field checks. This module only
re-exports their public names (and the body codec's, from ``mdp.body``), so callers write
``from mdp import protocol as p`` and ``p.NAME`` whatever module a name lives in.
"""

from __future__ import annotations

from mdp.body import (  # re-exported: the body codec was part of this module
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
from mdp.protocol.broker_inbound import BrokerInbound, parse_broker_inbound
from mdp.protocol.broker_to_client import (
    ClientInbound,
    Pong,
    RequestLosses,
    RequestProgress,
    Result,
    Results,
    Welcome,
    client_welcome,
    parse_client_inbound,
    pong,
    to_client,
    to_client_batch,
    to_client_losses,
    to_client_progress,
)
from mdp.protocol.broker_to_worker import (
    BrokerRecall,
    BrokerSignal,
    BrokerTask,
    BrokerTasks,
    BrokerWelcome,
    WorkerInbound,
    parse_worker_inbound,
    recall,
    sending_to_worker,
    to_worker,
    to_worker_batch,
    worker_command,
    worker_welcome,
)
from mdp.protocol.client_to_broker import (
    ClientBatch,
    ClientCancel,
    ClientHello,
    ClientPing,
    ClientRequest,
    First,
    client_cancel,
    client_hello,
    client_ping,
    client_request,
    client_submit,
    client_submit_batch,
    submit_ids,
)
from mdp.protocol.constants import (
    BIG_BODY,
    BOUNCE,
    BUSY,
    CANCEL,
    CLIENT,
    CPROGRESS,
    CWELCOME,
    DEFAULT_LINK_FLOOR,
    DIPS_CLIENT,
    DIPS_VERSION,
    DISCONNECT,
    FREE,
    HEARTBEAT,
    HELLO,
    LOSSES,
    MAX_ANNOUNCED,
    MAX_BATCH,
    MAX_CK_BYTES,
    MAX_LOSSES,
    MAX_MESSAGE_BYTES,
    MMI_PREFIX,
    MMI_SERVICE,
    MMI_STATUS,
    PING,
    PONG,
    PRIORITIES,
    PROGRESS,
    PROGRESS_KINDS,
    READY,
    RECALL,
    REPLIES,
    REPLY,
    REQUEST,
    RESULT,
    SUBMIT,
    TASK,
    TASKS,
    WELCOME,
    WORKER,
    sent_until,
    valid_service,
)
from mdp.protocol.meta import pack_meta, unpack_meta
from mdp.protocol.worker_to_broker import (
    WorkerProgress,
    WorkerReady,
    WorkerReplies,
    WorkerReply,
    WorkerSignal,
    bounce,
    busy,
    progress,
    ready,
    replies,
    reply,
    sending,
    signal,
)

__all__ = [
    # mdp.body
    "DEFAULT_LIMITS", "BodyLimits", "as_bytes", "decode_reply", "decode_request", "error_body",
    "error_code", "is_error_body", "pack", "raw_result_body", "result_body", "unpack",
    # mdp.protocol.constants
    "DIPS_VERSION", "DEFAULT_LINK_FLOOR", "BIG_BODY", "MAX_MESSAGE_BYTES", "MAX_ANNOUNCED",
    "CLIENT", "WORKER", "DIPS_CLIENT", "READY", "REQUEST", "REPLY", "HEARTBEAT", "DISCONNECT",
    "BUSY", "FREE", "BOUNCE", "WELCOME", "TASK", "RECALL", "TASKS", "REPLIES", "PROGRESS",
    "MAX_BATCH", "HELLO", "CWELCOME", "SUBMIT", "RESULT", "PING", "PONG", "CPROGRESS",
    "CANCEL", "LOSSES",
    "PROGRESS_KINDS", "MAX_CK_BYTES", "MAX_LOSSES", "MMI_PREFIX", "MMI_SERVICE", "MMI_STATUS",
    "PRIORITIES",
    "sent_until", "valid_service",
    # mdp.protocol.meta
    "pack_meta", "unpack_meta",
    # mdp.protocol.client_to_broker
    "ClientRequest", "ClientBatch", "First", "ClientHello", "ClientPing", "ClientCancel",
    "client_request", "client_submit_batch", "client_submit", "client_hello", "client_ping",
    "client_cancel", "submit_ids",
    # mdp.protocol.worker_to_broker
    "WorkerReady", "WorkerReply", "WorkerReplies", "WorkerProgress", "WorkerSignal", "ready",
    "reply", "replies", "progress", "bounce", "busy", "signal", "sending",
    # mdp.protocol.broker_inbound
    "BrokerInbound", "parse_broker_inbound",
    # mdp.protocol.broker_to_worker
    "BrokerTask", "BrokerWelcome", "BrokerRecall", "BrokerSignal", "BrokerTasks", "WorkerInbound",
    "to_worker", "to_worker_batch", "worker_welcome", "recall", "worker_command",
    "sending_to_worker", "parse_worker_inbound",
    # mdp.protocol.broker_to_client
    "Result", "Results", "Pong", "Welcome", "RequestProgress", "RequestLosses", "ClientInbound",
    "to_client", "to_client_batch", "to_client_progress", "to_client_losses", "client_welcome",
    "pong", "parse_client_inbound",
    # mdp.protocol.checks
    "ASK", "CHECK", "GO", "BrokerAsk", "BrokerGo", "ask", "check", "go",
]

# (last, apart: checked starts, docs/PROTOCOL.md "Checked starts")
from mdp.protocol.checks import ASK, CHECK, GO, BrokerAsk, BrokerGo, ask, check, go  # noqa: E402
