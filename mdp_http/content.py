"""What the gateway knows of services: reply content types and which fields are bytes.

The renderers' registry is the authority when the ``renderers`` package is installed
beside the gateway (it is imported only to look things up); without it, or for a service
it does not know, the reply's first bytes tell the image type.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"

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


@functools.cache
def _registry() -> Any:
    try:
        import renderers
    except Exception as exc:  # not installed here, or broken: sniffing still works
        log.info("renderers not importable (%s); content types are sniffed", exc)
        return None
    return renderers


def content_type(service: str, request: Mapping[str, Any], data: bytes) -> str:
    """The Content-Type of ``data``, the reply of ``service`` to ``request``."""
    registry = _registry()
    if registry is not None:
        try:
            declared = registry.get(service).content_type_for(request)
        except Exception:  # unknown to this registry, or the request does not choose
            declared = None
        if isinstance(declared, str) and declared:
            return declared
    return sniff(data)


def bytes_fields(service: str) -> frozenset[str]:
    """Top-level request fields the service's renderer declares as bytes (base64 in JSON)."""
    registry = _registry()
    if registry is None:
        return frozenset()
    try:
        fields = registry.get(service).fields
    except Exception:
        return frozenset()
    return frozenset(f.name for f in fields if f.kind.startswith("bytes"))
