"""The registry of renderers: one service name, one renderer.

A renderer is a class with a service ``name``, the ``content_type`` of what it returns, the
``fields`` its request may carry (its schema, used to refuse unknown fields and to document
the service) and a ``render(request) -> bytes`` method. ``@register`` instantiates the class
once and files the instance under its name; a second renderer with the same name is refused.
The worker looks renderers up with :func:`get`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from mdp.errors import BadRequest, ConfigError

log = logging.getLogger(__name__)


GIL_YIELDING_SERVICES: frozenset[str] = frozenset()
"""The services that declare they never hold the GIL for long (``mdp.handlers.YIELDS_GIL``),
so that ``mdp-worker --transport auto`` gives their workers a plain link: none, for now.
Measured with ``tests/helpers/gil_probe.py`` on the heaviest inputs the limits allow
(docs/OPERATIONS.md, "The worker's transport"): the image services hold it for 0.2 to 2.3 s
in single Pillow calls (WebP decoding and encoding, drawing text, blurring, transposing a
50-megapixel image); ``ecard`` holds it at most ~70 ms and would qualify, but its cards ran
slower on a plain link than on pyzmq in 7 of 7 alternated pairs, so it is not declared."""


@dataclass(frozen=True)
class Field:
    """One field of a request: its name, whether it must be present, what it holds."""

    name: str
    kind: str
    required: bool = False
    doc: str = ""


class Renderer:
    """Base class of every renderer: a pure function from a request map to image bytes.

    Subclasses set ``name``, ``content_type``, ``fields`` and ``example`` and implement
    :meth:`render_checked`.
    :meth:`render` checks that the request is a map with only known fields first. Keys that
    start with ``_`` are reserved for the platform and are ignored.
    """

    name: ClassVar[str]
    content_type: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]
    example: ClassVar[Mapping[str, Any]] = {}
    """A small request that works (its images: ``samples.EXAMPLE_IMAGE``). The workers
    announce it, ``mdpctl services NAME`` builds its suggested call from it, and the tests
    run every renderer's, so it says what required flags cannot ("width, height or both")."""

    @property
    def yields_gil(self) -> bool:
        """Whether the service declares it never holds the GIL for long: the worker reads
        it on the bound ``render`` it is given (``mdp.handlers.declares_yields_gil``)."""
        return self.name in GIL_YIELDING_SERVICES

    def render(self, request: Mapping[str, Any]) -> Any:
        """Return the image (or a reply map) for ``request``, or raise
        :class:`~mdp.errors.BadRequest`."""
        check_known_fields(request, {field.name for field in self.fields})
        for field in self.fields:
            if field.required and request.get(field.name) is None:
                raise BadRequest(f"{field.name} is required: {field.kind}", field=field.name)
        return self.render_checked(request)

    def render_checked(self, request: Mapping[str, Any]) -> Any:
        """Render a request whose field names have been checked."""
        raise NotImplementedError

    def content_type_for(self, request: Mapping[str, Any]) -> str:
        """The content type of the reply to ``request`` (when the request can choose it)."""
        return self.content_type

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} -> {self.content_type}>"


def check_known_fields(request: Any, known: set[str], prefix: str = "") -> None:
    """Refuse anything but a map whose keys are all ``known`` (or start with ``_``)."""
    if not isinstance(request, Mapping):
        where = prefix.rstrip(".") or None
        raise BadRequest(f"expected a map, got {type(request).__name__}", field=where)
    for key in request:
        if not isinstance(key, str):
            raise BadRequest(f"field names must be strings, got {key!r:.40}", field=prefix or None)
        if key not in known and not key.startswith("_"):
            expected = ", ".join(sorted(known))
            raise BadRequest(f"unknown field; expected one of: {expected}", field=prefix + key)


R = TypeVar("R", bound=type[Renderer])

_registry: dict[str, Renderer] = {}
_lock = threading.Lock()


def register(cls: R) -> R:
    """Class decorator: instantiate ``cls`` and register it under ``cls.name``.

    Raises :class:`~mdp.errors.ConfigError` when the name is already taken.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__} has no service name")
    if name.startswith("mmi."):
        raise ConfigError(f"{name!r}: service names starting with 'mmi.' are reserved")
    with _lock:
        if name in _registry:
            other = type(_registry[name]).__qualname__
            raise ConfigError(f"renderer {name!r} is already registered by {other}")
        _registry[name] = cls()
    log.debug("registered renderer %r (%s)", name, cls.__qualname__)
    return cls


def unregister(name: str) -> None:
    """Remove a renderer (for tests that register throwaway ones)."""
    with _lock:
        _registry.pop(name, None)


def get(name: str) -> Renderer:
    """The renderer registered under ``name``; ``KeyError`` when there is none."""
    try:
        return _registry[name]
    except KeyError:
        raise KeyError(f"no renderer named {name!r}; have {', '.join(names())}") from None


def names() -> list[str]:
    """The registered service names, sorted."""
    return sorted(_registry)
