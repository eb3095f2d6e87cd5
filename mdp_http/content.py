"""What the gateway knows of services: reply content types and which fields are bytes.

The fleet is the authority: each service's workers describe it (``info`` in the brokers'
``mmi.status``, :class:`mdp.status.ServiceInfo`), and the poller hands that description
here. Where there is none yet, or its content type is "" (the request chooses it), the
reply's first bytes tell the type; and a JSON request for a service not yet described
has its base64 strings of a known file type read as bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from mdp.status import ServiceInfo

OCTET_STREAM = "application/octet-stream"
MIN_GUESSED_BASE64 = 16  # shorter strings are words, not files

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, "application/pdf"),
    (b"<svg", 0, "image/svg+xml"),
)


def sniff(data: bytes) -> str:
    """The content type the magic bytes of ``data`` announce."""
    for magic, offset, kind in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
        return "image/avif"
    return OCTET_STREAM


def content_type(info: ServiceInfo | None, data: bytes) -> str:
    """The Content-Type of ``data``, a reply of the service that ``info`` describes."""
    if info is not None and info.content_type:
        return info.content_type
    return sniff(data)


def bytes_fields(info: ServiceInfo | None) -> frozenset[str]:
    """Top-level request fields the service declares as bytes (base64 in JSON)."""
    return info.bytes_fields if info is not None else frozenset()


def guess_bytes(request: Mapping[str, Any], info: ServiceInfo | None) -> dict[str, Any]:
    """``request`` with, when no ``info`` says which fields are bytes, every top-level
    string that is base64 of a file type :func:`sniff` knows replaced by its bytes."""
    if info is not None:
        return dict(request)
    return {name: _file_bytes(value) if isinstance(value, str) else value
            for name, value in request.items()}


def _file_bytes(text: str) -> str | bytes:
    if len(text) < MIN_GUESSED_BASE64:
        return text
    try:
        if sniff(base64.b64decode(text[:MIN_GUESSED_BASE64], validate=True)) == OCTET_STREAM:
            return text
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
