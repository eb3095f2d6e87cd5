"""Meta frames: the one msgpack map a DIPS extension command carries, and its field checks.

Every direction's parser reads its meta fields through these checks, so a field means the
same and fails with the same ProtocolError wherever it travels.
"""

from __future__ import annotations

from typing import Any

import msgpack

from mdp.body import pack
from mdp.errors import ProtocolError
from mdp.protocol.constants import (
    DIPS_VERSION,
    MAX_ANNOUNCED,
    MAX_BATCH,
    MAX_CK_BYTES,
    MAX_LOSSES,
    PROGRESS_KINDS,
)

_PACKER = msgpack.Packer(use_bin_type=True)  # (made once: msgpack.packb makes one per call)


def pack_meta(meta: dict[str, Any]) -> bytes:
    """A meta frame: one msgpack map.

    Meta maps are built by our own code from plain values (ints, bytes, str, lists, maps),
    which one Packer encodes in C without letting go of the GIL, so every thread can share
    it; a value it refuses (a str with surrogate escapes) is encoded by :func:`pack`
    (the Packer resets itself when it raises)."""
    try:
        return _PACKER.pack(meta)
    except Exception:
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


def int_field(meta: dict[str, Any], key: str, what: str, default: int | None = None,
               low: int = 0, high: int = 2**63 - 1) -> int | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{what} meta field {key!r} is not an integer in [{low}, {high}]")
    return value


def priority_field(meta: dict[str, Any], what: str) -> int:
    """A request priority, clamped to low (-1) .. high (1)."""
    pri = int_field(meta, "pri", what, 0, -(2**31), 2**31)
    return 0 if pri is None else max(-1, min(1, pri))


def ids_field(meta: dict[str, Any], key: str, what: str) -> list[int]:
    ids = meta.get(key, [])
    if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ProtocolError(f"{what} meta field {key!r} is not a list of request ids")
    return ids


def keys_field(meta: dict[str, Any], what: str) -> list[bytes]:
    """The ``keys`` of a TASKS or REPLIES: 1 to MAX_BATCH task keys (bytes)."""
    keys = meta.get("keys")
    if (not isinstance(keys, list) or not 0 < len(keys) <= MAX_BATCH
            or not all(isinstance(k, bytes) and 0 < len(k) <= 255 for k in keys)):
        raise ProtocolError(f"{what} meta field 'keys' must list 1-{MAX_BATCH} task keys")
    return keys


def version_field(meta: dict[str, Any]) -> int | None:
    """The DIPS version a handshake meta claims; None when it claims none we speak."""
    version = meta.get("dips")
    if isinstance(version, int) and not isinstance(version, bool) and version >= DIPS_VERSION:
        return DIPS_VERSION
    return None


def sending_field(meta: dict[str, Any], what: str) -> int:
    """The byte count a HEARTBEAT or PONG announces (0: none)."""
    size = meta.get("sending", 0)
    if type(size) is not int or not 0 <= size <= MAX_ANNOUNCED:
        raise ProtocolError(f"{what} 'sending' must be a byte count, not {size!r:.40}")
    return size


def ck_field(meta: dict[str, Any], what: str) -> bytes | None:
    """A coalescing key: 1 to MAX_CK_BYTES bytes, or absent."""
    ck = meta.get("ck")
    if ck is None:
        return None
    if not isinstance(ck, bytes) or not 0 < len(ck) <= MAX_CK_BYTES:
        raise ProtocolError(f"{what} meta field 'ck' must be 1-{MAX_CK_BYTES} bytes (bin)")
    return ck


def losses_field(meta: dict[str, Any], what: str, low: int = 0) -> int:
    """How many workers a request has cost (``losses``, 0 when absent): an integer from
    ``low`` to MAX_LOSSES; anything else (a bool, a float, a string, a negative or huge
    number) is a ProtocolError naming it."""
    losses = meta.get("losses", 0)
    if type(losses) is not int or not low <= losses <= MAX_LOSSES:
        raise ProtocolError(f"{what} meta field 'losses' must be a count of workers from {low} "
                            f"to {MAX_LOSSES}, not {losses!r:.40}")
    return losses


def progress_fields(meta: dict[str, Any], what: str) -> tuple[str, int | None, int | None]:
    kind = meta.get("kind")
    if kind not in PROGRESS_KINDS:
        raise ProtocolError(f"{what} meta field 'kind' must be one of {', '.join(PROGRESS_KINDS)}")
    num = int_field(meta, "num", what)
    den = int_field(meta, "den", what)
    if kind == "status" and (num is None or den is None):
        raise ProtocolError(f"{what} of kind 'status' needs 'num' and 'den'")
    return kind, num, den
