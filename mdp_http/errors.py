"""HTTP statuses for the errors of :mod:`mdp.errors`, and the gateway's own few subclasses.

The gateway's errors are local subclasses of the core hierarchy (``BadRequest``,
``Overloaded``), so they reach the client as the same JSON error map as a worker's.
"""

from __future__ import annotations

from typing import Any

from mdp.errors import BadRequest, MDPError, Overloaded, RequestError, Timeout
from mdp_http.peertext import unicode_text


class Forbidden(BadRequest):
    """A GET that needs a signature has none, or a wrong one."""

    code = "forbidden"


class TooLarge(BadRequest):
    """The request body is larger than the gateway accepts."""

    code = "too_large"


class UnsupportedMediaType(BadRequest):
    """The body's Content-Type is none the gateway reads."""

    code = "unsupported_media_type"


class Busy(Overloaded):
    """The gateway already runs as many requests as it is allowed to."""


class BodyTimeout(BadRequest):
    """The client did not send its whole body in time."""

    code = "body_timeout"


STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "forbidden": 403,
    "unknown_service": 404,
    "not_found": 404,
    "body_timeout": 408,
    "too_large": 413,
    "unsupported_media_type": 415,
    "overloaded": 503,
    "expired": 504,
    "worker_timeout": 504,
    "timeout": 504,
    "internal": 500,
    "out_of_memory": 500,
    "worker_lost": 502,
    "client_closed": 503,
    # fetching a source (the workers' guard; the imgproxy contract)
    "source_forbidden": 403,
    "source_not_found": 404,
    "source_too_large": 413,
    "source_timeout": 504,
    "source_not_image": 422,
    "source_error": 502,
    "bad_reply": 502,
}
WORKER_FAILED = 502  # a worker's own error code: the upstream failed


def status_for(exc: MDPError) -> int:
    """The HTTP status that fits an error."""
    if isinstance(exc, Busy):
        return 429
    if isinstance(exc, Timeout):
        return 504
    if isinstance(exc, RequestError):
        return STATUS_BY_CODE.get(exc.code, WORKER_FAILED)
    return 500


def error_map(exc: MDPError) -> dict[str, Any]:
    """The JSON body of an error response: the wire's error map."""
    if isinstance(exc, RequestError):
        error = exc.to_wire()
    elif isinstance(exc, Timeout):
        error = {"code": "timeout", "message": str(exc)}
    else:
        error = {"code": "internal", "message": str(exc)}
    # a worker's message may name a peer's bytes that were not UTF-8: JSON text holds U+FFFD
    return {"error": {k: unicode_text(v) if isinstance(v, str) else v for k, v in error.items()}}


class NotFound(BadRequest):
    """No such path, or an image URL past its ``expires`` time."""

    code = "not_found"


class BadReply(RequestError):
    """A worker answered with something that is not the result the contract describes."""

    code = "bad_reply"
