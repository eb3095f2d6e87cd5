"""Content negotiation and HTTP validators for images (no I/O).

With the output format left open, a reply takes the source's format, or AVIF / WebP when
the client's ``Accept`` names them (with q > 0) and the operator enables them; such a reply
``Vary: Accept``. A request's key (:func:`request_key`) is the digest of everything that
decides its bytes: the canonical operation, the source's identity, the negotiated format and
the renderer's code version. Its strong ETag is derived from the key, so a conditional GET
is answered (304) without rendering anything.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from mdp.body import pack

AUTO_FORMATS = ("avif", "webp")  # preferred first
KEY_VERSION = b"dips-image-key-1"


def accepted(accept_header: str, enabled: Iterable[str]) -> tuple[str, ...]:
    """The formats of ``enabled`` that ``Accept`` names explicitly (q > 0), best first."""
    named: set[str] = set()
    for item in accept_header[:2048].split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        if not kind.lower().startswith("image/"):
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            named.add(kind.lower()[len("image/"):])
    allowed = set(enabled)
    return tuple(fmt for fmt in AUTO_FORMATS if fmt in allowed and fmt in named)


def request_key(*, service: str, source: str | bytes, ops: Mapping[str, Any], fmt: str,
                accept: tuple[str, ...], quality: int | None, cachebuster: str,
                version: str) -> bytes:
    """32 bytes that identify a result: equal keys, equal bytes.

    ``source`` is the source URL, or for an image sent in the body its SHA-256 digest.
    """
    identity = source if isinstance(source, str) else b"sha256:" + source
    material = pack([KEY_VERSION, service, identity, _canonical(ops), fmt,
                     list(accept) if not fmt else [], quality, cachebuster, version])
    return hashlib.sha256(material).digest()


def _canonical(value: Any) -> Any:
    """Maps with their keys sorted, so equal maps pack to equal bytes."""
    if isinstance(value, Mapping):
        return [[k, _canonical(value[k])] for k in sorted(value)]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def etag(key: bytes) -> str:
    """The strong ETag of a result key."""
    return '"' + base64.urlsafe_b64encode(key[:24]).decode("ascii") + '"'


def result_etag(key: bytes, source_etag: str, last_modified: str) -> str:
    """The strong ETag of a result: its key and the version of the source it was made
    from (the origin's ETag and Last-Modified as the worker reported them), so that a
    source changed in place gives its results new ETags. Without either: the key's."""
    if not source_etag and not last_modified:
        return etag(key)
    version = f"{source_etag}\n{last_modified}".encode()
    return etag(hashlib.sha256(key + b"\0" + version).digest())


def etag_matches(if_none_match: str, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weak forms compare too, as
    RFC 9110 asks of If-None-Match) or is ``*``."""
    header = if_none_match.strip()
    if header == "*":
        return True
    for candidate in header[:8192].split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == tag:
            return True
    return False
