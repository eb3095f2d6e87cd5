"""``thumbnail``, ``crop``, ``watermark``, ``convert`` and ``image`` (a chain of operations).

Every toolkit request carries the source in ``image`` (bytes: JPEG, PNG, WebP, or GIF whose
first frame is used) and may set the output: ``format`` (jpeg, png, webp; absent: the
source's format, a GIF's being png),
``quality`` (1-100), ``strip`` (default true) and ``background`` (for alpha in a JPEG). The
four single-operation services take that operation's fields at the top level; ``image``
takes a list ``ops`` of maps, each with ``op`` naming the operation, so one round trip can
thumbnail, watermark and convert. docs/RENDERERS.md lists every field.

When the first operation is a thumbnail, a JPEG is decoded straight at the smallest
power-of-two reduction that still covers the thumbnail (``Image.draft``), and the image is
shrunk before it is turned upright per EXIF; both keep a 24-megapixel photo's thumbnail near
the decoder's own floor in time and memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mdp.errors import BadRequest
from renderers import fields, fonts, settings
from renderers.decode import open_image
from renderers.encode import CONTENT_TYPES, Output, encode
from renderers.ops import Crop, Operation, Thumbnail, Watermark, resize
from renderers.registry import Field, Renderer, check_known_fields, register
from renderers.samples import EXAMPLE_IMAGE
from renderers.settings import Settings

MAX_OPS = 16
MAX_TEXT_CHARS = 200
FORMATS = ("jpeg", "png", "webp")
KEEP_FORMAT = {"JPEG": "jpeg", "PNG": "png", "WebP": "webp", "GIF": "png"}
GRAVITY_ALIASES = {
    "centre": "center",
    "middle": "center",
    "top": "north",
    "bottom": "south",
    "left": "west",
    "right": "east",
    "top-left": "northwest",
    "top-right": "northeast",
    "bottom-left": "southwest",
    "bottom-right": "southeast",
}

OUTPUT_FIELDS = (
    Field("image", "bytes: a JPEG, PNG, WebP or GIF image", required=True),
    Field("format", "jpeg | png | webp", doc="default: the source's (a GIF's: png)"),
    Field("quality", "integer 1-100", doc="jpeg default 85, webp default 80; png ignores it"),
    Field("strip", "boolean", doc="default true: drop EXIF, XMP, comments; keep ICC"),
    Field("background", "colour #rgb or #rrggbb", doc="under transparency in a JPEG; #ffffff"),
)
THUMBNAIL_FIELDS = (
    Field("width", "integer 1-max_side", doc="box width; width, height or both"),
    Field("height", "integer 1-max_side", doc="box height"),
    Field("mode", "fit | fill", doc="fit inside the box (default) or fill it and crop"),
    Field("gravity", "center | north | ... | southwest", doc="where fill crops; center"),
    Field("upscale", "boolean", doc="default false: never enlarge"),
)
CROP_FIELDS = (
    Field("width", "integer 1-max_side", required=True),
    Field("height", "integer 1-max_side", required=True),
    Field("x", "integer >= 0", doc="left edge; with y, else placed at gravity"),
    Field("y", "integer >= 0", doc="top edge"),
    Field("gravity", "center | north | ... | southwest", doc="default center"),
)
WATERMARK_FIELDS = (
    Field("text", "string, at most 200 characters", doc="text mark; or mark"),
    Field("mark", "bytes: an image", doc="image mark; or text"),
    Field("position", "center | north | ... | southwest", doc="default southeast"),
    Field("margin", "integer 0-10000", doc="pixels from the edges, gap when tiled; 16"),
    Field("opacity", "number 0-1", doc="default 0.5"),
    Field("angle", "number -360-360", doc="degrees counter-clockwise; default 0"),
    Field("tiled", "boolean", doc="repeat the mark over the whole image; default false"),
    Field("font_size", "integer 4-2048", doc="text size in px; default 1/16 of short side"),
    Field("color", "colour", doc="text colour; default #ffffff"),
    Field("outline", "integer 0-64", doc="text outline width in px; default 0"),
    Field("outline_color", "colour", doc="default #000000"),
    Field("mark_width", "integer 1-max_side", doc="scale the image mark to this width"),
)
OPERATION_FIELDS = {
    "thumbnail": THUMBNAIL_FIELDS,
    "crop": CROP_FIELDS,
    "watermark": WATERMARK_FIELDS,
}
OPERATION_ALIASES = {"resize": "thumbnail"}


def _gravity(request: Mapping[str, Any], name: str, prefix: str, default: str) -> str:
    value = fields.choice(
        request, name, prefix, fields.GRAVITIES, default=default, aliases=GRAVITY_ALIASES
    )
    assert value is not None
    return value


def parse_output(request: Mapping[str, Any]) -> Output:
    fmt = fields.choice(request, "format", "", FORMATS, default="", aliases={"jpg": "jpeg"})
    return Output(
        format=fmt or "",
        quality=fields.integer(request, "quality", "", lo=1, hi=100),
        strip=fields.boolean(request, "strip", "", default=True),
        background=fields.colour(request, "background", "", default=(255, 255, 255)),
    )


def parse_thumbnail(request: Mapping[str, Any], prefix: str, limits: Settings) -> Thumbnail:
    width = fields.integer(request, "width", prefix, lo=1, hi=limits.max_side)
    height = fields.integer(request, "height", prefix, lo=1, hi=limits.max_side)
    if width is None and height is None:
        raise BadRequest(f"{prefix}width: give width, height or both", prefix + "width")
    mode = fields.choice(request, "mode", prefix, ("fit", "fill"), default="fit")
    if mode == "fill" and (width is None or height is None):
        missing = prefix + ("width" if width is None else "height")
        raise BadRequest(f"{missing}: mode fill needs both width and height", missing)
    return Thumbnail(
        width=width,
        height=height,
        mode=mode or "fit",
        gravity=_gravity(request, "gravity", prefix, "center"),
        upscale=fields.boolean(request, "upscale", prefix, default=False),
        prefix=prefix,
    )


def parse_crop(request: Mapping[str, Any], prefix: str, limits: Settings) -> Crop:
    width = fields.required_integer(request, "width", prefix, lo=1, hi=limits.max_side)
    height = fields.required_integer(request, "height", prefix, lo=1, hi=limits.max_side)
    x = fields.integer(request, "x", prefix, lo=0, hi=limits.max_side)
    y = fields.integer(request, "y", prefix, lo=0, hi=limits.max_side)
    if (x is None) != (y is None):
        missing = prefix + ("x" if x is None else "y")
        raise BadRequest(f"{missing}: give both x and y, or neither (then gravity)", missing)
    gravity = _gravity(request, "gravity", prefix, "center")
    return Crop(width, height, x, y, gravity, prefix)


def parse_watermark(request: Mapping[str, Any], prefix: str, limits: Settings) -> Watermark:
    text = fields.text(request, "text", prefix, max_chars=MAX_TEXT_CHARS)
    mark = fields.blob(request, "mark", prefix)
    fields.one_of(("text", text), ("mark (an image)", mark), prefix)
    if text is not None and limits.text_font is None:
        missing = fonts.missing_characters(text)
        if missing:
            raise BadRequest(
                f"{prefix}text: the bundled font has no glyph for {missing!r:.60}; the "
                "deployment can set DIPS_TEXT_FONT to a fuller font",
                prefix + "text",
            )
    return Watermark(
        text=text,
        mark=mark,
        position=_gravity(request, "position", prefix, "southeast"),
        margin=fields.integer(request, "margin", prefix, lo=0, hi=10_000, default=16) or 0,
        opacity=fields.number(request, "opacity", prefix, lo=0.0, hi=1.0, default=0.5),
        angle=fields.number(request, "angle", prefix, lo=-360.0, hi=360.0, default=0.0),
        tiled=fields.boolean(request, "tiled", prefix, default=False),
        font_size=fields.integer(request, "font_size", prefix, lo=4, hi=2048),
        color=fields.colour(request, "color", prefix, default=(255, 255, 255)),
        outline=fields.integer(request, "outline", prefix, lo=0, hi=64, default=0) or 0,
        outline_color=fields.colour(request, "outline_color", prefix, default=(0, 0, 0)),
        mark_width=fields.integer(request, "mark_width", prefix, lo=1, hi=limits.max_side),
        prefix=prefix,
    )


PARSERS: dict[str, Callable[[Mapping[str, Any], str, Settings], Operation]] = {
    "thumbnail": parse_thumbnail,
    "crop": parse_crop,
    "watermark": parse_watermark,
}


def parse_ops(value: Any, limits: Settings) -> list[Operation]:
    """The ``ops`` list of an ``image`` request."""
    if not isinstance(value, list | tuple):
        raise BadRequest(
            f"ops must be a list of operation maps, got {type(value).__name__}", field="ops"
        )
    if len(value) > MAX_OPS:
        raise BadRequest(f"ops has {len(value)} operations; at most {MAX_OPS}", field="ops")
    ops = []
    for index, item in enumerate(value):
        prefix = f"ops[{index}]."
        check_known_fields(item, {"op"} | {f.name for f in _all_op_fields()}, prefix)
        name = fields.choice(
            item, "op", prefix, tuple(PARSERS), default=None, aliases=OPERATION_ALIASES
        )
        if name is None:
            raise BadRequest(f"{prefix}op is required: one of {', '.join(PARSERS)}", prefix + "op")
        check_known_fields(item, {"op"} | {f.name for f in OPERATION_FIELDS[name]}, prefix)
        ops.append(PARSERS[name](item, prefix, limits))
    return ops


def _all_op_fields() -> list[Field]:
    return [field for group in OPERATION_FIELDS.values() for field in group]


def run(data: bytes, ops: Sequence[Operation], output: Output, limits: Settings) -> bytes:
    """Decode ``data``, apply ``ops`` in order, encode per ``output``."""
    first = ops[0] if ops else None
    thumbnail = first if isinstance(first, Thumbnail) else None
    draft = thumbnail.scaled_size if thumbnail is not None else None
    decoded = open_image(data, "image", limits, draft)
    if not output.format:
        output = replace(output, format=KEEP_FORMAT[decoded.format])
    if thumbnail is not None:
        target = thumbnail.scaled_size(decoded.upright_source_size)
        if max(target) <= limits.max_side and target[0] * target[1] <= limits.max_pixels:
            stored = (target[1], target[0]) if decoded.swaps_axes else target
            decoded.image = resize(decoded.image, stored)
    decoded.upright()
    image = decoded.image
    for op in ops:
        image = op.apply(image, limits)
    return encode(image, output, decoded)


class _Toolkit(Renderer):
    content_type = ""  # ``format`` chooses; without it, the source's format

    def content_type_for(self, request: Mapping[str, Any]) -> str:
        """The reply's type when ``format`` names it; "" (sniff the reply) otherwise."""
        fmt = request.get("format")
        fmt = fmt.strip().lower() if isinstance(fmt, str) else ""
        return CONTENT_TYPES.get("jpeg" if fmt == "jpg" else fmt, "")

    def render_checked(self, request: Mapping[str, Any]) -> bytes:
        limits = settings.current()
        data = fields.blob(request, "image", "")
        assert data is not None  # required
        output = parse_output(request)
        return run(data, self.operations(request, limits), output, limits)

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        raise NotImplementedError


