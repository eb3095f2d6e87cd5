"""Where a worker's handler comes from: ``echo`` built in, the rest from entry points.

A package offers services by declaring an entry point in the group ``dips.services``::

    [project.entry-points."dips.services"]
    renderers = "renderers"

The entry point loads an object with ``services()`` returning a mapping of service name to
handler (a callable taking the request map and returning the result) and, optionally,
``warm_up()``: once-per-process work to do before the worker announces itself. A module
with those two functions will do. Third parties extend DIPS this way without touching it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mdp.errors import ConfigError

log = logging.getLogger(__name__)

GROUP = "dips.services"

Handle = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Handler:
    """A service's handler and the package whose source the code version covers.

    A ``raw`` handler takes the request frame (already checked to be a valid request map)
    and returns the msgpack encoding of its result, so nothing is decoded or re-encoded.
    An ``instant`` handler (``echo``) cannot run long, so the worker does not put it under
    the sentinel's watch while it runs.
    """

    service: str
    call: Callable[[Any], Any]
    package: str | None = None  # top-level package that provided it; None: built in
    raw: bool = False
    warm_up: Callable[[], None] | None = None
    instant: bool = False  # always done in microseconds: no sentinel watch needed


def _echo_raw(frame: bytes) -> bytes:
    """The built-in diagnostic service: the request, unchanged (not even re-encoded)."""
    return frame


ECHO = Handler("echo", _echo_raw, None, raw=True, instant=True)


def plain(service: str, call: Handle) -> Handler:
    """A handler given directly (tests, benchmarks): a callable of the request map."""
    return Handler(service, call, getattr(call, "__module__", "").partition(".")[0] or None)


# Used when no distribution declares the group (a source tree run without being installed):
# the packages this repository ships.
FALLBACK_PROVIDERS = (metadata.EntryPoint("renderers", "renderers", GROUP),)


def _providers() -> list[metadata.EntryPoint]:
    found = list(metadata.entry_points(group=GROUP))
    return found or list(FALLBACK_PROVIDERS)


def provider_modules() -> list[str]:
    """The modules the entry points of the group name (without importing them)."""
    return [entry.value.partition(":")[0].strip() for entry in _providers()]


def _services_of(entry: metadata.EntryPoint) -> tuple[Mapping[str, Handle], Any]:
    provider = entry.load()
    services = provider.services() if callable(getattr(provider, "services", None)) else provider
    if not isinstance(services, Mapping):
        raise ConfigError(f"entry point {entry.name!r} of {GROUP!r} gives no service mapping")
    return services, provider


def resolve(service: str) -> Handler:
    """The handler of ``service``; ConfigError listing the known services otherwise."""
    if service == "echo":
        return ECHO
    known = ["echo"]
    for entry in _providers():
        try:
            services, provider = _services_of(entry)
        except ConfigError:
            raise
        except Exception as exc:  # a broken plug-in is named, not a traceback
            raise ConfigError(f"cannot load {GROUP} entry point {entry.name!r} "
                              f"({entry.value}): {type(exc).__name__}: {exc}") from exc
        call = services.get(service)
        if call is not None:
            warm_up = getattr(provider, "warm_up", None)
            package = entry.value.partition(":")[0].partition(".")[0]
            return Handler(service, call, package, warm_up=warm_up if callable(warm_up)
                           else None)
        known.extend(services)
    raise ConfigError(f"unknown service {service!r}; known: {', '.join(sorted(known))}")
