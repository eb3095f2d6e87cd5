"""The one error hierarchy of DIPS.

Errors that travel on the wire carry a stable ``code`` string; :func:`from_wire`
turns a decoded error map back into the matching exception class.
"""

from __future__ import annotations

from typing import Any


class MDPError(Exception):
    """Base class of every error DIPS raises on purpose."""


class ConfigError(MDPError):
    """A configuration value or command-line flag is wrong."""


class ProtocolError(MDPError):
    """A peer sent a message that does not follow the protocol."""


class Timeout(MDPError):
    """No reply came back after every broker was tried."""

    def __init__(self, message: str, brokers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.brokers = brokers


class RequestError(MDPError):
    """A request was answered with an error; ``code`` says which kind."""

    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

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


class WorkerError(RequestError):
    """The handler failed; ``code`` and ``message`` come from the worker."""

    code = "worker_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, field)
        if code is not None:
            self.code = code


_BY_CODE: dict[str, type[RequestError]] = {
    cls.code: cls
    for cls in (BadRequest, UnknownService, Overloaded, Expired, WorkerTimeout, WorkerError)
}


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
