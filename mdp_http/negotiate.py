"""Content negotiation and HTTP validators for images (no I/O).

With the output format left open, a reply takes the source's format, or AVIF / WebP when
the client's ``Accept`` names them (with q > 0) and the operator enables them; such a reply
``Vary: Accept``. A request's key (:func:`request_key`) is the digest of everything that
decides its bytes: the canonical operation, the source's identity, the negotiated format and
the code version of the image workers (what they report in ``mmi.status``). Its strong ETag
is derived from the key, so a conditional GET is answered (304) without rendering anything.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
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


def not_modified(if_none_match: str | None, if_modified_since: str | None, tag: str,
                 last_modified: str) -> bool:
    """Whether a GET's preconditions (RFC 9110 13.2.2) make its answer 304: ``If-None-Match``
    when present, else ``If-Modified-Since`` against ``last_modified`` (a valid HTTP-date
    that is not earlier). A date that cannot be read is ignored, as the RFC asks."""
    if if_none_match is not None:
        return etag_matches(if_none_match, tag)
    since = _http_date(if_modified_since or "")
    modified = _http_date(last_modified)
    return since is not None and modified is not None and modified <= since


def _http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text.strip()[:64])
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime's form has no zone: HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


STALE_DIRECTIVES = ("stale-while-revalidate", "stale-if-error")


def cap_max_age(cache_control: str, left_s: float) -> str:
    """``cache_control`` for a URL that expires in ``left_s`` seconds: every ``max-age`` and
    ``s-maxage`` at most that (one added when there is none), and the directives that let a
    cache serve a stale copy dropped, so that no cache keeps the URL past its expiry
    (imgproxy's SetExpires caps max-age the same way). ``no-store`` is left as it is."""
    left = max(0, int(left_s))
    directives = [d.strip() for d in cache_control.split(",") if d.strip()]
    if any(d.lower() == "no-store" for d in directives):
        return cache_control
    out: list[str] = []
    capped = False
    for directive in directives:
        name, eq, value = directive.partition("=")
        lowered = name.strip().lower()
        if lowered in STALE_DIRECTIVES:
            continue
        if lowered in ("max-age", "s-maxage") and eq:
            seconds = value.strip().strip('"')
            given = int(seconds) if seconds.isdigit() else 0
            out.append(f"{lowered}={min(given, left)}")
            capped = capped or lowered == "max-age"
        else:
            out.append(directive)
    if not capped:
        out.append(f"max-age={left}")
    return ", ".join(out)
