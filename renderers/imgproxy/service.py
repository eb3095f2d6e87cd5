"""The ``imgproxy`` service: a source, imgproxy's operations, a negotiated format.

Request (the contract with the HTTP door, docs/RENDERERS.md)::

    {"source": "https://host/path" | "local:///path"  (or "image": bytes),
     "ops": {canonical option map}, "format": "jpeg"|"png"|"webp"|"avif"|"gif"|"",
     "accept": ["avif", "webp"], "quality": int | None}

Reply: ``{"image": bytes, "content_type": str, "width": int, "height": int,
"source": {"length": int, "etag"?: str, "last_modified"?: str}, "warning"?: str}``, the
warning saying the source was damaged and rendered as far as it decodes (see
:mod:`renderers.decode`). With ``if_changed``
(the source's validators from an earlier reply) and the source unchanged, only
``{"unchanged": True, "source": {...}}``: nothing is decoded (a local file is opened; a
remote one is asked for conditionally, or found fresh in the source cache).

A format left open keeps the source's (a PNG with alpha stays PNG), or becomes AVIF or WebP
when the client accepts it and the worker enables it (``auto_avif``, ``auto_webp``), each
only when it can hold the result's size (else the next; a WebP source's result too wide for
WebP becomes PNG). A format asked for that cannot hold it is a bad request naming its limit.
Animated GIF and WebP stay animated when the result is GIF or WebP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mdp.errors import BadRequest
from renderers import settings, sources
from renderers.decode import Blob, Decoded, animation, loop_count, open_image
from renderers.encode import (
    ANIMATED,
    CONTENT_TYPES,
    Output,
    check_side,
    encode,
    encode_frames,
    fits,
)
from renderers.imgproxy import options as imgproxy_options
from renderers.imgproxy.geometry import plan as make_plan
from renderers.imgproxy.options import Options
from renderers.imgproxy.pipeline import (
    Frames,
    check_result,
    draft_hint,
    orient,
    oriented_size,
    written_orientation,
)
from renderers.registry import Field, Renderer, register
from renderers.samples import EXAMPLE_IMAGE
from renderers.settings import Settings

FORMATS = ("jpeg", "png", "webp", "avif", "gif")
SOURCE_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WebP": "webp", "GIF": "gif"}
DEFAULT_QUALITY = {"jpeg": 80, "webp": 80, "avif": 65}  # imgproxy's defaults
MAX_ACCEPT = 16

SOURCE_FIELDS = (
    Field(
        "source",
        "string: http(s)://host/path or local:///path",
        doc="fetched by the worker (allow-list, roots); or image",
    ),
    Field("image", "bytes: a JPEG, PNG, WebP or GIF image", doc="the source itself; or source"),
    Field(
        "if_changed",
        "map: etag and/or last_modified of the source, as a reply gave them",
        doc="render only if the source changed since; else answer {unchanged: true}",
    ),
)


def unchanged(source: sources.Source, known: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The reply to a request whose ``if_changed`` names the source as it still is."""
    if known is None or not source.matches(known):
        return None
    return {"unchanged": True, "source": source.describe()}


def output_format(
    requested: str | None,
    decoded: Decoded,
    accept: list[str],
    limits: Settings,
    size: tuple[int, int] = (1, 1),
) -> str:
    """The format of the result (of ``size``): the one asked for (refused if it cannot hold
    the size), else negotiated, else the source's, among those that can hold it."""
    if requested:
        check_side(size, requested)
        return requested
    animated = decoded.frames > 1
    if "avif" in accept and limits.auto_avif and not animated and fits(size, "avif"):
        return "avif"
    if "webp" in accept and limits.auto_webp and fits(size, "webp"):
        return "webp"
    own = SOURCE_FORMATS[decoded.format]
    return own if fits(size, own) else "png"


def parse_format(request: Mapping[str, Any]) -> str | None:
    value = request.get("format")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.lower() in FORMATS + ("jpg",):
        return "jpeg" if value.lower() == "jpg" else value.lower()
    raise BadRequest(
        f"format must be one of {', '.join(FORMATS)} or empty; got {value!r:.40}", "format"
    )


