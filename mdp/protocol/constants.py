"""The wire's constants: protocol headers, command codes, limits and the MMI names.

Every other module of ``mdp.protocol`` builds or checks frames with these, so they sit apart
from all of them. ``valid_service`` and ``sent_until`` live here too: each needs nothing but
a constant of this module.
"""

from __future__ import annotations

import re

DIPS_VERSION = 2  # the extension version both handshakes carry as "dips"

# A message on a connection waits behind the bytes sent before it: a ping, probe or
# heartbeat behind a big body is not late until those bytes may have gone over the slowest
# link a body is allowed, the *link floor* (else a busy link looks like a dead or frozen
# peer); see docs/PROTOCOL.md, "Big messages on slow links". Every role's ``link_floor``
# setting (``--link-floor``, mdp.rates) defaults to this.
DEFAULT_LINK_FLOOR = 10_000_000  # bytes per second: 10 MB/s, 80 Mbit/s
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
CANCEL = b"\x08"  # client -> broker, meta {"ids"}: it gave these up (to a WELCOME "cancel")
LOSSES = b"\x09"  # broker -> client: service, meta {id, losses}: workers its request cost

PROGRESS_KINDS = ("status", "data", "warning")  # Gearman's WORK_STATUS, WORK_DATA, WORK_WARNING
MAX_CK_BYTES = 64  # a coalescing key
MAX_LOSSES = 255  # the most workers a request may be said to have cost (LOSSES, "losses")

MMI_PREFIX = b"mmi."
MMI_SERVICE = b"mmi.service"
MMI_STATUS = b"mmi.status"

PRIORITIES = (-1, 0, 1)  # low, normal, high

_SERVICE_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def sent_until(until: float, size: int, at: float, link_floor: int) -> float:
    """When ``size`` bytes sent at ``at``, behind what was due to have gone by ``until``,
    may have gone at ``link_floor`` bytes per second."""
    return (until if until > at else at) + size / link_floor


def valid_service(name: bytes) -> bool:
    """Service names are 1-100 characters of letters, digits, '.', '_' and '-'."""
    return _SERVICE_NAME.fullmatch(name) is not None
