"""The ``info`` service: what a source is, without rendering it.

Takes the same source as ``imgproxy`` (``source`` URL or ``image`` bytes) and answers
``{"width", "height" (upright, after the EXIF orientation), "format" ("jpeg", "png",
"webp", "gif"), "orientation" (EXIF 1-8), "animated", "frames", "blurhash",
"source": {"length", "etag"?, "last_modified"?}, "warning"?}``, the warning when the source
is damaged (decoded only as far as it goes, see :mod:`renderers.decode`). A JPEG is decoded
at 1/8 scale for the BlurHash, which is computed on a thumbnail of at most 32 px.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mdp.errors import BadRequest
from renderers import blurhash, settings, sources
from renderers.decode import open_image
from renderers.imgproxy.service import (
    SOURCE_FIELDS,
    SOURCE_FORMATS,
    damage_warning,
    unchanged,
)
from renderers.registry import Field, Renderer, register
from renderers.samples import EXAMPLE_IMAGE


def _components(request: Mapping[str, Any]) -> tuple[int, int]:
    value = request.get("blurhash")
    if value is None:
        return (4, 3)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 9 for v in value)
    ):
        return (value[0], value[1])
    raise BadRequest("blurhash must be [x, y] components, each 1-9", "blurhash")


@register
class InfoService(Renderer):
    """Dimensions, format, orientation, animation and a BlurHash of a source."""

    name = "info"
    content_type = ""  # a map
    fields = SOURCE_FIELDS + (
        Field("blurhash", "list [x, y] of integers 1-9", doc="BlurHash components; [4, 3]"),
    )
    example = {"image": EXAMPLE_IMAGE}

    def render_checked(self, request: Mapping[str, Any]) -> dict[str, Any]:
        limits = settings.current()
        x, y = _components(request)
        known = sources.if_changed(request)
        with sources.from_request(request, limits, known=known) as source:
            same = unchanged(source, known)
            if same is not None:
                return same
            decoded = open_image(source.blob, "source", limits, lambda size: (32, 32))
        width, height = decoded.upright_source_size
        orientation = decoded.orientation
        decoded.upright()
        reply = {
            "width": width,
            "height": height,
            "format": SOURCE_FORMATS[decoded.format],
            "orientation": orientation,
            "animated": decoded.frames > 1,
            "frames": decoded.frames,
            "blurhash": blurhash.encode(decoded.image, x, y),
            "source": source.describe(),
        }
        if decoded.damage is not None:
            reply["warning"] = damage_warning(decoded.damage)
        return reply
