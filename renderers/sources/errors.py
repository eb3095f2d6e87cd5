"""The errors of fetching a source, each with the code the image server's contract names.

Every one names the field ``source``. The doors map the codes to HTTP statuses:
``source_forbidden`` 403, ``source_not_found`` 404, ``source_too_large`` 413,
``source_timeout`` 504, ``source_not_image`` 422, ``source_error`` 502.
"""

from __future__ import annotations

from mdp.errors import RequestError

FIELD = "source"


class SourceError(RequestError):
    """The source could not be fetched (the origin failed, or answered oddly)."""

    code = "source_error"

    def __init__(self, message: str, field: str | None = FIELD) -> None:
        super().__init__(message, field)


class SourceForbidden(SourceError):
    """The source is not allowed: origin not listed, address refused, path outside a root."""

    code = "source_forbidden"


class SourceNotFound(SourceError):
    """The origin has no such source (404 or 410), or no root holds the file."""

    code = "source_not_found"


class SourceTooLarge(SourceError):
    """The source is larger than ``source_max_bytes``."""

    code = "source_too_large"


class SourceTimeout(SourceError):
    """The whole fetch, redirects included, took longer than ``source_timeout``."""

    code = "source_timeout"


class SourceNotImage(SourceError):
    """The bytes are not a JPEG, PNG, WebP or GIF image by their magic bytes."""

    code = "source_not_image"


CODES = tuple(
    cls.code
    for cls in (
        SourceError,
        SourceForbidden,
        SourceNotFound,
        SourceTooLarge,
        SourceTimeout,
        SourceNotImage,
    )
)
