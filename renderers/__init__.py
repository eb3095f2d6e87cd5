"""The renderers of DIPS: each is a service that turns a request map into image bytes.

``import renderers`` registers every renderer; the worker then calls
``renderers.get(service).render(request)``. See docs/RENDERERS.md for each service's request.
"""

from __future__ import annotations

from renderers import settings as _settings
from renderers.registry import Field, Renderer, get, names, register
from renderers.settings import Settings, configure, current

_settings.install_bomb_guard()
configure(_settings.from_environment())

from renderers import ecard, toolkit  # noqa: E402  (they register on import)

__all__ = [
    "Field",
    "Renderer",
    "Settings",
    "configure",
    "current",
    "ecard",
    "toolkit",
    "get",
    "names",
    "register",
]
