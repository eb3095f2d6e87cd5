"""The one error hierarchy of DIPS, and the one list of error codes.

Errors that travel on the wire carry a stable ``code`` string. Every code DIPS itself uses
is declared once, in :data:`CODES`, with the :class:`Blame` that says whose fault it is
(the doors map a blame to an HTTP status or a Gearman failure, the dashboard and the batch
runner tell a caller's mistake from a fleet's fault by it). :func:`from_wire` turns a
decoded error map back into the matching exception class; a code from a handler that is not
in the list arrives as :class:`WorkerError` carrying that code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Blame(enum.Enum):
    """Whose fault an error is, and so what a caller may do about it."""

    CALLER = "caller"  # the request is wrong: do not retry it as it is
    MISSING = "missing"  # nothing offers what was asked for (a service, a source)
    CAPACITY = "capacity"  # too much work now: retry later
    DEADLINE = "deadline"  # time ran out
    FLEET = "fleet"  # a worker or the platform failed on a valid request


@dataclass(frozen=True)
class Code:
    """One error code: its name, whose fault it is and what it means."""

    name: str
    blame: Blame
    meaning: str


def _codes(*codes: Code) -> dict[str, Code]:
    return {code.name: code for code in codes}


CODES: dict[str, Code] = _codes(
    Code("bad_request", Blame.CALLER, "the request is malformed or a field is wrong"),
    Code("unknown_service", Blame.MISSING, "no worker offers the service"),
    Code("overloaded", Blame.CAPACITY, "the service's (or broker's) queue is full"),
    Code("expired", Blame.DEADLINE, "the deadline passed before a worker took the request"),
    Code("timeout", Blame.DEADLINE, "no reply came back before the caller's deadline"),
    Code("worker_timeout", Blame.DEADLINE, "the handler ran past the worker's time limit"),
    Code("worker_lost", Blame.FLEET,
         "workers died or froze while running the request (a poisoned request)"),
    Code("worker_error", Blame.FLEET, "the handler failed"),
    Code("internal", Blame.FLEET, "a handler or gateway raised an unexpected exception"),
    Code("out_of_memory", Blame.FLEET, "the request needed more memory than a worker may use"),
    Code("client_closed", Blame.CALLER, "the client was closed while the call was outstanding"),
    # the image services' sources (fetched by the worker; renderers/sources)
    Code("source_forbidden", Blame.CALLER, "the source is not allowed (origin, address, path)"),
    Code("source_not_found", Blame.MISSING, "the source does not exist"),
    Code("source_too_large", Blame.CALLER, "the source is larger than the limit"),
    Code("source_timeout", Blame.DEADLINE, "the source did not arrive in time"),
    Code("source_not_image", Blame.CALLER, "the source is not an image DIPS reads"),
    Code("source_error", Blame.FLEET, "the source could not be fetched"),
    # the doors' own (mdp_http.errors, mdp_gearman.mapping)
    Code("forbidden", Blame.CALLER, "a signed URL's signature is missing or wrong"),
    Code("not_found", Blame.MISSING, "no such path, or an image URL past its expiry"),
    Code("too_large", Blame.CALLER, "the request body is larger than the door accepts"),
    Code("unsupported_media_type", Blame.CALLER, "the body's content type is none the door reads"),
    Code("body_timeout", Blame.CALLER, "the caller did not send its whole body in time"),
    Code("bad_reply", Blame.FLEET, "a worker's result is not what the service's contract says"),
    Code("gearman_fail", Blame.FLEET, "a Gearman worker sent WORK_FAIL"),
    Code("gearman_exception", Blame.FLEET, "a Gearman worker sent WORK_EXCEPTION"),
)


def blame_of(code: str) -> Blame:
    """Whose fault an error code is; a code not in :data:`CODES` (a handler's own) is the
    fleet's."""
    known = CODES.get(code)
    return known.blame if known is not None else Blame.FLEET


def a_worker_failed(code: str) -> bool:
    """Whether an error reply counts as its worker's failure (``failures`` in
    ``mmi.status``): the fleet's faults and a handler past its time limit, not a caller's
    mistake nor anything of a source's origin (missing, slow, failing)."""
    if code.startswith("source_"):
        return False
    return code == "worker_timeout" or blame_of(code) is Blame.FLEET


class MDPError(Exception):
    """Base class of every error DIPS raises on purpose."""

    code = "internal"


class ConfigError(MDPError):
    """A configuration value or command-line flag is wrong."""

    code = "bad_request"


class ProtocolError(MDPError):
    """A peer sent a message that does not follow the protocol."""

    code = "bad_request"


class Timeout(MDPError):
    """No reply came back after every broker was tried."""

    code = "timeout"

    def __init__(self, message: str, brokers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.brokers = brokers

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self)}


class ClientClosed(MDPError):
    """The client was closed while the call was outstanding."""

    code = "client_closed"


class RequestError(MDPError):
    """A request was answered with an error; ``code`` says which kind."""

    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def blame(self) -> Blame:
        return blame_of(self.code)

    def to_wire(self) -> dict[str, Any]:
        """The error as a map for a reply body."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.code}: {self.message}{where}"


class BadRequest(RequestError):
    """The request is malformed or a field has a wrong value."""

    code = "bad_request"


class UnknownService(RequestError):
    """No worker offers the requested service."""

    code = "unknown_service"


class Overloaded(RequestError):
    """The service's queue is full; try again later."""

    code = "overloaded"


class Expired(RequestError):
    """The request's deadline passed before a worker could take it."""

    code = "expired"


class WorkerTimeout(RequestError):
    """The handler ran past the worker's per-request time limit."""

    code = "worker_timeout"


class WorkerLost(RequestError):
    """Every worker that ran the request died or froze: it is taken for poisoned."""

    code = "worker_lost"


class WorkerError(RequestError):
    """The handler failed; ``code`` and ``message`` come from the worker."""

    code = "worker_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, field)
        if code is not None:
            self.code = code


_BY_CODE: dict[str, type[RequestError]] = {
    cls.code: cls
    for cls in (BadRequest, UnknownService, Overloaded, Expired, WorkerTimeout, WorkerLost,
                WorkerError)
}
assert set(_BY_CODE) <= set(CODES), "every exception's code is in CODES"  # noqa: S101 (ours)


def from_wire(error: Any) -> RequestError:
    """Build the exception for an error map received in a reply."""
    if not isinstance(error, dict):
        return WorkerError(f"malformed error reply: {error!r:.200}")
    code = error.get("code")
    message = error.get("message")
    field = error.get("field")
    message = message if isinstance(message, str) else repr(message)
    field = field if isinstance(field, str) else None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        return WorkerError(message, field, code=code if isinstance(code, str) else None)
    return cls(message, field)
