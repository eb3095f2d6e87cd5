"""The renderers of DIPS: each is a service that turns a request map into image bytes.

``import renderers`` registers every renderer. DIPS workers find them through the entry point
``dips.services`` (see ``pyproject.toml``), which loads this module: :func:`services` maps
each service name to its handler, :func:`warm_up` runs before the worker announces itself,
and :func:`output_version` tells what its results depend on.
See docs/RENDERERS.md for each service's request.
"""

from __future__ import annotations

from typing import Any

from renderers import outputs as _outputs
from renderers import settings as _settings
from renderers.registry import Field, Renderer, get, names, register
from renderers.settings import Settings, configure, current

_settings.install_bomb_guard()
configure(_settings.from_environment())

from renderers import ecard, imgproxy, info, toolkit  # noqa: E402  (they register on import)


class Offered(dict):  # type: ignore[type-arg]
    """Service name -> handler, noting which services this process looks up.

    A worker asks its provider for the one service it offers (``mdp.handlers.resolve``
    looks it up by name), then calls :func:`warm_up`: what it looked up is what is worth
    warming, so an ``imgproxy`` worker never draws the card's templates and tiles (~8 MB
    that it would keep for its whole life).
    """

    def get(self, name: Any, default: Any = None) -> Any:
        if name in self:
            _wanted.add(name)
        return super().get(name, default)

    def __getitem__(self, name: Any) -> Any:
        found = super().__getitem__(name)
        _wanted.add(name)
        return found


_wanted: set[str] = set()


def services() -> Offered:
    """Service name -> handler, for the ``dips.services`` entry point."""
    return Offered({name: get(name).render for name in names()})


def output_version(*services: str) -> str:
    """What the results of ``services`` depend on (:mod:`renderers.outputs`): by default
    those this process looked up in :func:`services` (a worker's one service: ``resolve``
    looks it up before it asks for this), or every one when it looked up none."""
    return _outputs.output_version(set(services or _wanted) or set(names()))


def describe() -> dict[str, dict[str, Any]]:
    """Service name -> what it is, for the ``dips.services`` entry point: workers announce it
    in READY, so doors and ``mdpctl services`` learn content types and fields from the fleet.
    ``content_type`` is "" where the request chooses it (``format``); ``example`` is a small
    request that works."""
    described = {}
    for name in names():
        renderer = get(name)
        chosen = type(renderer).content_type_for is not Renderer.content_type_for
        doc = (type(renderer).__doc__ or "").strip().splitlines()
        described[name] = {
            "content_type": "" if chosen else renderer.content_type,
            "fields": [[f.name, f.kind, f.required, f.doc] for f in renderer.fields],
            "doc": doc[0] if doc else "",
            "example": dict(renderer.example),
        }
    return described


def warm_up(*services: str) -> None:
    """Do now the once-per-process work a first request would pay for.

    For ``services`` (by default those this process looked up in :func:`services`, or every
    one when it looked up none): ``ecard`` draws the card templates and tiles at both scales
    (~0.2 s, ~8 MB kept); the image services run the JPEG and PNG codecs once.
    """
    wanted = set(services or _wanted) or set(names())
    from renderers import samples

    if "ecard" in wanted:
        for scale in ecard.SCALES:
            get("ecard").render(samples.seed_request(scale=scale))
    if wanted - {"ecard"}:
        photo = samples.photo_jpeg(64, 48)
        get("thumbnail").render({"image": photo, "width": 16, "format": "png"})


__all__ = [
    "Field",
    "Offered",
    "Renderer",
    "Settings",
    "configure",
    "current",
    "describe",
    "ecard",
    "imgproxy",
    "info",
    "toolkit",
    "get",
    "names",
    "output_version",
    "register",
    "services",
    "warm_up",
]