def parse_accept(request: Mapping[str, Any]) -> list[str]:
    value = request.get("accept")
    if value is None:
        return []
    if (
        not isinstance(value, list | tuple)
        or len(value) > MAX_ACCEPT
        or not all(isinstance(item, str) for item in value)
    ):
        raise BadRequest(f"accept must be a list of at most {MAX_ACCEPT} format names", "accept")
    return [item.lower() for item in value]


def parse_quality(request: Mapping[str, Any]) -> int | None:
    value = request.get("quality")
    if value is None or value == 0:  # imgproxy: 0 is "the default"
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise BadRequest(f"quality must be an integer 1-100, got {value!r:.40}", "quality")
    return value


def render(
    data: bytes | Blob,
    options: Options,
    fmt: str | None,
    accept: list[str],
    quality: int | None,
    limits: Settings,
) -> tuple[bytes, str, tuple[int, int], str | None]:
    """The result's bytes, its format and size, and what was damaged in the source."""
    decoded = open_image(data, "source", limits, draft_hint(options, limits),
                         options.auto_rotate)
    oriented = oriented_size(decoded.source_size, decoded.orientation, options)
    plan = make_plan(oriented, options)
    check_result(plan, limits)
    chosen = output_format(fmt, decoded, accept, limits, plan.final)
    output = Output(
        format=chosen,
        quality=quality or DEFAULT_QUALITY.get(chosen),
        strip=options.strip_metadata,
        background=options.background or (255, 255, 255),
        orientation=written_orientation(decoded.orientation, options),
    )
    frames = Frames(plan, options, limits, oriented)
    if decoded.frames > 1 and chosen in ANIMATED:
        animated = _animate(data, decoded, frames, output, limits)
        return animated, chosen, plan.final, decoded.damage
    image = frames.apply(orient(decoded.image, decoded.orientation, options))
    return encode(image, output, decoded), chosen, image.size, decoded.damage


def _animate(
    data: bytes | Blob, decoded: Decoded, frames: Frames, output: Output, limits: Settings
) -> bytes:
    # Frames decoded and frames held once processed are both bounded: a small animation
    # enlarged to the limits would otherwise hold max_animation_frames x max_pixels.
    width, height = decoded.source_size
    result_w, result_h = frames.plan.final
    keep = min(
        decoded.frames,
        limits.max_animation_frames,
        max(1, limits.max_animation_pixels // max(width * height, result_w * result_h)),
    )
    images, durations = [], []
    for frame, duration in animation(data, "source", limits, keep, decoded):
        images.append(frames.apply(orient(frame, decoded.orientation, frames.options)))
        durations.append(duration)
    return encode_frames(images, durations, loop_count(data), output)


@register
class ImgproxyService(Renderer):
    """imgproxy's processing options on a source fetched by the worker."""

    name = "imgproxy"
    content_type = ""  # the reply is a map whose content_type follows the negotiation
    fields = SOURCE_FIELDS + (
        Field(
            "ops",
            "map: imgproxy's options, canonical (docs/RENDERERS.md)",
            doc="absent: the source re-encoded",
        ),
        Field(
            "format",
            "jpeg | png | webp | avif | gif | ''",
            doc="'' or absent: the source's, or the best of accept",
        ),
        Field("accept", "list of format names", doc="what the client takes: avif, webp"),
        Field("quality", "integer 1-100", doc="jpeg and webp 80, avif 65 when absent"),
    )
    example = {"image": EXAMPLE_IMAGE, "format": "webp"}

    def render_checked(self, request: Mapping[str, Any]) -> dict[str, Any]:
        limits = settings.current()
        options = imgproxy_options.parse(request.get("ops"), limits.max_side)
        fmt = parse_format(request)
        accept = parse_accept(request)
        quality = parse_quality(request)
        known = sources.if_changed(request)
        with sources.from_request(request, limits, known=known) as source:
            same = unchanged(source, known)
            if same is not None:
                return same
            image, chosen, size, damage = render(
                source.blob, options, fmt, accept, quality, limits
            )
        reply = {
            "image": image,
            "content_type": CONTENT_TYPES[chosen],
            "width": size[0],
            "height": size[1],
            "source": source.describe(),
        }
        if damage is not None:
            reply["warning"] = damage_warning(damage)
        return reply


def damage_warning(damage: str) -> str:
    """The reply's warning for a source rendered only as far as it decoded."""
    return f"damaged source rendered as far as it decodes ({damage})"
