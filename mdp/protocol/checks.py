"""Checked starts: ASK, CHECK and GO, for the task of a request that has cost a worker.

A broker that loses a worker cannot tell which of the tasks it gave that worker had
started: one sent as to an idle worker may have waited, unread or held, behind another
broker's task that killed it. So a request charged with a loss is *suspect*, and its next
worker proves what it ran (``docs/PROTOCOL.md``, "Checked starts"):

* ASK (broker -> worker, key), just before the task ``key``, to a worker whose READY says
  ``"checks": true``: "before you start it, CHECK with me and wait for my GO; after you
  answer it, CHECK again and wait for my GO before you start anything else".
* CHECK (worker -> broker, key): "I start task ``key`` now" when the broker still holds it
  unanswered, and in any case "tell me you have read this".
* GO (broker -> worker, key): the answer to CHECK ``key``, always (a task the broker no
  longer holds included), so a worker never waits on a broker that is alive.

These travel only for suspect tasks, never per request. The block is self-contained: its
own command codes, builders and parsers; the two direction parsers hand these commands to
it (``worker_to_broker``, ``broker_to_worker``).
"""

from __future__ import annotations

from typing import NamedTuple

from mdp.errors import ProtocolError
from mdp.protocol.constants import WORKER

ASK = b"\x0f"  # broker -> worker, key: CHECK before you start this task (its TASK follows)
CHECK = b"\x10"  # worker -> broker, key: I start it now (if you hold it); answer GO
GO = b"\x11"  # broker -> worker, key: the answer to CHECK


class BrokerAsk(NamedTuple):
    """ASK: the task ``key`` (next on this connection) starts only after a CHECK and GO."""

    key: bytes


class BrokerGo(NamedTuple):
    """GO: the broker has read the CHECK of ``key`` (and everything before it)."""

    key: bytes


def ask(identity: bytes, key: bytes) -> list[bytes]:
    return [identity, b"", WORKER, ASK, key]


def go(identity: bytes, key: bytes) -> list[bytes]:
    return [identity, b"", WORKER, GO, key]


def check(key: bytes) -> list[bytes]:
    return [b"", WORKER, CHECK, key]


def check_key(rest: list[bytes]) -> bytes:
    """The key of a CHECK (the frames after its command)."""
    if len(rest) != 1:
        raise ProtocolError("CHECK takes one frame, the task key")
    return rest[0]


def parse_ask_or_go(frames: list[bytes]) -> BrokerAsk | BrokerGo:
    """An ASK or GO a worker received (``frames[2]`` is its command)."""
    if len(frames) != 4:
        raise ProtocolError("ASK and GO take one frame, the task key")
    return BrokerAsk(frames[3]) if frames[2] == ASK else BrokerGo(frames[3])