@register
class ThumbnailService(_Toolkit):
    """Shrink to fit inside a box, or to fill it with a crop at a gravity."""

    name = "thumbnail"
    fields = OUTPUT_FIELDS + THUMBNAIL_FIELDS
    example = {"image": EXAMPLE_IMAGE, "width": 64}

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        return [parse_thumbnail(request, "", limits)]


@register
class CropService(_Toolkit):
    """Cut a box, or a size at a gravity."""

    name = "crop"
    fields = OUTPUT_FIELDS + CROP_FIELDS
    example = {"image": EXAMPLE_IMAGE, "width": 32, "height": 32}

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        return [parse_crop(request, "", limits)]


@register
class WatermarkService(_Toolkit):
    """Lay text or an image over the picture."""

    name = "watermark"
    fields = OUTPUT_FIELDS + WATERMARK_FIELDS
    example = {"image": EXAMPLE_IMAGE, "text": "DIPS"}

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        return [parse_watermark(request, "", limits)]


@register
class ConvertService(_Toolkit):
    """Re-encode: change format or quality, strip metadata, apply EXIF orientation.

    ``format`` is optional, as for every toolkit service (and in imgproxy and thumbor):
    without it the source's format is kept, which still strips the metadata (GPS, camera),
    turns the image upright and applies ``quality``."""

    name = "convert"
    fields = OUTPUT_FIELDS
    example = {"image": EXAMPLE_IMAGE, "format": "webp"}

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        return []


@register
class ImageService(_Toolkit):
    """A chain of operations in one round trip, then the output options."""

    name = "image"
    fields = OUTPUT_FIELDS + (
        Field(
            "ops",
            "list of maps {op: thumbnail|crop|watermark, ...that op's fields}",
            required=True,
            doc="applied in order; at most 16",
        ),
    )
    example = {"image": EXAMPLE_IMAGE, "ops": [{"op": "thumbnail", "width": 64}]}

    def operations(self, request: Mapping[str, Any], limits: Settings) -> list[Operation]:
        return parse_ops(request["ops"], limits)
